#include "rtsp/server.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>

#include "rtsp/sdp.h"
#include "rtsp/status.h"
#include "rtsp/text.h"
#include "tcp_takeover/repair.h"

namespace of::rtsp {

using detail::cat;
namespace {

constexpr const char* kPublic = "OPTIONS, DESCRIBE, SETUP, PLAY, PAUSE, TEARDOWN, GET_PARAMETER, SET_PARAMETER";
constexpr const char* kServerName = "oneframe/0.1";
constexpr int kAcceptsPerWakeup = 64;
constexpr uint64_t kAcceptRetryUsec = 100'000;
constexpr uint64_t kConnectionTimerAccuracyUsec = 50'000;

bool accepts_sdp(std::string_view accept) {
    // "application/sdp", "application/*" or "*/*" anywhere in the list, parameters ignored.
    size_t pos = 0;
    while (pos <= accept.size()) {
        size_t comma = accept.find(',', pos);
        std::string_view item = accept.substr(pos, comma == std::string_view::npos ? std::string_view::npos : comma - pos);
        item = item.substr(0, item.find(';'));
        while (!item.empty() && (item.front() == ' ' || item.front() == '\t')) item.remove_prefix(1);
        while (!item.empty() && (item.back() == ' ' || item.back() == '\t')) item.remove_suffix(1);
        if (iequals(item, "application/sdp") || iequals(item, "application/*") || item == "*/*") return true;
        if (comma == std::string_view::npos) break;
        pos = comma + 1;
    }
    return false;
}

int uri_status(const Error& e) { return e.code == ENOENT ? 404 : 400; }

// Zero in any of these would stall every connection or close it at once.
Status check_limits(const Limits& l) {
    const ParserLimits& p = l.parser;
    if (!p.max_head_bytes || !p.max_line_bytes || !p.max_uri_bytes || !p.max_headers || !l.max_output_bytes ||
        !l.max_connections_per_address || !l.max_sessions_per_address ||
        !l.max_read_per_wakeup || !l.session_timeout_usec || !l.idle_timeout_usec || !l.request_timeout_usec)
        return make_error(EINVAL, "RTSP limits must not be zero");
    return {};
}

}  // namespace

struct RtspServer::Connection {
    RtspServer* server = nullptr;
    uint64_t id = 0;
    int fd = -1;
    sd_event_source* io = nullptr;
    sd_event_source* timer = nullptr;
    RequestParser parser;
    std::string out;
    size_t out_off = 0;
    std::optional<in_addr> peer_v4;  // nullopt for a pure IPv6 peer
    uint16_t peer_port = 0;          // host order
    std::string peer_key;            // the peer's address bytes, for the per-address limit
    // Byte offsets of both directions since the connection began, as a partner watching the
    // wire counts them (docs/tcp-takeover.md): what went into the parser, what went into `out`.
    uint64_t in_total = 0;
    uint64_t out_total = 0;
    uint64_t request_end = 0;        // client offset just after the request being answered
    std::string preread;             // bytes received by a server before us (an adopted connection)
    std::string local_ip;            // for the SDP origin
    bool local_ipv6 = false;
    std::string local_host;          // "ip:port" for Content-Base when the URI had no host
    size_t sessions = 0;             // alive sessions SETUP on this connection
    uint64_t last_request_usec = 0;
    uint64_t partial_since_usec = 0;  // first byte of the unfinished request, 0 if none
    uint64_t write_progress_usec = 0;
    uint64_t closing_since_usec = 0;
    bool closing = false;   // a fatal error was answered: flush, half-close, drain, close
    bool shut_wr = false;
    bool peer_eof = false;
    bool paused = false;    // reads stopped because answers are not being read
    bool dead = false;      // close at the end of the current callback

    explicit Connection(const ParserLimits& l) : parser(l) {}
    size_t pending() const { return out.size() - out_off; }
    std::optional<sockaddr_in> peer() const {
        if (!peer_v4) return std::nullopt;
        sockaddr_in a{};
        a.sin_family = AF_INET;
        a.sin_addr = *peer_v4;
        a.sin_port = htons(peer_port);
        return a;
    }
};

struct RtspServer::Session {
    RtspServer* server = nullptr;
    std::string id;
    std::string asset;
    TransportKind kind = TransportKind::RtpAvp;
    std::string control_url;  // the SETUP URI, echoed in RTP-Info
    uint64_t owner = 0;       // connection that created it; 0 once that connection is gone
    uint32_t client_ip = 0;   // where it streams (network order); 0 if adopted
    sd_event_source* timer = nullptr;
};

Result<int> listen_tcp(const sockaddr_in& addr, int backlog) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) return errno_error("socket");
    int one = 1;
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0 ||
        bind(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof addr) < 0 || listen(fd, backlog) < 0) {
        Error e = errno_error(cat("listen on RTSP port ", std::to_string(ntohs(addr.sin_port))));
        close(fd);
        return e;
    }
    return fd;
}

RtspServer::RtspServer(sd_event* loop, SessionBackend& backend, const Limits& limits)
    : loop_(sd_event_ref(loop)), backend_(backend), limits_(limits) {}

Result<std::unique_ptr<RtspServer>> RtspServer::create(sd_event* loop, SessionBackend& backend, const Limits& limits) {
    if (!loop) return make_error(EINVAL, "no event loop");
    if (auto st = check_limits(limits); !st) return st.error();
    std::unique_ptr<RtspServer> s(new RtspServer(loop, backend, limits));
    // Made now, disabled: when descriptors run out, creating it (its clock's timerfd is made on
    // first use) could fail too, and listening would never resume.
    int r = sd_event_add_time_relative(loop, &s->accept_retry_, CLOCK_MONOTONIC, kAcceptRetryUsec, 0,
                                       &RtspServer::on_accept_retry, s.get());
    if (r < 0) return errno_error("sd_event_add_time(RTSP accept retry)", -r);
    sd_event_source_set_enabled(s->accept_retry_, SD_EVENT_OFF);
    return s;
}

Result<std::unique_ptr<RtspServer>> RtspServer::create(sd_event* loop, int listen_fd, SessionBackend& backend,
                                                       const Limits& limits) {
    auto s = create(loop, backend, limits);
    if (!s) return s;
    if (auto st = (*s)->start_listening(listen_fd, false); !st) return st.error();
    return s;
}

Result<std::unique_ptr<RtspServer>> RtspServer::create(sd_event* loop, const sockaddr_in& addr, SessionBackend& backend,
                                                       const Limits& limits) {
    auto s = create(loop, backend, limits);
    if (!s) return s;
    auto fd = listen_tcp(addr);
    if (!fd) return fd.error();
    if (auto st = (*s)->start_listening(*fd, true); !st) return st.error();
    return s;
}

Status RtspServer::start_listening(int listen_fd, bool take_ownership) {
    auto give_up = [&](Error e) -> Status {
        if (take_ownership) close(listen_fd);
        return e;
    };
    if (listen_fd_ >= 0) return give_up(make_error(EALREADY, "the RTSP server is listening already"));
    int accepting = 0;
    socklen_t len = sizeof accepting;
    if (getsockopt(listen_fd, SOL_SOCKET, SO_ACCEPTCONN, &accepting, &len) < 0)
        return give_up(errno_error("RTSP listening socket"));
    if (!accepting) return give_up(make_error(EINVAL, "RTSP socket is not listening"));
    // Accepting must never block the loop, whoever created the socket.
    int flags = fcntl(listen_fd, F_GETFL);
    if (flags < 0 || fcntl(listen_fd, F_SETFL, flags | O_NONBLOCK) < 0)
        return give_up(errno_error("O_NONBLOCK on RTSP socket"));
    int r = sd_event_add_io(loop_, &listen_source_, listen_fd, EPOLLIN, &RtspServer::on_listen, this);
    if (r < 0) return give_up(errno_error("sd_event_add_io(RTSP listen)", -r));
    listen_fd_ = listen_fd;
    owns_fd_ = take_ownership;
    return {};
}

void RtspServer::stop_listening() {
    listen_source_ = sd_event_source_disable_unref(listen_source_);
    sd_event_source_set_enabled(accept_retry_, SD_EVENT_OFF);
    if (owns_fd_ && listen_fd_ >= 0) close(listen_fd_);
    listen_fd_ = -1;
    owns_fd_ = false;
}

RtspServer::~RtspServer() {
    observer_ = nullptr;  // it may be gone already; nothing is reported from here
    while (!connections_.empty()) close_connection(*connections_.begin()->second, false);
    for (auto& [id, s] : sessions_) sd_event_source_disable_unref(s->timer);
    sessions_.clear();
    stop_listening();
    sd_event_source_disable_unref(accept_retry_);
    sd_event_unref(loop_);
}

void RtspServer::drop_connections_silently() {
    while (!connections_.empty()) close_connection(*connections_.begin()->second, true);
}

uint16_t RtspServer::port() const {
    if (listen_fd_ < 0) return 0;
    sockaddr_storage ss{};
    socklen_t len = sizeof ss;
    if (getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&ss), &len) < 0) return 0;
    if (ss.ss_family == AF_INET) return ntohs(reinterpret_cast<sockaddr_in*>(&ss)->sin_port);
    if (ss.ss_family == AF_INET6) return ntohs(reinterpret_cast<sockaddr_in6*>(&ss)->sin6_port);
    return 0;
}

uint64_t RtspServer::now_usec() const {
    uint64_t now = 0;
    sd_event_now(loop_, CLOCK_MONOTONIC, &now);
    return now;
}

uint32_t RtspServer::session_timeout_seconds() const {
    uint64_t s = (limits_.session_timeout_usec + 500'000) / 1'000'000;
    return uint32_t(std::clamp<uint64_t>(s, 1, UINT32_MAX));
}

// ---- accepting ----

int RtspServer::on_listen(sd_event_source*, int, uint32_t, void* userdata) {
    static_cast<RtspServer*>(userdata)->accept_pending();
    return 0;
}

int RtspServer::on_accept_retry(sd_event_source*, uint64_t, void* userdata) {
    auto* self = static_cast<RtspServer*>(userdata);
    sd_event_source_set_enabled(self->listen_source_, SD_EVENT_ON);
    return 0;
}

void RtspServer::accept_pending() {
    for (int i = 0; i < kAcceptsPerWakeup && listen_fd_ >= 0; ++i) {
        sockaddr_storage peer{};
        socklen_t len = sizeof peer;
        int fd = accept4(listen_fd_, reinterpret_cast<sockaddr*>(&peer), &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED || errno == EPROTO) continue;
            if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
                // Out of descriptors: the level-triggered listen event would spin; back off.
                sd_event_source_set_enabled(listen_source_, SD_EVENT_OFF);
                sd_event_source_set_time(accept_retry_, now_usec() + kAcceptRetryUsec);
                sd_event_source_set_enabled(accept_retry_, SD_EVENT_ONESHOT);
            }
            return;  // EAGAIN, or an error the next wakeup retries
        }
        if (add_connection(fd, peer, false)) ++counters_.connections_accepted;
    }
}

RtspServer::Connection* RtspServer::add_connection(int fd, const sockaddr_storage& peer, bool adopted) {
    std::optional<in_addr> peer_v4;
    uint16_t peer_port = 0;
    std::string peer_key;
    if (peer.ss_family == AF_INET) {
        peer_v4 = reinterpret_cast<const sockaddr_in*>(&peer)->sin_addr;
        peer_port = ntohs(reinterpret_cast<const sockaddr_in*>(&peer)->sin_port);
    } else if (peer.ss_family == AF_INET6) {
        auto* a6 = reinterpret_cast<const sockaddr_in6*>(&peer);
        peer_port = ntohs(a6->sin6_port);
        if (IN6_IS_ADDR_V4MAPPED(&a6->sin6_addr)) {
            in_addr v4;
            std::memcpy(&v4, a6->sin6_addr.s6_addr + 12, 4);
            peer_v4 = v4;
        } else {
            peer_key.assign(reinterpret_cast<const char*>(a6->sin6_addr.s6_addr), 16);
        }
    }
    if (peer_v4) peer_key.assign(reinterpret_cast<const char*>(&peer_v4->s_addr), 4);
    // An adopted connection existed already on the partner: it is kept whatever the limits say.
    if (!adopted && (connections_.size() >= limits_.max_connections ||
                     connections_per_address_[peer_key] >= limits_.max_connections_per_address)) {
        if (!connections_per_address_[peer_key]) connections_per_address_.erase(peer_key);
        ++counters_.connections_refused;
        close(fd);
        return nullptr;
    }
    auto c = std::make_unique<Connection>(limits_.parser);
    c->server = this;
    c->id = next_connection_id_++;
    c->fd = fd;
    c->peer_v4 = peer_v4;
    c->peer_port = peer_port;
    c->peer_key = peer_key;
    sockaddr_storage local{};
    socklen_t len = sizeof local;
    char ip[INET6_ADDRSTRLEN] = "0.0.0.0";
    uint16_t lport = 0;
    if (getsockname(fd, reinterpret_cast<sockaddr*>(&local), &len) == 0) {
        if (local.ss_family == AF_INET) {
            auto* a = reinterpret_cast<sockaddr_in*>(&local);
            inet_ntop(AF_INET, &a->sin_addr, ip, sizeof ip);
            lport = ntohs(a->sin_port);
        } else if (local.ss_family == AF_INET6) {
            auto* a6 = reinterpret_cast<sockaddr_in6*>(&local);
            lport = ntohs(a6->sin6_port);
            if (IN6_IS_ADDR_V4MAPPED(&a6->sin6_addr)) {
                inet_ntop(AF_INET, a6->sin6_addr.s6_addr + 12, ip, sizeof ip);
            } else {
                inet_ntop(AF_INET6, &a6->sin6_addr, ip, sizeof ip);
                c->local_ipv6 = true;
            }
        }
    }
    c->local_ip = ip;
    c->local_host = c->local_ipv6 ? cat("[", c->local_ip, "]:", std::to_string(lport))
                                  : cat(c->local_ip, ":", std::to_string(lport));
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);  // answers are whole messages

    uint64_t now = now_usec();
    c->last_request_usec = now;
    int r = sd_event_add_io(loop_, &c->io, fd, EPOLLIN, &RtspServer::on_connection_io, c.get());
    if (r >= 0)
        r = sd_event_add_time(loop_, &c->timer, CLOCK_MONOTONIC, now + limits_.idle_timeout_usec,
                              kConnectionTimerAccuracyUsec, &RtspServer::on_connection_timer, c.get());
    if (r < 0) {
        sd_event_source_disable_unref(c->io);
        sd_event_source_disable_unref(c->timer);
        if (adopted) tcp_takeover::close_silently(fd);  // it is someone's to carry on
        else close(fd);
        ++counters_.connections_refused;
        return nullptr;
    }
    ++counters_.connections_open;
    ++connections_per_address_[c->peer_key];
    Connection* raw = c.get();
    connections_.emplace(c->id, std::move(c));
    if (observer_ && raw->peer_v4) observer_->opened(*raw->peer());
    return raw;
}

Status RtspServer::adopt_connection(AdoptedConnection a) {
    sockaddr_storage peer{};
    std::memcpy(&peer, &a.peer, sizeof a.peer);
    Connection* c = add_connection(a.fd, peer, true);
    if (!c) return make_error(EMFILE, "cannot watch the adopted connection");
    ++counters_.connections_adopted;
    c->in_total = a.in_offset;
    c->preread = std::move(a.pending);
    c->out = std::move(a.unsent);
    c->out_total = a.out_offset;
    if (c->pending()) c->write_progress_usec = now_usec();
    // What the old server left unanswered is served now, not when the client next speaks.
    service(*c, EPOLLOUT);
    return {};
}

// Hands buffered bytes of an adopted connection to the parser, as far as it has room.
void RtspServer::feed_preread(Connection& c) {
    if (c.preread.empty()) return;
    size_t n = std::min(c.preread.size(), c.parser.room());
    if (n == 0) return;
    if (!c.parser.mid_request()) c.partial_since_usec = now_usec();
    c.parser.append(std::string_view(c.preread).substr(0, n));
    c.in_total += n;
    c.preread.erase(0, n);
}

// ---- connection I/O ----

int RtspServer::on_connection_io(sd_event_source*, int, uint32_t revents, void* userdata) {
    auto* c = static_cast<Connection*>(userdata);
    c->server->service(*c, revents);
    return 0;
}

int RtspServer::on_connection_timer(sd_event_source*, uint64_t, void* userdata) {
    auto* c = static_cast<Connection*>(userdata);
    RtspServer& s = *c->server;
    uint64_t now = s.now_usec();
    const uint64_t rt = s.limits_.request_timeout_usec;
    bool timed_out = false;
    if (c->closing) {
        timed_out = now >= c->closing_since_usec + rt;
    } else if (c->pending() && now >= c->write_progress_usec + rt) {
        timed_out = true;  // the peer does not read its answers
    } else if (c->partial_since_usec && !c->paused && now >= c->partial_since_usec + rt) {
        // A request that does not finish in time (slowloris): tell it, best effort, and go.
        s.answer(*c, Response(408), std::nullopt);
        s.flush(*c);
        timed_out = true;
    } else if (!c->pending() && !c->parser.mid_request() && now >= c->last_request_usec + s.limits_.idle_timeout_usec) {
        timed_out = true;
    }
    if (timed_out) {
        ++s.counters_.connections_timed_out;
        s.close_connection(*c, false);
    } else {
        s.update_connection(*c);
    }
    return 0;
}

void RtspServer::service(Connection& c, uint32_t revents) {
    if (revents & EPOLLERR) c.dead = true;
    if (!c.dead && (revents & EPOLLOUT)) flush(c);

    if (!c.dead && c.closing) {
        // After a fatal error: throw away whatever the peer still sends until it closes, so that
        // closing with unread data does not reset the connection before the answer arrives.
        if (revents & (EPOLLIN | EPOLLHUP)) {
            char buf[4096];
            size_t budget = limits_.max_read_per_wakeup;
            while (budget) {
                ssize_t n = recv(c.fd, buf, std::min(sizeof buf, budget), 0);
                if (n > 0) {
                    budget -= std::min(budget, size_t(n));
                    continue;
                }
                if (n < 0 && errno == EINTR) continue;
                if (n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK)) c.dead = true;
                break;
            }
        }
    } else if (!c.dead) {
        feed_preread(c);
        process_requests(c);  // requests left waiting while answers were not being read
        if ((revents & (EPOLLIN | EPOLLHUP)) && !c.peer_eof) {
            char buf[4096];
            size_t budget = limits_.max_read_per_wakeup;
            // Bytes an adopted connection brought come first (level-triggered: the socket's wait).
            while (budget && !c.dead && !c.closing && c.pending() < limits_.max_output_bytes && c.preread.empty()) {
                size_t want = std::min({sizeof buf, budget, c.parser.room()});
                if (want == 0) break;
                ssize_t n = recv(c.fd, buf, want, 0);
                if (n > 0) {
                    if (!c.parser.mid_request()) c.partial_since_usec = now_usec();
                    c.parser.append(std::string_view(buf, size_t(n)));
                    c.in_total += size_t(n);
                    budget -= size_t(n);
                    process_requests(c);
                    continue;
                }
                if (n == 0) {
                    c.peer_eof = true;  // answer what is complete, then close
                    break;
                }
                if (errno == EINTR) continue;
                if (errno != EAGAIN && errno != EWOULDBLOCK) c.dead = true;
                break;
            }
        }
    }
    // Answers may drain at once while complete requests wait in the parser; no event would
    // wake the connection for them, so serve them now, as long as the peer keeps up.
    while (!c.dead) {
        flush(c);
        if (c.dead || c.closing || c.pending() >= limits_.max_output_bytes) break;
        uint64_t before = counters_.requests;
        feed_preread(c);
        process_requests(c);
        if (counters_.requests == before) break;
    }
    if (c.dead || ((c.peer_eof || (c.closing && c.shut_wr && (revents & EPOLLHUP))) && !c.pending())) {
        close_connection(c, false);
        return;
    }
    update_connection(c);
}

void RtspServer::process_requests(Connection& c) {
    while (!c.dead && !c.closing && c.pending() < limits_.max_output_bytes) {
        Request req;
        ParseStatus st = c.parser.next(req);
        if (st == ParseStatus::NeedMore) break;
        ++counters_.requests;
        c.last_request_usec = now_usec();
        c.partial_since_usec = c.parser.mid_request() ? c.last_request_usec : 0;
        c.request_end = c.in_total - c.parser.buffered();
        if (st == ParseStatus::Complete) {
            if (observer_ && c.peer_v4) observer_->request(*c.peer());
            handle(c, req);
            continue;
        }
        const ParseError& e = c.parser.error();
        ++counters_.protocol_errors;
        answer(c, error_response(e.status), e.cseq);
        if (e.fatal) {
            c.closing = true;
            c.closing_since_usec = now_usec();
        }
    }
    // Only the bytes of an unfinished request start the slow-request clock (not stray CRLFs).
    if (!c.parser.mid_request()) c.partial_since_usec = 0;
}

void RtspServer::flush(Connection& c) {
    while (c.pending()) {
        ssize_t n = send(c.fd, c.out.data() + c.out_off, c.pending(), MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n > 0) {
            c.out_off += size_t(n);
            c.write_progress_usec = now_usec();
            continue;
        }
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
        c.dead = true;
        return;
    }
    if (c.out_off == c.out.size()) {
        c.out.clear();
        c.out_off = 0;
    } else if (c.out_off > c.out.size() / 2) {
        c.out.erase(0, c.out_off);
        c.out_off = 0;
    }
    if (c.closing && !c.pending() && !c.shut_wr && !c.peer_eof) {
        if (observer_ && c.peer_v4) observer_->closing(*c.peer());  // our FIN must go out
        shutdown(c.fd, SHUT_WR);
        c.shut_wr = true;
    }
}

void RtspServer::update_connection(Connection& c) {
    bool paused = !c.closing && c.pending() >= limits_.max_output_bytes;
    if (paused && !c.paused) ++counters_.reads_paused;
    // A request cut short by our own pause is not slow: its clock restarts when reading does.
    if (c.paused && !paused && c.partial_since_usec) c.partial_since_usec = now_usec();
    c.paused = paused;
    uint32_t events = 0;
    if (!c.peer_eof && !paused) events |= EPOLLIN;
    if (c.pending()) events |= EPOLLOUT;
    sd_event_source_set_io_events(c.io, events);

    const uint64_t rt = limits_.request_timeout_usec;
    uint64_t deadline = c.last_request_usec + limits_.idle_timeout_usec;
    if (c.closing) deadline = std::min(deadline, c.closing_since_usec + rt);
    if (c.pending()) deadline = std::min(deadline, c.write_progress_usec + rt);
    if (c.partial_since_usec && !paused) deadline = std::min(deadline, c.partial_since_usec + rt);
    sd_event_source_set_time(c.timer, deadline);
    sd_event_source_set_enabled(c.timer, SD_EVENT_ONESHOT);
}

void RtspServer::close_connection(Connection& c, bool silently) {
    // Its sessions live on: RTSP allows the next request on another connection.
    for (auto& [id, s] : sessions_)
        if (s->owner == c.id) s->owner = 0;
    sd_event_source_disable_unref(c.io);
    sd_event_source_disable_unref(c.timer);
    if (silently) {
        tcp_takeover::close_silently(c.fd);
    } else {
        if (observer_ && c.peer_v4 && !c.shut_wr) observer_->closing(*c.peer());
        close(c.fd);
    }
    --counters_.connections_open;
    if (auto it = connections_per_address_.find(c.peer_key); it != connections_per_address_.end() && --it->second == 0)
        connections_per_address_.erase(it);
    connections_.erase(c.id);  // destroys c
}

void RtspServer::answer(Connection& c, const Response& r, std::optional<uint32_t> cseq) {
    if (!c.pending()) c.write_progress_usec = now_usec();
    Response with_server = r;
    with_server.header("Server", kServerName);
    std::string bytes = with_server.serialize(cseq);
    if (observer_ && c.peer_v4) observer_->answered(*c.peer(), c.request_end, c.out_total, bytes);
    c.out += bytes;
    c.out_total += bytes.size();
    ++counters_.responses[r.status()];
}

// ---- sessions ----

Status RtspServer::add_session(const std::string& id, const std::string& asset, TransportKind kind,
                               std::string control_url, uint64_t owner, uint32_t client_ip) {
    if (sessions_.size() >= limits_.max_sessions) return make_error(ENOSPC, "too many RTSP sessions");
    auto s = std::make_unique<Session>();
    s->server = this;
    s->id = id;
    s->asset = asset;
    s->kind = kind;
    s->control_url = std::move(control_url);
    s->owner = owner;
    s->client_ip = client_ip;
    uint64_t accuracy = std::clamp<uint64_t>(limits_.session_timeout_usec / 20, 1, 1'000'000);
    int r = sd_event_add_time(loop_, &s->timer, CLOCK_MONOTONIC, now_usec() + limits_.session_timeout_usec, accuracy,
                              &RtspServer::on_session_timer, s.get());
    if (r < 0) return errno_error("session timer", -r);
    if (owner) {
        auto it = connections_.find(owner);
        if (it != connections_.end()) ++it->second->sessions;
    }
    if (client_ip) ++sessions_per_address_[client_ip];
    sessions_.emplace(id, std::move(s));
    ++counters_.sessions_created;
    return {};
}

void RtspServer::end_session(const std::string& id) {
    auto it = sessions_.find(id);
    if (it == sessions_.end()) return;
    if (it->second->owner) {
        auto c = connections_.find(it->second->owner);
        if (c != connections_.end() && c->second->sessions) --c->second->sessions;
    }
    if (uint32_t ip = it->second->client_ip) {
        auto a = sessions_per_address_.find(ip);
        if (a != sessions_per_address_.end() && --a->second == 0) sessions_per_address_.erase(a);
    }
    sd_event_source_disable_unref(it->second->timer);
    sessions_.erase(it);
}

void RtspServer::touch(Session& s) {
    sd_event_source_set_time(s.timer, now_usec() + limits_.session_timeout_usec);
    sd_event_source_set_enabled(s.timer, SD_EVENT_ONESHOT);
}

int RtspServer::on_session_timer(sd_event_source*, uint64_t, void* userdata) {
    auto* s = static_cast<Session*>(userdata);
    RtspServer& self = *s->server;
    std::string id = s->id;  // end_session destroys s
    self.end_session(id);
    ++self.counters_.sessions_timed_out;
    if (!self.backend_.teardown(id)) ++self.counters_.backend_errors;
    return 0;
}

Status RtspServer::touch_session(const std::string& id) {
    auto it = sessions_.find(id);
    if (it == sessions_.end()) return make_error(ESRCH, "no RTSP session " + id);
    touch(*it->second);
    return {};
}

Status RtspServer::adopt_session(const std::string& id, const std::string& asset, TransportKind kind, in_addr client) {
    if (!valid_session_id(id)) return make_error(EINVAL, "bad session id");
    if (!valid_asset_name(asset)) return make_error(EINVAL, "bad asset name");
    if (sessions_.count(id)) return make_error(EEXIST, "RTSP session " + id + " exists");
    return add_session(id, asset, kind, "", 0, client.s_addr);
}

Status RtspServer::forget_session(const std::string& id) {
    if (!sessions_.count(id)) return make_error(ESRCH, "no RTSP session " + id);
    end_session(id);
    return {};
}

RtspServer::Session* RtspServer::session_for(const Connection& c, const Request& req, bool required, int& status) {
    const std::string* h = req.header("Session");
    if (!h) {
        if (required) status = 454;
        return nullptr;
    }
    auto sh = parse_session(*h);
    if (!sh) {
        status = 400;
        return nullptr;
    }
    auto it = sessions_.find(sh->id);
    // A session is controlled from its client's address only: to anyone else it does not exist
    // (a guessed or overheard id must not tear another viewer's session down).
    if (it == sessions_.end() ||
        (it->second->client_ip && (!c.peer_v4 || c.peer_v4->s_addr != it->second->client_ip))) {
        status = 454;
        return nullptr;
    }
    return it->second.get();
}

// ---- requests ----

Response RtspServer::error_response(int status) {
    Response r(status);
    if (status == 405) r.header("Allow", kPublic);
    return r;
}

Response RtspServer::backend_error(const Error& e) {
    ++counters_.backend_errors;
    return error_response(rtsp_status_for(e));
}

void RtspServer::handle(Connection& c, const Request& req) {
    // No option tags are supported: RFC 2326 12.32 wants 551 with the tags listed.
    for (const char* name : {"Require", "Proxy-Require"}) {
        if (const std::string* v = req.header(name)) {
            Response r(551);
            r.header("Unsupported", *v);
            answer(c, r, req.cseq);
            return;
        }
    }
    Response r(500);
    switch (req.method) {
        case Method::Options: r = handle_options(c, req); break;
        case Method::Describe: r = handle_describe(c, req); break;
        case Method::Setup: r = handle_setup(c, req); break;
        case Method::Play: r = handle_play(c, req); break;
        case Method::Pause: r = handle_pause(c, req); break;
        case Method::Teardown: r = handle_teardown(c, req); break;
        case Method::GetParameter:
        case Method::SetParameter: r = handle_parameter(c, req); break;
        case Method::Announce:
        case Method::Record:
        case Method::Redirect: r = error_response(405); break;
    }
    answer(c, r, req.cseq);
}

Response RtspServer::handle_options(Connection& c, const Request& req) {
    int status = 0;
    Session* s = session_for(c, req, false, status);
    if (status) return error_response(status);
    Response r(200);
    r.header("Public", kPublic);
    if (s) {
        touch(*s);
        r.header("Session", format_session(s->id, session_timeout_seconds()));
    }
    return r;
}

Response RtspServer::handle_describe(Connection& c, const Request& req) {
    auto u = parse_request_uri(req.uri);
    if (!u) return error_response(uri_status(u.error()));
    if (u->star) return error_response(400);
    if (u->asset.empty()) return error_response(404);
    if (const std::string* accept = req.header("Accept"); accept && !accepts_sdp(*accept)) return error_response(406);
    int ignored = 0;
    if (Session* s = session_for(c, req, false, ignored)) touch(*s);

    auto d = backend_.describe(u->asset);
    if (!d) return backend_error(d.error());
    SdpParams p;
    p.asset = u->asset;
    p.origin_address = c.local_ip;
    p.origin_ipv6 = c.local_ipv6;
    p.session_id = d->version;
    p.duration_ns = d->duration_ns;
    p.bitrate_bps = d->bitrate_bps;
    p.raw_udp = u->raw_udp;
    Response r(200);
    r.header("Content-Base", content_base(*u, c.local_host));
    r.body("application/sdp", build_sdp(p));
    return r;
}

Response RtspServer::handle_setup(Connection& c, const Request& req) {
    auto u = parse_request_uri(req.uri);
    if (!u) return error_response(uri_status(u.error()));
    if (u->star) return error_response(400);
    if (u->asset.empty() || (u->track && *u->track != kTrackId)) return error_response(404);
    const std::string* th = req.header("Transport");
    if (!th) return error_response(400);
    auto t = negotiate_transport(*th);
    if (!t) return error_response(t.error().code == ENOTSUP ? 461 : 400);
    if (!c.peer_v4) return error_response(461);  // streams are IPv4 (the stream IP)
    if (!t->destination.empty()) {
        // Streams go to the peer only: never let a request aim a stream at a third party.
        in_addr dest{};
        if (inet_pton(AF_INET, t->destination.c_str(), &dest) != 1 || dest.s_addr != c.peer_v4->s_addr)
            return error_response(403);
    }

    int status = 0;
    Session* existing = session_for(c, req, false, status);
    if (status) return error_response(status);
    if (existing && existing->asset != u->asset) return error_response(454);
    if (!existing) {
        auto per_ip = sessions_per_address_.find(c.peer_v4->s_addr);
        if (sessions_.size() >= limits_.max_sessions || c.sessions >= limits_.max_sessions_per_connection ||
            (per_ip != sessions_per_address_.end() && per_ip->second >= limits_.max_sessions_per_address))
            return error_response(453);
    }

    SetupRequest sr;
    sr.asset = u->asset;
    sr.transport = *t;
    sr.client_addr.sin_family = AF_INET;
    sr.client_addr.sin_addr = *c.peer_v4;
    sr.client_addr.sin_port = htons(t->client_port_lo);
    if (existing) sr.session = existing->id;
    std::string existing_id = sr.session;  // the backend may not keep `existing` valid

    auto rep = backend_.setup(sr);
    if (!rep) {
        if (rep.error().code == ESRCH && !existing_id.empty()) end_session(existing_id);
        return backend_error(rep.error());
    }
    bool id_ok = valid_session_id(rep->session);
    if (!existing_id.empty()) {
        auto it = sessions_.find(existing_id);
        if (!id_ok || rep->session != existing_id || it == sessions_.end()) return error_response(500);
        it->second->kind = t->kind;
        it->second->control_url = req.uri;
        touch(*it->second);
    } else {
        // A bad or duplicate id is a backend bug; never let it alias another viewer's session.
        if (!id_ok || sessions_.count(rep->session)) {
            if (id_ok) ++counters_.backend_errors;
            else if (!backend_.teardown(rep->session)) ++counters_.backend_errors;
            return error_response(500);
        }
        if (auto st = add_session(rep->session, u->asset, t->kind, req.uri, c.id, c.peer_v4->s_addr); !st) {
            if (!backend_.teardown(rep->session)) ++counters_.backend_errors;
            return error_response(453);
        }
    }
    TransportReply tr;
    tr.server_port_lo = rep->server_port_lo;
    tr.server_port_hi = rep->server_port_hi;
    if (t->kind == TransportKind::RtpAvp) tr.ssrc = rep->ssrc;
    Response r(200);
    r.header("Session", format_session(rep->session, session_timeout_seconds()));
    r.header("Transport", format_transport(*t, tr));
    // Clients that SETUP without DESCRIBE (VLC's SAT>IP-style client in Debian's build, cable
    // set-top boxes) build their PLAY URL from this; without it they PLAY rtsp://host/stream=0.
    r.header("Content-Base", content_base(*u, c.local_host));
    return r;
}

// PLAY, PAUSE and TEARDOWN: the request must name a session of ours, on that session's asset
// (or on the aggregate URL); a request that does keeps the session alive.
RtspServer::Session* RtspServer::session_of_request(const Connection& c, const Request& req, int& status) {
    auto u = parse_request_uri(req.uri);
    if (!u) {
        status = uri_status(u.error());
        return nullptr;
    }
    if (u->star) {
        status = 400;
        return nullptr;
    }
    Session* s = session_for(c, req, true, status);
    if (!s) return nullptr;
    if (!u->asset.empty() && u->asset != s->asset) {
        status = 454;
        return nullptr;
    }
    touch(*s);
    return s;
}

Response RtspServer::handle_play(Connection& c, const Request& req) {
    int status = 0;
    Session* s = session_of_request(c, req, status);
    if (!s) return error_response(status);
    std::optional<Range> range;
    if (const std::string* h = req.header("Range")) {
        auto rg = parse_range(*h);
        if (!rg) {
            int code = rg.error().code;
            return error_response(code == ENOTSUP ? 501 : code == ERANGE ? 457 : 400);
        }
        range = *rg;
    }
    std::string id = s->id;
    TransportKind kind = s->kind;
    std::string control_url = s->control_url;
    auto rep = backend_.play(id, range);
    if (!rep) {
        if (rep.error().code == ESRCH) end_session(id);
        return backend_error(rep.error());
    }
    Response r(200);
    r.header("Session", format_session(id, session_timeout_seconds()));
    r.header("Range", format_npt_range(rep->start_ns, rep->end_ns));
    if (kind == TransportKind::RtpAvp && !control_url.empty())
        r.header("RTP-Info", cat("url=", control_url, ";seq=", std::to_string(rep->rtp_seq), ";rtptime=",
                                 std::to_string(rep->rtp_time)));
    return r;
}

Response RtspServer::handle_pause(Connection& c, const Request& req) {
    int status = 0;
    Session* s = session_of_request(c, req, status);
    if (!s) return error_response(status);
    std::string id = s->id;
    if (auto st = backend_.pause(id); !st) {
        if (st.error().code == ESRCH) end_session(id);
        return backend_error(st.error());
    }
    Response r(200);
    r.header("Session", format_session(id, session_timeout_seconds()));
    return r;
}

Response RtspServer::handle_teardown(Connection& c, const Request& req) {
    int status = 0;
    Session* s = session_of_request(c, req, status);
    if (!s) return error_response(status);
    std::string id = s->id;
    Status st = backend_.teardown(id);
    if (st || st.error().code == ESRCH) {
        end_session(id);
        ++counters_.sessions_torn_down;
    }
    if (!st) return backend_error(st.error());
    return Response(200);
}

Response RtspServer::handle_parameter(Connection& c, const Request& req) {
    int status = 0;
    Session* s = session_for(c, req, false, status);
    if (status) return error_response(status);
    if (s) touch(*s);
    // An empty GET_PARAMETER or SET_PARAMETER is the keepalive ffmpeg and VLC send. No named
    // parameter is offered.
    if (!req.body.empty()) return error_response(451);
    Response r(200);
    if (s) r.header("Session", format_session(s->id, session_timeout_seconds()));
    return r;
}

}  // namespace of::rtsp
