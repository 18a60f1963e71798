#include "verify/session.h"

#include <arpa/inet.h>
#include <poll.h>
#include <sys/socket.h>

#include <algorithm>
#include <cmath>
#include <cstdio>

#include "common/clock.h"
#include "verify/receiver.h"

namespace of::verify {

namespace {

constexpr int64_t kMs = 1'000'000;
constexpr size_t kPerTurn = 4096;  // datagrams received between two looks at the clock

int64_t seconds_ns(double s) { return int64_t(std::llround(s * 1e9)); }

void event(const RunOptions& o, const std::string& s) {
    if (o.on_event) o.on_event(s);
}

bool ok2xx(const Message& m) { return m.status >= 200 && m.status < 300; }

// A URI taken from the server (Content-Base, a=control) goes into our request lines: no spaces or
// control characters, bounded.
bool usable_uri(const std::string& u) {
    if (u.empty() || u.size() > 2048) return false;
    for (unsigned char c : u)
        if (c <= 0x20 || c == 0x7f) return false;
    return true;
}

Error refused(const std::string& step, const Message& m) {
    int code = m.status == 404 ? ENOENT
             : m.status == 453 ? ENOSPC
             : m.status == 454 ? ESRCH
             : m.status == 461 ? ENOTSUP
             : m.status == 457 ? ERANGE
                               : ECONNREFUSED;
    return make_error(code, "RTSP " + step + " refused: " + status_text(m));
}

// An RTCP compound packet containing a BYE (PT 203), checked within the bytes received.
bool rtcp_bye(std::span<const uint8_t> d) {
    size_t off = 0;
    while (off + 4 <= d.size()) {
        if ((d[off] >> 6) != 2) return false;
        if (d[off + 1] == 203) return true;
        size_t len = (size_t(d[off + 2]) << 8 | d[off + 3]) * 4 + 4;
        off += len;
    }
    return false;
}

// The receive loop shared by both modes.
struct Loop {
    const RunOptions& opt;
    Analyzer& an;
    RunInfo& info;
    UdpReceiver& rtp;
    UdpReceiver* rtcp = nullptr;
    RtspClient* rtsp = nullptr;
    std::optional<in_addr_t> server_ip;
    int64_t keepalive_interval_ns = 30'000'000'000;
    std::string keepalive_url;
    bool use_options = false;  // the server refused GET_PARAMETER: keep alive with OPTIONS
    // The keepalive awaiting its answer (plain fields: gcc -O2 misjudges an optional here); the
    // session waits for it after the run, so one sent just before the stream ended still counts.
    bool pending = false;
    uint32_t pending_cseq = 0;

    // Waits (bounded) for the answer to a keepalive still pending when the run ended.
    void finish_keepalive(int timeout_ms) {
        if (!rtsp || !pending) return;
        pending = false;
        auto r = rtsp->wait(pending_cseq, timeout_ms);
        if (r && ok2xx(*r)) {
            ++info.keepalives_answered;
            return;
        }
        ++info.keepalive_failures;
        if (!r && r.error().code == ETIMEDOUT && info.control_end.empty()) info.control_end = "timeout";
        event(opt, "keepalive: " + (r ? status_text(*r) : r.error().message));
    }

    Status run() {
        const int64_t start = monotonic_ns();
        const int64_t end = opt.duration_s > 0 ? start + seconds_ns(opt.duration_s) : INT64_MAX;
        int64_t last_rx = 0;  // monotonic time of the last datagram, 0 before the first
        int64_t next_keepalive = start + keepalive_interval_ns;
        int64_t pending_deadline = 0;
        bool bye = false;

        auto sink = [&](std::span<const uint8_t> d, int64_t ts, const sockaddr_in& from) {
            if (server_ip && from.sin_addr.s_addr != *server_ip) {
                ++info.foreign;
                return;
            }
            an.add(d, ts);
            if (opt.on_payload) {
                auto p = an.last_ts_payload();
                if (!p.empty()) opt.on_payload(p);
            }
        };

        for (;;) {
            if (opt.stop && *opt.stop) {
                info.end_reason = "signal";
                break;
            }
            uint64_t got_before = an.datagrams();
            // Bounded per turn, so that a flood cannot starve the clock checks and keepalives.
            size_t room = kPerTurn;
            if (opt.max_datagrams) room = std::min<uint64_t>(room, opt.max_datagrams - got_before);
            auto n = rtp.receive(sink, room);
            if (!n) return n.error();
            int64_t now = monotonic_ns();
            if (an.datagrams() > got_before) last_rx = now;
            if (opt.max_datagrams && an.datagrams() >= opt.max_datagrams) {
                info.end_reason = "packets";
                break;
            }
            if (bye) {
                info.end_reason = "rtcp-bye";
                break;
            }
            if (now >= end) {
                info.end_reason = "duration";
                break;
            }
            int64_t idle_deadline = last_rx ? last_rx + seconds_ns(opt.idle_timeout_s)
                                            : start + seconds_ns(opt.first_timeout_s);
            if (now >= idle_deadline) {
                info.end_reason = last_rx ? "idle" : "nothing-received";
                break;
            }
            if (rtsp) {
                if (pending && now >= pending_deadline) {
                    ++info.keepalive_failures;
                    event(opt, "keepalive: no response within the timeout");
                    if (info.control_end.empty()) info.control_end = "timeout";
                    pending = false;
                }
                if (!pending && now >= next_keepalive) {
                    auto c = rtsp->send(use_options ? "OPTIONS" : "GET_PARAMETER", keepalive_url);
                    ++info.keepalives;
                    if (!c) {
                        ++info.keepalive_failures;
                        event(opt, "keepalive: " + c.error().message);
                    } else {
                        pending = true;
                        pending_cseq = *c;
                        pending_deadline = now + int64_t(opt.rtsp.response_timeout_ms) * kMs;
                    }
                    next_keepalive = now + keepalive_interval_ns;
                }
            }

            int64_t wake = std::min({end, idle_deadline, now + 250 * kMs});
            if (rtsp) wake = std::min(wake, pending ? pending_deadline : next_keepalive);
            pollfd fds[3];
            nfds_t nf = 0;
            fds[nf++] = {rtp.fd(), POLLIN, 0};
            int rtcp_i = -1, rtsp_i = -1;
            if (rtcp) { rtcp_i = int(nf); fds[nf++] = {rtcp->fd(), POLLIN, 0}; }
            if (rtsp && rtsp->connected()) { rtsp_i = int(nf); fds[nf++] = {rtsp->fd(), POLLIN, 0}; }
            int timeout = int(std::max<int64_t>(0, (wake - now + kMs - 1) / kMs));
            int rc = ::poll(fds, nf, timeout);
            if (rc < 0 && errno != EINTR) return errno_error("poll");
            if (rc <= 0) continue;
            if (rtcp_i >= 0 && (fds[rtcp_i].revents & POLLIN)) {
                auto r = rtcp->receive([&](std::span<const uint8_t> d, int64_t, const sockaddr_in& from) {
                    if (server_ip && from.sin_addr.s_addr != *server_ip) return;
                    if (rtcp_bye(d)) bye = true;
                });
                if (!r) return r.error();
            }
            if (rtsp_i >= 0 && (fds[rtsp_i].revents & (POLLIN | POLLHUP | POLLERR))) {
                auto msgs = rtsp->pump();
                if (!rtsp->connected() && info.control_end.empty()) {
                    // The server closed or reset our control connection: a player would stop here.
                    info.control_end = rtsp->closed_how().empty() ? "closed" : rtsp->closed_how();
                    event(opt, "RTSP control connection ended: " + info.control_end);
                }
                if (!msgs) {
                    // A garbled keepalive answer does not end the measurement.
                    event(opt, "RTSP connection: " + msgs.error().message);
                    ++info.keepalive_failures;
                    pending = false;
                    continue;
                }
                for (const Message& m : *msgs) {
                    auto c = m.cseq();
                    if (!pending || (c && *c != pending_cseq)) continue;  // no CSeq: in order
                    pending = false;
                    if (ok2xx(m)) {
                        ++info.keepalives_answered;
                        continue;
                    }
                    if (m.status == 454) {
                        ++info.keepalive_failures;
                        event(opt, "keepalive: server lost the session (" + status_text(m) + ")");
                    } else if (!use_options) {
                        use_options = true;  // e.g. 501/405: alive, but wants another method
                        event(opt, "keepalive: GET_PARAMETER answered " + status_text(m) + ", using OPTIONS");
                    }
                }
            }
        }
        // Drain what already arrived (up to the packet limit) so that a stop misses nothing queued.
        if (info.end_reason != "packets") {
            uint64_t have = an.datagrams();
            size_t room = opt.max_datagrams ? size_t(opt.max_datagrams - have) : SIZE_MAX;
            if (room > 0) {
                auto n = rtp.receive(sink, room);
                if (!n) return n.error();
            }
        }
        return {};
    }
};

}  // namespace

Result<RunInfo> run(const RunOptions& opt, Analyzer& an) {
    RunInfo info;
    if (opt.listen_port) {
        auto rx = UdpReceiver::open(*opt.listen_port, opt.rcvbuf);
        if (!rx) return rx.error();
        info.transport = "listen";
        info.port = rx->port();
        event(opt, "listening on UDP port " + std::to_string(rx->port()));
        Loop loop{opt, an, info, *rx};
        if (auto st = loop.run(); !st) return st.error();
        info.socket_drops = rx->drops();
        info.truncated = rx->truncated();
        return info;
    }
    if (!opt.url) return make_error(EINVAL, "neither an RTSP URL nor a listen port given");
    const Url& url = *opt.url;
    info.rtsp = true;
    info.url = url.text;
    info.transport = opt.transport == Transport::Rtp ? "rtp" : "raw";

    ClientOptions co = opt.rtsp;
    co.reconnect = opt.reconnect;
    auto client = RtspClient::connect(url, co);
    if (!client) return client.error();
    RtspClient& c = *client;

    auto opts = c.request("OPTIONS", url.text);
    if (!opts) return opts.error();
    event(opt, "OPTIONS: " + status_text(*opts));
    if (!ok2xx(*opts)) return refused("OPTIONS", *opts);

    auto desc = c.request("DESCRIBE", url.text, {{"Accept", "application/sdp"}});
    if (!desc) return desc.error();
    event(opt, "DESCRIBE: " + status_text(*desc));
    if (!ok2xx(*desc)) return refused("DESCRIBE", *desc);
    const std::string* base = desc->header("Content-Base");
    std::string setup_uri = setup_url(url.text, base, desc->body);
    std::string aggregate = base && !base->empty() ? *base : url.text;
    if (!usable_uri(setup_uri) || !usable_uri(aggregate))
        return make_error(EPROTO, "RTSP DESCRIBE: Content-Base or a=control is not a usable URL");

    auto ports = UdpReceiver::open_pair(opt.client_port, opt.rcvbuf);
    if (!ports) return ports.error();
    UdpReceiver& rtp = ports->first;
    UdpReceiver& rtcp = ports->second;
    info.port = rtp.port();
    std::string pp = std::to_string(rtp.port()) + "-" + std::to_string(rtcp.port());
    std::string transport = opt.transport == Transport::Rtp ? "RTP/AVP;unicast;client_port=" + pp
                                                            : "RAW/RAW/UDP;unicast;client_port=" + pp;
    auto setup = c.request("SETUP", setup_uri, {{"Transport", transport}});
    if (!setup) return setup.error();
    event(opt, "SETUP " + setup_uri + " (" + transport + "): " + status_text(*setup));
    if (!ok2xx(*setup)) return refused("SETUP", *setup);
    const std::string* sess_h = setup->header("Session");
    if (!sess_h) return make_error(EPROTO, "RTSP SETUP: the response has no Session header");
    auto sess = parse_session(*sess_h);
    if (!sess) return make_error(EPROTO, "RTSP SETUP: " + sess.error().message);
    c.set_session(sess->id);

    Status played = [&]() -> Status {
        std::optional<in_addr_t> server_ip;
        sockaddr_in peer{};
        socklen_t plen = sizeof peer;
        if (getpeername(c.fd(), reinterpret_cast<sockaddr*>(&peer), &plen) == 0) server_ip = peer.sin_addr.s_addr;
        if (const std::string* tr = setup->header("Transport")) {
            auto t = parse_transport(*tr);
            if (!t) return make_error(EPROTO, "RTSP SETUP: " + t.error().message);
            if (t->client_port && t->client_port->rtp != rtp.port())
                return make_error(EPROTO, "RTSP SETUP: server moved client_port to " + std::to_string(t->client_port->rtp) +
                                              " (we listen on " + std::to_string(rtp.port()) + ")");
            if (t->source) {
                in_addr a{};
                if (inet_pton(AF_INET, t->source->c_str(), &a) == 1) server_ip = a.s_addr;
            }
        }

        Headers play_h;
        if (opt.start_npt) {
            char b[64];
            std::snprintf(b, sizeof b, "npt=%.3f-", *opt.start_npt);
            play_h.emplace_back("Range", b);
        }
        auto play = c.request("PLAY", aggregate, play_h);
        if (!play) return play.error();
        event(opt, "PLAY: " + status_text(*play) + (play->header("Range") ? " Range: " + *play->header("Range") : ""));
        if (!ok2xx(*play)) return refused("PLAY", *play);

        Loop loop{opt, an, info, rtp, &rtcp, &c, server_ip};
        loop.keepalive_interval_ns = opt.keepalive_s > 0 ? int64_t(std::llround(opt.keepalive_s * 1e9))
                                                         : int64_t(std::max(1, sess->timeout_s / 2)) * 1'000'000'000;
        loop.keepalive_url = aggregate;
        auto st = loop.run();
        loop.finish_keepalive(opt.rtsp.response_timeout_ms);
        info.socket_drops = rtp.drops();
        info.truncated = rtp.truncated();
        return st;
    }();
    // Whatever happened after SETUP, the server is told to stop, on the connection we had.
    bool was_connected = c.connected();
    auto td = c.request("TEARDOWN", aggregate);
    info.teardown_ok = td && ok2xx(*td);
    info.control_reconnects = c.reconnects();
    if (info.control_end.empty() && !c.first_loss().empty()) info.control_end = c.first_loss();
    if (info.control_end.empty()) {
        if (info.teardown_ok && was_connected) info.control_end = "teardown";
        else if (!td && td.error().code == ETIMEDOUT) info.control_end = "timeout";
        else info.control_end = td ? "teardown answered " + status_text(*td) : td.error().message;
    }
    if (c.reconnects() > 0) info.control_end += ", reconnected";
    event(opt, "TEARDOWN: " + (td ? status_text(*td) : td.error().message));
    if (!played) return played.error();
    return info;
}

}  // namespace of::verify
