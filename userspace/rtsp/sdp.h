// The SDP of a DESCRIBE answer: one MPEG-TS program as one media section, payload type 33.
#pragma once

#include <cstdint>
#include <string>

namespace of::rtsp {

// The media-level control attribute; SETUP comes back on BASE/trackID=1 (VLC, live555) or on
// the aggregate BASE itself (ffmpeg ignores media-level control for MP2T).
inline constexpr const char* kTrackControl = "trackID=1";
inline constexpr uint32_t kTrackId = 1;

struct SdpParams {
    std::string asset;            // session name (s=)
    std::string origin_address;   // the server's address on this connection (o=)
    bool origin_ipv6 = false;
    uint64_t session_id = 0;      // o= sess-id and sess-version, e.g. the asset's ingest time
    int64_t duration_ns = 0;      // a=range:npt=0-DURATION; 0 or less: unknown ("npt=0-")
    uint64_t bitrate_bps = 0;     // b=AS in kb/s, omitted when 0
    // Raw MP2T over UDP: "m=video 0 udp 33". ffmpeg's RTSP client then sends
    // "RAW/RAW/UDP;unicast;client_port=N" and live555 (VLC) sends RAW/RAW/UDP too.
    // Otherwise "m=video 0 RTP/AVP 33" and clients ask for RTP/AVP.
    bool raw_udp = false;
};

std::string build_sdp(const SdpParams& p);

}  // namespace of::rtsp
