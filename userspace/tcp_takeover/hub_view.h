// The hub view: every TCP connection to one service (the stream IP's RTSP port), as the stream
// LAN's hub showed it to this server. A standby server sees both directions there, the client's
// segments and the active server's, so it knows each connection to the byte: the handshake's
// options, where each side's sequence numbers are, the client's window, the active server's
// TCP timestamp clock, the client's requests not answered yet and the server's bytes not yet
// acknowledged. That is what it takes to revive the connection here (repair.h) the moment the
// active server fails, without the client noticing (docs/tcp-takeover.md).
//
// The byte streams are split into messages by Framers (for RTSP: the server's own request parser
// and a response framer), so that the view knows which requests were answered on the wire. The
// active server also sends each answer to its partner before writing it (a Reply): a request it
// executed but did not answer on the wire is answered from that copy, never executed twice.
//
// Everything here comes from the network and is bounded: connections, bytes held per connection,
// out-of-order pieces, replies. Single-threaded: one owner feeds it and asks for the plan.
#pragma once

#include <netinet/in.h>

#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.h"
#include "tcp_takeover/segment.h"

namespace of::tcp_takeover {

// One direction of a connection's byte stream, split into messages.
class Framer {
public:
    virtual ~Framer() = default;
    // The next bytes of the stream, in order, in any split. Returns the stream offsets (counted
    // from the framer's first byte) just after each message these bytes completed. An error means
    // framing is lost for good (the server closes such a connection; it cannot be revived).
    virtual Result<std::vector<uint64_t>> feed(std::string_view bytes) = 0;
    // Bytes of a message begun but not complete.
    virtual size_t partial() const = 0;
};
using FramerFactory = std::function<std::unique_ptr<Framer>()>;

// A client's end of a connection (the server's end is the view's address and port).
struct ConnKey {
    in_addr client{};
    uint16_t port = 0;  // host order
    bool operator<(const ConnKey& o) const {
        return client.s_addr != o.client.s_addr ? client.s_addr < o.client.s_addr : port < o.port;
    }
    bool operator==(const ConnKey& o) const { return client.s_addr == o.client.s_addr && port == o.port; }
};
std::string to_string(const ConnKey& k);  // "10.77.0.101:40312"

// The active server's answer to one request, sent to its partner before it was written.
// Offsets count the bytes of each direction's stream from its first data byte.
struct Reply {
    ConnKey key;
    uint64_t request_end = 0;     // client-stream offset just after the request
    uint64_t response_start = 0;  // server-stream offset of the answer's first byte
    std::string response;
};

// Everything needed to revive one connection on this host and to go on serving it.
struct Revival {
    ConnKey key;
    in_addr server{};
    uint16_t server_port = 0;
    // TCP state (sequence numbers as on the wire)
    uint32_t snd_una = 0;   // first server byte the client has not acknowledged
    uint32_t rcv_nxt = 0;   // next client byte expected
    std::string unacked;    // server bytes from snd_una that reached the wire: restored as sent
    std::string unsent;     // answers the old server executed but did not put on the wire
    uint16_t mss = 536;     // the client's MSS option
    bool wscale_ok = false, sack_ok = false, timestamps = false;
    uint8_t snd_wscale = 0, rcv_wscale = 0;  // the client's shift, ours
    uint32_t ts_val = 0;    // the next TSval to send: continues the old server's clock
    uint32_t snd_wnd = 0;   // the client's window, bytes
    uint32_t snd_wl1 = 0;   // client seq of the segment that carried it
    uint32_t rcv_wnd = 0;   // the window the old server advertised, bytes
    // Application state
    std::string pending;       // client bytes of requests not answered yet: for our parser
    uint64_t in_offset = 0;    // client-stream offset of pending[0]
    uint64_t out_offset = 0;   // server-stream offset just after `unsent`
    size_t replayed = 0;       // requests answered from the old server's replies
};

struct HubViewOptions {
    in_addr server{};
    uint16_t server_port = 554;
    size_t max_connections = 4096;      // beyond: the least recently active connection is dropped
    size_t max_bytes = 64 * 1024;       // per connection and direction: unanswered or unacked
    size_t max_ooo_pieces = 16;         // out-of-order pieces held per direction
    size_t max_replies = 16;            // per connection
    int64_t idle_ns = 600'000'000'000;  // a connection silent this long is forgotten
    FramerFactory request_framer, response_framer;
};

struct HubViewCounters {
    uint64_t segments = 0;       // segments of the service seen
    uint64_t ignored = 0;        // of no known connection (opened before we watched), or stale
    uint64_t connections = 0;    // handshakes seen
    uint64_t closed = 0;         // FIN or RST seen
    uint64_t evicted = 0;        // dropped over max_connections, or idle
    uint64_t broken = 0;         // became impossible to revive (see Plan::lost)
    uint64_t replies = 0;           // accepted
    uint64_t replies_answered = 0;  // not needed: the answer was on the wire already (the usual case)
    uint64_t replies_unknown = 0;   // for no connection the view knows
};

class HubView {
public:
    explicit HubView(HubViewOptions options);
    HubView(HubView&&) noexcept;
    HubView& operator=(HubView&&) noexcept;
    ~HubView();

    // One segment seen on the hub at now_ns (CLOCK_MONOTONIC). Segments of other addresses or
    // ports are ignored.
    void add(const Segment& s, int64_t now_ns);
    void add_reply(Reply reply);

    struct Plan {
        std::vector<Revival> revive;
        std::vector<std::pair<ConnKey, std::string>> lost;  // and why each cannot be revived
    };
    // What a takeover at now_ns can revive. Closed connections are in neither list.
    Plan plan(int64_t now_ns) const;
    // Stops tracking a connection (revived here: its new owner keeps its own state).
    void forget(const ConnKey& k);
    void clear();

    size_t size() const;
    const HubViewCounters& counters() const;

private:
    struct Conn;
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

}  // namespace of::tcp_takeover
