// A Report as text for people and as JSON for scripts (one object; field names are the contract,
// documented in docs/fo-verify.md).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "verify/analyzer.h"

namespace of::verify {

// Facts about the run that the analysis cannot know (what was asked, how receiving went).
struct RunInfo {
    std::string url;                 // empty in --listen mode
    std::string transport;           // "rtp" or "raw" as set up, or "listen"
    uint16_t port = 0;               // local UDP port
    std::string end_reason;          // "duration", "packets", "idle", "rtcp-bye", "signal"
    uint64_t socket_drops = 0;       // datagrams the kernel dropped on our socket (SO_RXQ_OVFL)
    uint64_t truncated = 0;          // datagrams longer than the receive buffer
    uint64_t foreign = 0;            // datagrams from an address other than the server's, ignored
    uint64_t keepalives = 0, keepalive_failures = 0;
    uint64_t keepalives_answered = 0;  // 2xx on the control connection
    bool teardown_ok = false;
    // How the RTSP control connection ended: "teardown" (TEARDOWN answered 2xx on it), "fin" (the
    // server closed it), "rst" (reset), "timeout" (a request went unanswered), "reconnected" (it
    // was lost and opened again: --reconnect), or the error.
    std::string control_end;
    uint64_t control_reconnects = 0;
    bool rtsp = false;
};

// The control connection carried the session to the end (or there was none: --listen).
inline bool control_ok(const RunInfo& info) { return !info.rtsp || info.control_end == "teardown"; }

std::string to_json(const Report& r, const RunInfo& info);
std::string to_text(const Report& r, const RunInfo& info);

// JSON string literal with quotes, escaping what RFC 8259 requires.
std::string json_quote(std::string_view s);

}  // namespace of::verify
