// Reviving a TCP connection on this host from what the hub showed (hub_view.h), with the kernel's
// TCP_REPAIR (the mechanism CRIU uses to move live connections): the socket is created straight
// into ESTABLISHED with the old server's sequence numbers, options, window and timestamp clock,
// without sending a SYN, so the client sees one connection go on. Needs CAP_NET_ADMIN.
#pragma once

#include "common/result.h"
#include "tcp_takeover/hub_view.h"

namespace of::tcp_takeover {

// A connected, non-blocking, close-on-exec socket carrying on `r`: r.unacked sits in its send
// queue as already sent (retransmitted if the client did not get it). r.unsent and r.pending are
// the caller's to send and to parse. It sends one window probe, which makes the client
// acknowledge at once.
// EADDRNOTAVAIL if this host still has a socket on the same four addresses.
Result<int> revive(const Revival& r);

// Closes a TCP socket without a FIN or an RST on the wire: the connection lives on elsewhere (the
// partner revived it, or is about to). Falls back to a plain close() if repair mode is refused.
void close_silently(int fd);

}  // namespace of::tcp_takeover
