#include "rtsp/sdp.h"

#include "rtsp/headers.h"
#include "rtsp/text.h"

namespace of::rtsp {

using detail::cat;

std::string build_sdp(const SdpParams& p) {
    const char* family = p.origin_ipv6 ? "IP6" : "IP4";
    std::string id = std::to_string(p.session_id);
    std::string s;
    s.reserve(512);
    s += "v=0\r\n";
    s += cat("o=- ", id, " ", id, " IN ", family, " ", p.origin_address, "\r\n");
    s += cat("s=", p.asset, "\r\n");
    // The stream goes to the address the client gave in SETUP, so the connection address is
    // the unspecified one, as RFC 2326 appendix C.1.7 suggests for unicast on demand.
    s += cat("c=IN ", family, p.origin_ipv6 ? " ::" : " 0.0.0.0", "\r\n");
    s += "t=0 0\r\n";
    s += "a=tool:oneframe\r\n";
    s += "a=control:*\r\n";
    if (p.duration_ns > 0)
        s += cat("a=range:npt=0-", format_npt_seconds(p.duration_ns), "\r\n");
    else
        s += "a=range:npt=0-\r\n";
    s += p.raw_udp ? "m=video 0 udp 33\r\n" : "m=video 0 RTP/AVP 33\r\n";
    if (p.bitrate_bps) s += cat("b=AS:", std::to_string((p.bitrate_bps + 999) / 1000), "\r\n");
    // live555 needs the MP2T name to put its transport-stream framer on a raw UDP source too.
    s += "a=rtpmap:33 MP2T/90000\r\n";
    s += cat("a=control:", kTrackControl, "\r\n");
    return s;
}

}  // namespace of::rtsp
