// One verification run: an RTSP session (OPTIONS, DESCRIBE, SETUP, PLAY, GET_PARAMETER keepalives,
// TEARDOWN) or a bare UDP port, received until a limit, every datagram fed to an Analyzer.
// Library code: it reports through the returned RunInfo and the optional event callback, never
// prints.
#pragma once

#include <csignal>
#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <string_view>

#include "common/result.h"
#include "verify/analyzer.h"
#include "verify/report.h"
#include "verify/rtsp_client.h"

namespace of::verify {

enum class Transport { Rtp, Raw };

struct RunOptions {
    std::optional<Url> url;                 // RTSP mode
    std::optional<uint16_t> listen_port;    // listen mode (no RTSP)
    Transport transport = Transport::Rtp;
    std::optional<double> start_npt;        // PLAY Range: npt=S-
    double duration_s = 0;                  // stop after this long (0: no limit)
    uint64_t max_datagrams = 0;             // stop after this many datagrams (0: no limit)
    double idle_timeout_s = 3;              // stop when nothing arrived for this long
    double first_timeout_s = 10;            // ... or before the first datagram, this long
    uint16_t client_port = 0;               // RTSP: even local port (0: any free pair)
    double keepalive_s = 0;                 // RTSP keepalive period (0: half the Session timeout)
    bool reconnect = false;                 // RTSP: open the control connection again if it is lost
    int rcvbuf = 8 << 20;
    ClientOptions rtsp;
    std::function<void(std::span<const uint8_t>)> on_payload;  // TS bytes of each analysed datagram
    std::function<void(std::string_view)> on_event;            // progress, one line each
    const volatile std::sig_atomic_t* stop = nullptr;          // set by a signal handler: end now
};

// Runs to the end and fills `analyzer`. Errors (setup failed, server refused): the code is an errno
// value, the message says which step and what the server answered.
Result<RunInfo> run(const RunOptions& opt, Analyzer& analyzer);

}  // namespace of::verify
