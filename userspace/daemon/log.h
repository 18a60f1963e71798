// Daemon logging: to the journal with structured fields when systemd connected stderr to it
// (JOURNAL_STREAM), else one line on stderr. Only the daemon logs; libraries return errors.
#pragma once

#include <string>
#include <utility>
#include <vector>

namespace of::daemon {

enum class Level { kErr = 3, kWarning = 4, kNotice = 5, kInfo = 6, kDebug = 7 };
using Fields = std::vector<std::pair<std::string, std::string>>;  // e.g. {"SESSION", "0123..."}

void log(Level level, const std::string& message, const Fields& fields = {});

}  // namespace of::daemon
