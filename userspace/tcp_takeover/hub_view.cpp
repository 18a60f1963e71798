#include "tcp_takeover/hub_view.h"

#include <arpa/inet.h>

#include <algorithm>

namespace of::tcp_takeover {

std::string to_string(const ConnKey& k) {
    char b[INET_ADDRSTRLEN];
    inet_ntop(AF_INET, &k.client, b, sizeof b);
    return std::string(b) + ":" + std::to_string(k.port);
}

// One direction of a connection: what its sender put on the wire.
struct Side {
    bool started = false;  // its SYN was seen: nxt and nxt_off are valid
    uint32_t nxt = 0;      // sequence number just after the contiguous bytes seen
    uint64_t nxt_off = 0;  // stream offset of nxt (data bytes only)
    std::string buf;       // the bytes [buf_off, nxt_off) still needed
    uint64_t buf_off = 0;
    std::map<uint32_t, std::string> ooo;  // pieces beyond a hole, by sequence number
    bool ack_valid = false;
    uint32_t ack = 0;         // its latest acknowledgement of the other side's bytes
    bool win_valid = false;
    uint32_t win_bytes = 0;   // its latest window, scaled
    uint32_t win_seq = 0;     // sequence number of the segment that carried it
    std::optional<uint32_t> tsval;
    int64_t tsval_ns = 0;
    std::unique_ptr<Framer> framer;

    uint64_t offset_of(uint32_t seq) const { return nxt_off + int64_t(int32_t(seq - nxt)); }
};

struct HubView::Conn {
    ConnKey key;
    int64_t last_ns = 0;
    uint32_t isn_c = 0, isn_s = 0;
    uint16_t mss_c = 536;
    std::optional<uint8_t> ws_c, ws_s;
    bool sack_c = false, sack_s = false, ts_c = false, ts_s = false;
    Side cl, sv;  // from the client, from the server
    std::deque<uint64_t> unanswered;  // client offsets just after each request not answered yet
    uint64_t answered_end = 0;        // client offset just after the last request answered
    std::deque<Reply> replies;
    std::string broken;               // why it cannot be revived; empty if it can

    bool wscale_ok() const { return ws_c && ws_s; }
};

struct HubView::Impl {
    HubViewOptions opt;
    std::map<ConnKey, std::unique_ptr<Conn>> conns;
    HubViewCounters counters;
    uint64_t since_sweep = 0;

    void set_broken(Conn& c, std::string why) {
        if (!c.broken.empty()) return;
        c.broken = std::move(why);
        ++counters.broken;
        // Nothing more is needed of it but its existence (the plan reports it lost).
        c.cl.buf.clear();
        c.sv.buf.clear();
        c.cl.ooo.clear();
        c.sv.ooo.clear();
        c.cl.framer.reset();
        c.sv.framer.reset();
        c.replies.clear();
    }

    void sweep(int64_t now) {
        for (auto it = conns.begin(); it != conns.end();) {
            if (now - it->second->last_ns > opt.idle_ns) {
                it = conns.erase(it);
                ++counters.evicted;
            } else {
                ++it;
            }
        }
    }

    Conn& open(const ConnKey& k, int64_t now) {
        if (conns.size() >= opt.max_connections) {
            auto oldest = std::min_element(conns.begin(), conns.end(),
                                           [](auto& a, auto& b) { return a.second->last_ns < b.second->last_ns; });
            conns.erase(oldest);
            ++counters.evicted;
        }
        auto c = std::make_unique<Conn>();
        c->key = k;
        c->last_ns = now;
        if (opt.request_framer) c->cl.framer = opt.request_framer();
        if (opt.response_framer) c->sv.framer = opt.response_framer();
        ++counters.connections;
        Conn& ref = *c;
        conns[k] = std::move(c);
        return ref;
    }

    // Client bytes became contiguous: frame them into requests.
    void on_client_bytes(Conn& c, std::string_view bytes) {
        if (!c.cl.framer) return;
        auto ends = c.cl.framer->feed(bytes);
        if (!ends) return set_broken(c, "requests cannot be framed: " + ends.error().message);
        for (uint64_t e : *ends) c.unanswered.push_back(e);
    }

    // Server bytes became contiguous: each answer completed answers the oldest request.
    void on_server_bytes(Conn& c, std::string_view bytes) {
        if (!c.sv.framer) return;
        auto ends = c.sv.framer->feed(bytes);
        if (!ends) return set_broken(c, "answers cannot be framed: " + ends.error().message);
        for (size_t i = 0; i < ends->size(); ++i) {
            if (c.unanswered.empty()) return set_broken(c, "an answer to a request the hub view did not see");
            c.answered_end = c.unanswered.front();
            c.unanswered.pop_front();
        }
        // Answered requests are not needed any more, nor their replies.
        if (c.answered_end > c.cl.buf_off) {
            size_t n = size_t(std::min<uint64_t>(c.answered_end - c.cl.buf_off, c.cl.buf.size()));
            c.cl.buf.erase(0, n);
            c.cl.buf_off += n;
        }
        while (!c.replies.empty() && c.replies.front().request_end <= c.answered_end) c.replies.pop_front();
    }

    void append(Conn& c, Side& d, bool from_client, std::string_view bytes) {
        d.buf.append(bytes);
        d.nxt += uint32_t(bytes.size());
        d.nxt_off += bytes.size();
        if (d.buf.size() > opt.max_bytes)
            return set_broken(c, std::string(from_client ? "client" : "server") + " holds more than " +
                                     std::to_string(opt.max_bytes) + " bytes unanswered or unacknowledged");
        if (from_client) on_client_bytes(c, bytes);
        else on_server_bytes(c, bytes);
    }

    // Payload at seq: the new part is appended, a piece beyond a hole waits for it.
    void accept_data(Conn& c, Side& d, bool from_client, uint32_t seq, std::span<const uint8_t> p) {
        if (p.empty() || !c.broken.empty()) return;
        uint32_t end = seq + uint32_t(p.size());
        if (!seq_after(end, d.nxt)) return;  // seen already
        std::string_view bytes(reinterpret_cast<const char*>(p.data()), p.size());
        if (seq_after(seq, d.nxt)) {
            auto& piece = d.ooo[seq];
            if (bytes.size() > piece.size()) piece.assign(bytes);
            if (d.ooo.size() > opt.max_ooo_pieces)
                set_broken(c, std::string(from_client ? "client" : "server") + " segments missing from the hub view");
            return;
        }
        append(c, d, from_client, bytes.substr(d.nxt - seq));
        // Pieces that the new bytes reach.
        for (bool progress = true; progress && c.broken.empty();) {
            progress = false;
            for (auto it = d.ooo.begin(); it != d.ooo.end();) {
                uint32_t s = it->first, e = s + uint32_t(it->second.size());
                if (!seq_after(e, d.nxt)) {
                    it = d.ooo.erase(it);
                } else if (!seq_after(s, d.nxt)) {
                    std::string piece = std::move(it->second);
                    d.ooo.erase(it);
                    append(c, d, from_client, std::string_view(piece).substr(d.nxt - s));
                    progress = true;
                    break;
                } else {
                    ++it;
                }
            }
        }
    }

    void note_fields(Conn& c, Side& d, const Segment& s, bool from_client, int64_t now) {
        if (s.flags & kAck) {
            if (!d.ack_valid || seq_after(s.ack, d.ack)) d.ack = s.ack;
            d.ack_valid = true;
        }
        if (!d.win_valid || !seq_before(s.seq, d.win_seq)) {
            // Windows in SYN segments are never scaled (RFC 7323 2.2).
            std::optional<uint8_t> ws = from_client ? c.ws_c : c.ws_s;
            uint32_t shift = (!(s.flags & kSyn) && c.wscale_ok()) ? std::min<uint8_t>(*ws, 14) : 0;
            d.win_bytes = uint32_t(s.window) << shift;
            d.win_seq = s.seq;
            d.win_valid = true;
        }
        if (s.ts_val && (!d.tsval || !seq_before(*s.ts_val, *d.tsval))) {
            d.tsval = s.ts_val;
            d.tsval_ns = now;
        }
    }

    void from_client(const Segment& s, int64_t now) {
        ConnKey k{s.saddr, s.sport};
        auto it = conns.find(k);
        if ((s.flags & kSyn) && !(s.flags & kAck)) {
            if (it != conns.end() && it->second->isn_c == s.seq) {  // a retransmitted SYN
                it->second->last_ns = now;
                return;
            }
            if (it != conns.end()) conns.erase(it);  // the port is reused
            Conn& c = open(k, now);
            c.isn_c = s.seq;
            c.mss_c = s.mss.value_or(536);
            c.ws_c = s.wscale;
            c.sack_c = s.sack_permitted;
            c.ts_c = s.ts_val.has_value();
            c.cl.started = true;
            c.cl.nxt = s.seq + 1;
            note_fields(c, c.cl, s, true, now);
            return;
        }
        if (it == conns.end() || !it->second->sv.started) {
            ++counters.ignored;
            return;
        }
        Conn& c = *it->second;
        c.last_ns = now;
        if (s.flags & kRst) return close(it);
        accept_data(c, c.cl, true, s.seq, s.payload);
        note_fields(c, c.cl, s, true, now);
        // The client's acknowledgement frees the server bytes it covers.
        uint64_t acked = c.sv.offset_of(c.cl.ack);
        if (c.cl.ack_valid && acked > c.sv.buf_off && acked <= c.sv.nxt_off) {
            size_t n = size_t(std::min<uint64_t>(acked - c.sv.buf_off, c.sv.buf.size()));
            c.sv.buf.erase(0, n);
            c.sv.buf_off += n;
        }
        if (s.flags & kFin) return close(it);
    }

    void from_server(const Segment& s, int64_t now) {
        auto it = conns.find(ConnKey{s.daddr, s.dport});
        if (it == conns.end()) {
            ++counters.ignored;
            return;
        }
        Conn& c = *it->second;
        if ((s.flags & kSyn) && (s.flags & kAck)) {
            if (s.ack != c.isn_c + 1) {
                ++counters.ignored;
                return;
            }
            c.last_ns = now;
            if (c.sv.started) return;  // a retransmitted SYN-ACK
            c.isn_s = s.seq;
            c.ws_s = s.wscale;
            c.sack_s = s.sack_permitted;
            c.ts_s = s.ts_val.has_value();
            c.sv.started = true;
            c.sv.nxt = s.seq + 1;
            note_fields(c, c.sv, s, false, now);
            return;
        }
        if (!c.sv.started) {
            ++counters.ignored;
            return;
        }
        c.last_ns = now;
        if (s.flags & kRst) return close(it);
        accept_data(c, c.sv, false, s.seq, s.payload);
        note_fields(c, c.sv, s, false, now);
        if (s.flags & kFin) return close(it);
    }

    void close(std::map<ConnKey, std::unique_ptr<Conn>>::iterator it) {
        conns.erase(it);
        ++counters.closed;
    }

    // The revival of one connection, or why there is none.
    Result<Revival> revival(const Conn& c, int64_t now) const {
        if (!c.sv.started) return make_error(ENOENT, "handshake not seen (opened before this server watched the hub)");
        if (!c.broken.empty()) return make_error(EPROTO, c.broken);
        if (!c.cl.ack_valid) return make_error(EPROTO, "handshake not complete");
        if (c.sv.ack_valid && seq_after(c.sv.ack, c.cl.nxt))
            return make_error(EPROTO, "the server acknowledged client bytes the hub view lacks");
        if (!c.sv.ooo.empty()) return make_error(EPROTO, "server bytes missing from the hub view");
        if (seq_after(c.cl.ack, c.sv.nxt) || seq_before(c.cl.ack, c.isn_s + 1))
            return make_error(EPROTO, "the client acknowledged bytes the hub view did not see");

        Revival r;
        r.key = c.key;
        r.server = opt.server;
        r.server_port = opt.server_port;
        r.snd_una = c.cl.ack;
        r.rcv_nxt = c.cl.nxt;
        uint64_t una_off = c.sv.offset_of(c.cl.ack);
        if (una_off < c.sv.buf_off || una_off > c.sv.nxt_off)
            return make_error(EPROTO, "unacknowledged server bytes not held");
        r.unacked = c.sv.buf.substr(size_t(una_off - c.sv.buf_off));

        // Requests the old server executed but did not answer on the wire: their answers come
        // from its replies, in order, from where the wire stops.
        size_t partial = c.sv.framer ? c.sv.framer->partial() : 0;
        uint64_t next_start = c.sv.nxt_off - partial;
        r.in_offset = c.answered_end;
        for (uint64_t end : c.unanswered) {
            auto rep = std::find_if(c.replies.begin(), c.replies.end(),
                                    [&](const Reply& x) { return x.request_end == end; });
            if (rep == c.replies.end()) break;
            if (rep->response_start != next_start)
                return make_error(EPROTO, "a reply does not line up with the answers on the wire");
            uint64_t skip = c.sv.nxt_off > rep->response_start ? c.sv.nxt_off - rep->response_start : 0;
            if (skip > rep->response.size()) return make_error(EPROTO, "an answer on the wire is longer than its reply");
            r.unsent += rep->response.substr(size_t(skip));
            next_start = rep->response_start + rep->response.size();
            r.in_offset = end;
            ++r.replayed;
        }
        if (partial && !r.replayed) return make_error(EPROTO, "an answer was cut short on the wire and its bytes are unknown");
        r.out_offset = r.replayed ? next_start : c.sv.nxt_off;
        if (r.in_offset < c.cl.buf_off || r.in_offset > c.cl.nxt_off)
            return make_error(EPROTO, "unanswered client bytes not held");
        r.pending = c.cl.buf.substr(size_t(r.in_offset - c.cl.buf_off));

        r.mss = c.mss_c;
        r.wscale_ok = c.wscale_ok();
        if (r.wscale_ok) {
            r.snd_wscale = std::min<uint8_t>(*c.ws_c, 14);
            r.rcv_wscale = std::min<uint8_t>(*c.ws_s, 14);
        }
        r.sack_ok = c.sack_c && c.sack_s;
        r.timestamps = c.ts_c && c.ts_s;
        if (r.timestamps && c.sv.tsval) {
            // Linux counts TCP timestamps in milliseconds: go on from the old server's last
            // value, one tick later than the time since, so the client's PAWS check passes.
            int64_t elapsed_ms = std::max<int64_t>(0, now - c.sv.tsval_ns) / 1'000'000;
            r.ts_val = *c.sv.tsval + uint32_t(elapsed_ms) + 1;
        }
        r.snd_wnd = c.cl.win_bytes;
        r.snd_wl1 = c.cl.win_seq;
        r.rcv_wnd = std::max<uint32_t>(c.sv.win_bytes, 1);
        return r;
    }
};

HubView::HubView(HubViewOptions options) : impl_(std::make_unique<Impl>()) { impl_->opt = std::move(options); }
HubView::HubView(HubView&&) noexcept = default;
HubView& HubView::operator=(HubView&&) noexcept = default;
HubView::~HubView() = default;

void HubView::add(const Segment& s, int64_t now_ns) {
    const auto& o = impl_->opt;
    bool to_server = s.daddr.s_addr == o.server.s_addr && s.dport == o.server_port;
    bool from_server = s.saddr.s_addr == o.server.s_addr && s.sport == o.server_port;
    if (to_server == from_server) return;  // not the service (or a packet to itself)
    ++impl_->counters.segments;
    if (++impl_->since_sweep >= 4096) {
        impl_->since_sweep = 0;
        impl_->sweep(now_ns);
    }
    if (to_server) impl_->from_client(s, now_ns);
    else impl_->from_server(s, now_ns);
}

void HubView::add_reply(Reply reply) {
    auto it = impl_->conns.find(reply.key);
    if (it == impl_->conns.end() || !it->second->broken.empty()) {
        ++impl_->counters.replies_unknown;
        return;
    }
    if (reply.request_end <= it->second->answered_end) {
        ++impl_->counters.replies_answered;
        return;
    }
    auto& reps = it->second->replies;
    for (const Reply& r : reps)
        if (r.request_end == reply.request_end) return;  // the copy from the other path
    reps.push_back(std::move(reply));
    std::sort(reps.begin(), reps.end(), [](const Reply& a, const Reply& b) { return a.request_end < b.request_end; });
    if (reps.size() > impl_->opt.max_replies) reps.pop_front();
    ++impl_->counters.replies;
}

HubView::Plan HubView::plan(int64_t now_ns) const {
    Plan p;
    for (auto& [k, c] : impl_->conns) {
        if (now_ns - c->last_ns > impl_->opt.idle_ns) continue;
        auto r = impl_->revival(*c, now_ns);
        if (r) p.revive.push_back(std::move(*r));
        else p.lost.emplace_back(k, r.error().message);
    }
    return p;
}

void HubView::forget(const ConnKey& k) { impl_->conns.erase(k); }
void HubView::clear() { impl_->conns.clear(); }
size_t HubView::size() const { return impl_->conns.size(); }
const HubViewCounters& HubView::counters() const { return impl_->counters; }

}  // namespace of::tcp_takeover
