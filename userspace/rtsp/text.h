// String building for the RTSP library. Appending instead of `"literal" + std::string(...)`
// sidesteps GCC 12's false -Wrestrict on that operator at -O2 (GCC bug 105329), which -Werror
// turns into a failed release build.
#pragma once

#include <string>
#include <string_view>

namespace of::rtsp::detail {

template <class... Parts>
std::string cat(const Parts&... parts) {
    std::string s;
    (s.append(std::string_view(parts)), ...);
    return s;
}

}  // namespace of::rtsp::detail
