// Parsers for the RTSP header values and request URIs a client controls: Transport, Range,
// Session, and rtsp:// URIs naming an asset. Each returns of::Error with an errno code that the
// server turns into a status (see status.h): EINVAL malformed (400), ENOTSUP not offered here
// (461 for Transport, 501 for Range units), ERANGE an impossible range (457), ENOENT a URI that
// names nothing this server can have (404).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "common/result.h"

namespace of::rtsp {

// ---- Transport ----

enum class TransportKind : uint8_t {
    RtpAvp,   // RTP/AVP or RTP/AVP/UDP: RTP (payload type 33, MP2T) over UDP
    RawUdp,   // RAW/RAW/UDP: bare MPEG-TS datagrams over UDP (ffmpeg, live555/VLC)
    Mp2tUdp,  // MP2T/H2221/UDP: bare MPEG-TS datagrams over UDP (cable VOD set-top boxes)
};

struct Transport {
    TransportKind kind = TransportKind::RtpAvp;
    bool lower_explicit = false;  // the client wrote "RTP/AVP/UDP" rather than "RTP/AVP"
    uint16_t client_port_lo = 0;  // where the stream goes (RTP, or the raw datagrams)
    uint16_t client_port_hi = 0;  // RTCP port for RTP when the client gave a pair, else == lo
    std::string destination;      // the client's destination= parameter, empty if absent
};

// Chooses the first transport specification in the client's list that this server can serve:
// unicast UDP in one of the three kinds above with a client_port. TCP (interleaved), multicast
// and record mode are refused. EINVAL if the header is malformed, ENOTSUP (461) if no
// specification is acceptable.
Result<Transport> negotiate_transport(std::string_view header_value);

struct TransportReply {
    uint16_t server_port_lo = 0;  // 0: omitted
    uint16_t server_port_hi = 0;
    std::optional<uint32_t> ssrc;  // RTP only
};

// The Transport header value of a SETUP answer, e.g.
// "RTP/AVP;unicast;client_port=5000-5001;server_port=6970-6971;ssrc=1A2B3C4D".
std::string format_transport(const Transport& t, const TransportReply& reply);
std::string_view transport_name(TransportKind kind);

// ---- Range ----

// A normal-play-time range in nanoseconds. An absent start means "from the current position"
// (npt=now- or npt=-E); an absent end means "to the end of the asset".
struct Range {
    std::optional<int64_t> start_ns;
    std::optional<int64_t> end_ns;
};

// Parses `npt=S-`, `npt=S-E`, `npt=-E`, `npt=now-` with S and E in seconds (`12`, `12.345`) or
// hh:mm:ss[.frac]; at most 9 fraction digits and less than 10^9 seconds. EINVAL malformed,
// ENOTSUP other units (smpte=, clock=) or a time= parameter, ERANGE start after end.
Result<Range> parse_range(std::string_view header_value);

// "npt=1.500-10.000" (or "npt=1.500-" without an end).
std::string format_npt_range(int64_t start_ns, std::optional<int64_t> end_ns);
// Seconds with millisecond precision: "12.345".
std::string format_npt_seconds(int64_t ns);

// ---- Session ----

constexpr size_t kMaxSessionIdBytes = 64;

struct SessionHeader {
    std::string id;
    std::optional<uint32_t> timeout_s;
};

// RFC 2326 session-id: 1*(ALPHA / DIGIT / "$" / "-" / "_" / "." / "+"), here at most 64 bytes.
bool valid_session_id(std::string_view id);
// Parses "ID" or "ID;timeout=N". EINVAL if malformed.
Result<SessionHeader> parse_session(std::string_view header_value);
std::string format_session(std::string_view id, uint32_t timeout_s);

// ---- Request URI ----

constexpr size_t kMaxAssetNameBytes = 128;

struct RequestUri {
    bool star = false;           // "*" (OPTIONS only)
    std::string host;            // as written, IPv6 literals with their brackets; empty for "/path"
    std::optional<uint16_t> port;
    std::string asset;           // decoded and validated; empty for "rtsp://host/" and "*"
    std::optional<uint32_t> track;  // control suffix: "trackID=N", "streamid=N", "stream=N", "trackN"
    bool raw_udp = false;        // query "transport=raw": DESCRIBE answers an SDP for raw MP2T/UDP
};

// Asset names in URLs are one path segment of [A-Za-z0-9._~-], 1..128 bytes, not starting
// with '.', so that a name can never reach outside the asset store.
bool valid_asset_name(std::string_view name);

// Parses "*", "rtsp://host[:port]/ASSET[/CONTROL][?query]" or "/ASSET[/CONTROL][?query]".
// EINVAL for malformed syntax (bad percent-escape, bad port, fragment, bad host), ENOENT for a
// well-formed path that cannot name an asset (bad name, unknown control suffix, deeper paths).
Result<RequestUri> parse_request_uri(std::string_view uri);

// "rtsp://HOST[:PORT]/ASSET/": the Content-Base of a DESCRIBE answer, so that SETUP and PLAY
// come back on this asset whatever the client does with relative control URLs.
// `fallback_host` is used when the request URI had no host (it was an absolute path).
std::string content_base(const RequestUri& uri, std::string_view fallback_host);

}  // namespace of::rtsp
