// libFuzzer target: everything fo-verify parses from an RTSP server: responses (and requests a
// server may send), Transport and Session headers, the SDP control attribute, and URLs.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "verify/rtsp_client.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    using namespace of::verify;
    std::string_view in(reinterpret_cast<const char*>(data), size);
    // A response stream: parse message after message as the client does.
    std::string_view rest = in;
    Limits lim;
    lim.max_body = 4096;
    while (!rest.empty()) {
        size_t used = 0;
        auto m = parse_message(rest, used, lim);
        if (!m || !*m || used == 0) break;
        (void)(*m)->cseq();
        if (const std::string* s = (*m)->header("Session")) (void)parse_session(*s);
        if (const std::string* t = (*m)->header("Transport")) (void)parse_transport(*t);
        (void)setup_url("rtsp://h/a", (*m)->header("Content-Base"), (*m)->body);
        rest.remove_prefix(used);
    }
    // The same bytes as each header value and as a URL.
    (void)parse_transport(in);
    (void)parse_session(in);
    (void)parse_url(in);
    (void)setup_url("rtsp://h/a", nullptr, in);
    return 0;
}
