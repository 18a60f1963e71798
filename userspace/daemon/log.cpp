#include "daemon/log.h"

#include <sys/stat.h>
#include <sys/uio.h>
#include <systemd/sd-journal.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <mutex>

namespace of::daemon {
namespace {

bool stderr_is_journal() {
    static const bool yes = [] {
        const char* js = getenv("JOURNAL_STREAM");
        struct stat st{};
        if (!js || fstat(STDERR_FILENO, &st) != 0) return false;
        unsigned long dev = 0, ino = 0;
        return sscanf(js, "%lu:%lu", &dev, &ino) == 2 && dev == st.st_dev && ino == st.st_ino;
    }();
    return yes;
}

}  // namespace

void log(Level level, const std::string& message, const Fields& fields) {
    if (stderr_is_journal()) {
        std::vector<std::string> items = {"MESSAGE=" + message, "PRIORITY=" + std::to_string(int(level)),
                                          "SYSLOG_IDENTIFIER=oneframed"};
        for (auto& [k, v] : fields) items.push_back("ONEFRAME_" + k + "=" + v);
        std::vector<iovec> iov;
        for (auto& i : items) iov.push_back({i.data(), i.size()});
        sd_journal_sendv(iov.data(), int(iov.size()));
        return;
    }
    static std::mutex mu;
    std::lock_guard lk(mu);
    static const char* names[] = {"", "", "", "error", "warning", "notice", "info", "debug"};
    std::string line = std::string("oneframed: ") + names[int(level)] + ": " + message;
    for (auto& [k, v] : fields) line += " " + k + "=" + v;
    fprintf(stderr, "%s\n", line.c_str());
}

}  // namespace of::daemon
