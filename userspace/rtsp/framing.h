// RTSP message framing for the hub view (tcp_takeover/hub_view.h): where each request a client
// sent ends, as our server's parser splits them, and where each answer our server sent ends. A
// standby server frames both directions of a connection it watches, and so knows which requests
// were answered on the wire when it takes the connection over.
#pragma once

#include <memory>

#include "rtsp/message.h"
#include "tcp_takeover/hub_view.h"

namespace of::rtsp {

// Requests, split exactly as RtspServer splits them: the same RequestParser with the same limits.
// A request the parser refuses without losing the framing (a non-fatal error) is a message too:
// the server answers it. A fatal error is an error here.
std::unique_ptr<tcp_takeover::Framer> make_request_framer(const ParserLimits& limits);

// Answers as RtspServer writes them: a status line, headers, an empty line, and Content-Length
// bytes of body. Heads up to 16 KiB and bodies up to 64 KiB.
std::unique_ptr<tcp_takeover::Framer> make_response_framer();

}  // namespace of::rtsp
