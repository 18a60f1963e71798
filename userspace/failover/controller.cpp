#include "failover/controller.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <sys/ioctl.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <sys/eventfd.h>
#include <sys/prctl.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <future>

#include "common/clock.h"
#include "engine/engine.h"
#include "gate/egress_gate.h"
#include "libfo/libfo.h"
#include "tcp_takeover/repair.h"
#include "tcp_takeover/segment.h"

namespace of::failover {

const char* to_string(FailureReason r) {
    switch (r) {
    case FailureReason::kNone: return "none";
    case FailureReason::kCriticalProcess: return "critical process died";
    case FailureReason::kStreamInterface: return "stream interface down";
    case FailureReason::kDisk: return "disk failure";
    case FailureReason::kSoftware: return "software failure";
    case FailureReason::kOperator: return "operator";
    case FailureReason::kHealth: return "health check failed";
    }
    return "unknown";
}

namespace {

enum class Path { kPrivate, kLan };
constexpr uint64_t kPrebuiltSeqBase = uint64_t(1) << 62;  // above any live sequence number
constexpr int64_t kPrebuiltRefreshNs = 500'000'000;        // stays well inside kMaxClockSkewNs
constexpr int64_t kSyncTimeoutNs = 2'000'000'000;
constexpr int kSyncProbes = 5;                  // clock probes at failover-sync, at most
constexpr int64_t kSyncCleanRttNs = 500'000;    // a round trip this short ends the probing
// A lease a secondary grants ends this long before it could declare the primary failed: covers
// the two servers' clock offset, which failover-sync bounds at 1 ms.
constexpr int64_t kLeaseMarginNs = 2'000'000;
// A takeover is announced to the old primary's gate (the fence) this many times, one per
// heartbeat period: one lost frame must not leave it unfenced.
constexpr int kTakeoverAnnouncements = 10;
// A planned hand-over switches each flow at the first datagram due this long after it starts
// (or 4 detection times, if longer): time for the secondary to rule every flow and acknowledge.
// The primary gives up (and cancels) if the acknowledgements are not in this long before the
// switch, and stands down this long after it, when its last datagram before the switch has left.
constexpr int64_t kHandOverLeadNs = 50'000'000;
constexpr int64_t kHandOverMarginNs = 10'000'000;
// Sessions a secondary could not mirror, remembered for the status (beyond: counted only).
constexpr size_t kMaxUnprotectedListed = 16;

std::string ip_text(in_addr a) {
    char b[INET_ADDRSTRLEN];
    inet_ntop(AF_INET, &a, b, sizeof b);
    return b;
}

fo::FoState fo_of(State s) { return {fo::Type(type_of(s)), fo::State(fostate_of(s))}; }

// Datagrams read from one peer socket per heartbeat period, at most: a flood of forged messages
// then costs the real-time thread a bounded share of its time (the kernel drops the rest), and
// the other path, not flooded, keeps the pair alive.
constexpr int kReceiveBudgetPerPeriod = 64;

// This host's address toward `dst` and the interface that holds it (the route the kernel picks).
Result<std::pair<in_addr, std::string>> local_toward(in_addr dst) {
    int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (s < 0) return errno_error("socket");
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr = dst;
    a.sin_port = htons(9);
    sockaddr_in local{};
    socklen_t len = sizeof local;
    bool ok = connect(s, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0 &&
              getsockname(s, reinterpret_cast<sockaddr*>(&local), &len) == 0;
    int err = errno;
    close(s);
    if (!ok) return errno_error("no route to " + ip_text(dst), err);
    ifaddrs* list = nullptr;
    if (getifaddrs(&list) != 0) return errno_error("getifaddrs");
    std::string ifname;
    for (ifaddrs* i = list; i; i = i->ifa_next)
        if (i->ifa_addr && i->ifa_addr->sa_family == AF_INET &&
            reinterpret_cast<sockaddr_in*>(i->ifa_addr)->sin_addr.s_addr == local.sin_addr.s_addr)
            ifname = i->ifa_name;
    freeifaddrs(list);
    if (ifname.empty()) return make_error(EADDRNOTAVAIL, "no interface holds " + ip_text(local.sin_addr));
    return std::make_pair(local.sin_addr, ifname);
}

// A peer socket bound to one address and interface: what arrives for it on another interface
// (a LAN host sending to the private address: Linux accepts any local address on any interface)
// never reaches it.
Result<int> peer_socket(in_addr addr, uint16_t port, const std::string& ifname) {
    int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) return errno_error("peer socket");
    int one = 1, prio = 6;  // heartbeats first in the host's own queues
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    setsockopt(fd, SOL_SOCKET, SO_PRIORITY, &prio, sizeof prio);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr = addr;
    a.sin_port = htons(port);
    if ((!ifname.empty() && setsockopt(fd, SOL_SOCKET, SO_BINDTODEVICE, ifname.c_str(), socklen_t(ifname.size())) < 0) ||
        bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) < 0) {
        Error e = errno_error("peer socket on " + ip_text(addr) + ":" + std::to_string(port) +
                              (ifname.empty() ? "" : " (" + ifname + ")"));
        close(fd);
        return e;
    }
    return fd;
}

}  // namespace

struct Controller::Impl {
    ControllerOptions opts;
    engine::Engine& engine;
    gate::Gate* gate;
    fo::Backend* backend;

    int sock = -1;      // private path: bound to our private address on its interface (-1 until routable)
    int lan_sock = -1;  // bound to our admin IP: LAN-path messages never leave from the stream IP
    int ctl_fd = -1;    // for interface ioctls
    int wake_fd = -1;
    std::atomic<bool> rebind_private{true};  // (re)bind sock: at start, after the partner changed
    std::atomic<int64_t> next_bind_try{0};
    int budget[2] = {kReceiveBudgetPerPeriod, kReceiveBudgetPerPeriod};  // per path, per period
    std::vector<uint8_t> key_of[2];  // path_key() of each path
    std::thread thread;
    std::atomic<bool> stop{false};
    uint64_t epoch = 0;
    uint64_t seq[2] = {0, 0};
    uint64_t prebuilt_seq = kPrebuiltSeqBase;
    ReplayGuard guard[2];

    // Lock order: mu, then the engine's lock, then send_mu (a leaf). The engine calls
    // replicate() under its own lock, so replicate() takes only send_mu.
    mutable std::mutex mu;
    std::mutex send_mu;  // seq counters, partner addresses, the socket's sends
    std::atomic<uint64_t> sent{0}, send_errors{0};
    std::atomic<State> shared_state{State::kUnconfigured};
    std::function<void(std::vector<RevivedConnection>)> takeover_hook;
    std::function<void(State, State)> state_hook;
    // The hub view of the stream IP's TCP connections (opts.tcp): fed on this thread from the
    // frames the gate's ingress program copies (gate_tcp_frames).
    std::optional<tcp_takeover::HubView> view;
    int frames_fd = -1;
    uint64_t frames_malformed = 0;
    std::atomic<uint64_t> replies_sent{0}, replies_oversized{0};
    int64_t active_since_rt = 0;  // CLOCK_REALTIME when we last started transmitting
    State state = State::kUnconfigured;
    ControllerStatus st;
    std::atomic<int64_t> heard_mono[2] = {0, 0};  // last valid message from the partner, per path
    int64_t partner_ack_mono = 0;     // last ack (primary) or heartbeat (secondary)
    int64_t last_tick_mono = 0;       // the previous primary tick (to tell our own stalls)
    // The latest lease our secondary granted (its CLOCK_REALTIME; 0 none): as Primary we transmit
    // only before it. See apply_lease().
    int64_t granted_rt = 0;
    int64_t applied_permit = INT64_MAX;  // what the streaming threads were last told
    bool pending_snapshot = false;       // [0090] records still to send (the engine was busy)
    std::map<uint64_t, std::pair<uint64_t, int64_t>> progress;  // session -> (next_packet, realtime)
    uint32_t progress_cursor = 0;
    int64_t next_prebuilt_ns = 0;
    bool push_params = false;
    // The split-brain fence (docs/failover.md): as secondary we announce a takeover on the stream
    // LAN with the token of (epoch, fence_gen), which the primary installed in its gate from our
    // acks. fence_gen moves on each time we become Secondary, so a token is announced once.
    uint32_t fence_gen = 0;
    std::optional<std::pair<uint64_t, uint32_t>> installed_token;  // the partner's, in our gate
    std::array<uint8_t, 16> own_token{};
    int announcements_left = 0;
    uint64_t read_failures_seen = 0;  // the engine's failed extent reads already acted on
    // Planned hand-over. As primary: the one in progress, its parts acknowledged so far. As
    // secondary: the flows we ruled PASS_FROM, and when they switch.
    struct HandOverOut {
        uint64_t id = 0;
        std::vector<uint16_t> sizes;  // flows per part
        std::vector<bool> acked;
        bool refused = false;
    };
    std::optional<HandOverOut> handover_out;
    std::condition_variable handover_cv;
    struct HandOverIn {
        uint64_t id = 0;
        int64_t at_ns = 0;
        std::vector<gate::Flow> flows;
    };
    std::optional<HandOverIn> handover_in;

    std::condition_variable heard_cv;  // a message from the partner was accepted (listen_for_partner)
    // Secondary: sessions of the primary we cannot mirror (an asset missing here, a bad record):
    // a takeover would lose them. Session id -> why; bounded by the primary's live sessions.
    std::map<uint64_t, std::string> unprotected;

    // failover_sync in progress
    std::condition_variable sync_cv;
    uint64_t sync_nonce = 0;
    std::optional<Result<SyncReply>> sync_result;

    Impl(ControllerOptions o, engine::Engine& e, gate::Gate* g, fo::Backend* b)
        : opts(std::move(o)), engine(e), gate(g), backend(b) {}

    int64_t period_ns() const { return int64_t(opts.heartbeat_ms) * 1'000'000; }
    int64_t silence_limit_ns() const { return period_ns() * opts.max_missed; }
    bool partner_configured() const { return opts.partner_private || opts.partner_admin; }
    // A secondary declares the primary failed after silence_limit_ns() on both paths, counted
    // from the last message it heard; every lease it grants in an ack ends this much earlier.
    int64_t lease_span_ns() const {
        return silence_limit_ns() - std::min(kLeaseMarginNs, silence_limit_ns() / 3);
    }

    // ---- sending ----
    void send_on(Path p, const Body& body) {
        std::lock_guard sl(send_mu);
        std::optional<in_addr> to = p == Path::kPrivate ? opts.partner_private : opts.partner_admin;
        int fd = p == Path::kPrivate ? sock : lan_sock;
        if (!to || opts.key.empty() || fd < 0) return;
        Message m{epoch, ++seq[int(p)], realtime_ns(), body};
        auto wire = encode(m, key_of[int(p)]);
        if (!wire) {
            ++send_errors;
            return;
        }
        sockaddr_in a{};
        a.sin_family = AF_INET;
        a.sin_addr = *to;
        a.sin_port = htons(opts.peer_port);
        if (sendto(fd, wire->data(), wire->size(), MSG_DONTWAIT, reinterpret_cast<sockaddr*>(&a), sizeof a) < 0)
            ++send_errors;
        else
            ++sent;
    }
    void send_both(const Body& body) {
        send_on(Path::kPrivate, body);
        send_on(Path::kLan, body);
    }

    // ---- state ----
    // Applies an allowed move: the backend first (it is the authority and notifies everyone),
    // then the gate, so that the gate never opens for a state the backend refused.
    Status move_to(State next) {
        if (next == state) return {};
        if (backend) {
            if (auto s = backend->set_state(fo_of(next)); !s) return s;
        }
        State prev = state;
        set_state(next);
        apply_gate(prev);
        return {};
    }
    bool state_is(State s) const { return shared_state.load() == s; }
    void set_state(State s) {
        State before = state;
        if (s == State::kSecondary && before != s) ++fence_gen;
        state = s;
        st.state = s;
        shared_state = s;
        if (state_hook && before != s) state_hook(before, s);
    }
    Result<State> run_event(Event e, bool partner_online) {
        Outcome o = transition(state, e, partner_online);
        if (!o.allowed) return make_error(EBADFD, o.reason);
        if (auto s = move_to(o.next); !s) return s.error();
        return state;
    }
    void apply_gate(State prev) {
        bool was = transmits(prev), now = transmits(state);
        if (now && !was) active_since_rt = realtime_ns();
        if (gate && !now && was) (void)gate->set_role(gate::Role::Standby);
        apply_lease();
        if (gate && now && !was) {
            // The token in our gate was the partner's as secondary; it reinstalls one from its
            // acks when it is secondary again.
            (void)gate->clear_fence_token();
            installed_token.reset();
            (void)gate->set_fence(partner_configured());
            (void)gate->set_role(gate::Role::Active);
        }
    }
    // The lease: a Primary (its secondary online) transmits only inside the lease that secondary
    // granted in its latest heartbeat ack, and the secondary never takes over on silence before
    // that lease has ended (lease_span_ns). So a primary that stalls, hangs or loses its partner
    // stops before the partner can start, whichever side was slow. The gate enforces it against
    // the kernel clock; the streaming threads stop 3 ms short of it and wait, so the gate
    // never has to drop what a live primary meant to send. Alone (Primary_No_Secondary) a primary
    // needs no lease; a server that does not transmit streams on into its closed gate (lockstep).
    void apply_lease() {
        int64_t until = state == State::kPrimary ? granted_rt : INT64_MAX;
        int64_t permit = transmits(state) ? until : INT64_MAX;
        // A shorter permit before the gate's lease, a longer one after it: the gate never
        // refuses what the threads were told they may send (short of a stall, see flush()).
        bool shorter = permit < applied_permit;
        if (shorter) engine.set_send_permit(permit);
        if (gate) {
            if (until == INT64_MAX || !transmits(state)) (void)gate->clear_lease();  // STANDBY drops anyway
            else (void)gate->set_lease_expiry(std::max<int64_t>(1, until - realtime_minus_monotonic_ns()));
        }
        if (!shorter) engine.set_send_permit(permit);
        applied_permit = permit;
    }

    // ---- the thread ----
    void run() {
        prctl(PR_SET_TIMERSLACK, 1UL);
        pthread_setname_np(pthread_self(), "of-failover");
        int64_t next_tick = monotonic_ns();
        while (!stop.load()) {
            int64_t now = monotonic_ns();
            if (rebind_private.load() && now >= next_bind_try) bind_private(now);
            int64_t wake = next_tick;
            if (state_is(State::kSecondary)) {
                // Wake exactly when the partner's silence reaches the limit, not at the next tick.
                int64_t deadline = std::max(heard_mono[0], heard_mono[1]) + silence_limit_ns() + 1;
                if (deadline > now) wake = std::min(wake, deadline);
            }
            int64_t wait = std::max<int64_t>(0, wake - now);
            // A path that spent its budget this period is not read until the next one.
            pollfd fds[5] = {{budget[0] > 0 ? sock : -1, POLLIN, 0}, {wake_fd, POLLIN, 0},
                             {budget[1] > 0 ? lan_sock : -1, POLLIN, 0},
                             {backend ? backend->notify_fd() : -1, POLLIN, 0}, {frames_fd, POLLIN, 0}};
            timespec ts = ns_to_timespec(wait);
            int n = ppoll(fds, 5, &ts, nullptr);  // negative fds are ignored
            if (n > 0 && (fds[1].revents & POLLIN)) {
                uint64_t v;
                (void)!read(wake_fd, &v, sizeof v);
            }
            if (n > 0 && (fds[0].revents & POLLIN)) receive(sock, budget[0]);
            if (n > 0 && (fds[2].revents & POLLIN)) receive(lan_sock, budget[1]);
            if (n > 0 && (fds[3].revents & POLLIN)) (void)backend->dispatch();
            if (n > 0 && (fds[4].revents & POLLIN)) {
                std::lock_guard lk(mu);
                pump_frames();
            }
            now = monotonic_ns();
            if (now >= next_tick) {
                budget[0] = budget[1] = kReceiveBudgetPerPeriod;
                tick(now);
                next_tick += period_ns();
                if (next_tick < now) next_tick = now + period_ns();  // we were stalled: do not burst
            } else if (state_is(State::kSecondary)) {
                std::lock_guard lk(mu);
                if (state == State::kSecondary) tick_secondary(now);
            }
        }
    }

    // Reads what waits on one peer socket, within the path's budget for this period.
    void receive(int fd, int& left) {
        uint8_t buf[kPeerMaxDatagram + 1];
        while (left > 0) {
            sockaddr_in from{};
            socklen_t fl = sizeof from;
            ssize_t n = recvfrom(fd, buf, sizeof buf, MSG_DONTWAIT, reinterpret_cast<sockaddr*>(&from), &fl);
            if (n < 0) return;
            --left;
            handle_datagram(std::span<const uint8_t>(buf, size_t(n)), from);
        }
    }

    // The private path's socket, on our address toward the partner's private address. Retried
    // every second while there is no route (the private link may come up later).
    void bind_private(int64_t now) {
        std::lock_guard lk(mu);
        std::lock_guard sl(send_mu);
        if (sock >= 0) close(sock);
        sock = -1;
        if (!opts.partner_private) {
            rebind_private = false;
            return;
        }
        auto local = local_toward(*opts.partner_private);
        auto fd = local ? peer_socket(local->first, opts.peer_port, local->second) : Result<int>(local.error());
        if (!fd) {
            st.last_error = "private path: " + fd.error().message + " (retrying)";
            next_bind_try = now + 1'000'000'000;
            return;
        }
        sock = *fd;
        rebind_private = false;
    }

    void handle_datagram(std::span<const uint8_t> d, const sockaddr_in& from) {
        std::unique_lock lk(mu);
        // The source first: a datagram from anyone but the partner costs no HMAC.
        Path p;
        if (opts.partner_private && from.sin_addr.s_addr == opts.partner_private->s_addr) p = Path::kPrivate;
        else if (opts.partner_admin && from.sin_addr.s_addr == opts.partner_admin->s_addr) p = Path::kLan;
        else {
            ++st.peer.wrong_source;
            return;
        }
        if (opts.key.empty()) return;
        auto m = decode(d, key_of[int(p)]);
        if (!m) {
            if (m.error().code == EPERM) ++st.peer.bad_auth;
            else ++st.peer.malformed;
            return;
        }
        // Our own message sent back to us (its source forged to be the partner's): refused.
        if (m->epoch == epoch) {
            ++st.peer.reflected;
            return;
        }
        switch (guard[int(p)].check(*m, realtime_ns())) {
        case ReplayGuard::Verdict::kAccept: break;
        case ReplayGuard::Verdict::kReplay: ++st.peer.replayed; return;
        case ReplayGuard::Verdict::kStale: ++st.peer.stale; return;
        case ReplayGuard::Verdict::kClockSkew: ++st.peer.clock_skew; return;
        }
        ++st.peer.received;
        int64_t now = monotonic_ns();
        heard_mono[int(p)] = now;
        std::visit([&](auto& body) { on_message(body, p, *m, now, lk); }, m->body);
        heard_cv.notify_all();
    }

    void on_message(const Heartbeat& hb, Path p, const Message&, int64_t now, std::unique_lock<std::mutex>&) {
        ++st.heartbeats_received;
        int64_t rt = realtime_ns();
        st.last_heartbeat_ns = rt;
        (p == Path::kPrivate ? st.last_heartbeat_private_ns : st.last_heartbeat_lan_ns) = rt;
        partner_ack_mono = now;
        State ps = hb.state < kStateCount ? State(hb.state) : State::kUnconfigured;
        st.partner_state = ps;
        for (auto& pr : hb.progress) progress[pr.session] = {pr.next_packet, rt};
        if (transmits(state) && transmits(ps)) {
            // Two transmitters (a primary woke up after we took over, or the other way round).
            // The order carries when we became active; only the later one prevails (below).
            send_on(p, StopOrder{uint64_t(active_since_rt)});
            return;
        }
        bool partner_streaming = transmits(ps);
        if (state == State::kSecondaryNoPrimary && partner_streaming) partner_event(Event::kPartnerOnline);
        else if (state == State::kSecondary && !partner_streaming) partner_event(Event::kPartnerOffline);
        // Grant the primary a lease that ends before we could take over on silence, timed from
        // the moment we heard this heartbeat (our takeover deadline counts from it too), not from
        // now, which partner_event() may have delayed. Only a Secondary can take over, so only a
        // Secondary grants one.
        uint64_t lease =
            state == State::kSecondary ? uint64_t(now + realtime_minus_monotonic_ns() + lease_span_ns()) : 0;
        send_on(p, HeartbeatAck{uint8_t(state), lease, fence_gen});
    }

    void on_message(const HeartbeatAck& a, Path, const Message& m, int64_t now, std::unique_lock<std::mutex>&) {
        State ps = a.state < kStateCount ? State(a.state) : State::kUnconfigured;
        bool was_online = st.partner_state && online(*st.partner_state);
        st.partner_state = ps;
        if (ps == State::kSecondary && transmits(state)) install_partner_token(m.epoch, a.fence_gen);
        if (ps == State::kSecondary) {
            // Bounded: no secondary grants more than its detection time from now.
            int64_t lease = int64_t(std::min<uint64_t>(a.lease_until_ns, uint64_t(realtime_ns() + silence_limit_ns())));
            if (lease > granted_rt) {
                granted_rt = lease;
                if (state == State::kPrimary) apply_lease();  // else when we become Primary (below)
            }
        }
        // Only a Secondary's acks keep us Primary: one that left Secondary (stop-streaming, a
        // local failure) still acks, but grants no lease, and without one we could not send.
        if (ps == State::kSecondary) partner_ack_mono = now;
        if (state == State::kPrimary && ps != State::kSecondary) partner_event(Event::kPartnerOffline);
        if (state == State::kPrimaryNoSecondary && ps == State::kSecondary && granted_rt > realtime_ns())
            partner_event(Event::kPartnerOnline);
        if (transmits(state) && online(ps) && !was_online) pending_snapshot = true;
        send_pending_snapshot();
    }
    // The token our secondary will announce a takeover with: only it arms our gate's fence.
    void install_partner_token(uint64_t partner_epoch, uint32_t gen) {
        if (!gate || opts.key.empty() || !opts.admin_ip) return;
        auto id = std::make_pair(partner_epoch, gen);
        if (installed_token == id) return;
        auto t = fence_token(opts.key, partner_epoch, gen);
        if (auto s = gate->set_fence_token(t, *opts.admin_ip, opts.peer_port); !s) {
            st.last_error = "fence token: " + s.error().message;
            return;
        }
        installed_token = id;
    }
    // Our takeover, told to the old primary's gate through the hub: from the stream IP to its
    // admin address on the stream LAN, carrying the token it installed. Sent on the LAN socket
    // with the stream IP as the source (IP_PKTINFO), a few times in case one is lost.
    void announce_takeover() {
        if (announcements_left <= 0 || lan_sock < 0 || !opts.partner_admin || !opts.stream_ip) return;
        --announcements_left;
        sockaddr_in to{};
        to.sin_family = AF_INET;
        to.sin_addr = *opts.partner_admin;
        to.sin_port = htons(opts.peer_port);
        alignas(cmsghdr) char cbuf[CMSG_SPACE(sizeof(in_pktinfo))] = {};
        iovec iov{own_token.data(), own_token.size()};
        msghdr mh{};
        mh.msg_name = &to;
        mh.msg_namelen = sizeof to;
        mh.msg_iov = &iov;
        mh.msg_iovlen = 1;
        mh.msg_control = cbuf;
        mh.msg_controllen = sizeof cbuf;
        cmsghdr* c = CMSG_FIRSTHDR(&mh);
        c->cmsg_level = IPPROTO_IP;
        c->cmsg_type = IP_PKTINFO;
        c->cmsg_len = CMSG_LEN(sizeof(in_pktinfo));
        in_pktinfo pi{};
        pi.ipi_spec_dst = *opts.stream_ip;
        std::memcpy(CMSG_DATA(c), &pi, sizeof pi);
        std::lock_guard sl(send_mu);
        if (sendmsg(lan_sock, &mh, MSG_DONTWAIT) < 0) ++send_errors;
        else ++st.announcements_sent;
    }

    // [0090]: a secondary that comes online starts every running session. Never waits for the
    // engine (Engine::try_snapshot); if it is busy, the next tick tries again.
    void send_pending_snapshot() {
        if (!pending_snapshot || !transmits(state)) return;
        auto snap = engine.try_snapshot();
        if (!snap) return;
        pending_snapshot = false;
        for (auto& r : *snap) send_both(r);
    }

    // Secondary: rule the flows of one part PASS_FROM their switch point, or none of them if we
    // do not run every one (the primary then cancels).
    void on_message(const HandOver& h, Path p, const Message&, int64_t, std::unique_lock<std::mutex>&) {
        if (state != State::kSecondary || !gate) return;
        if (!handover_in || handover_in->id != h.id) {
            forget_handover();
            handover_in = HandOverIn{h.id, h.at_ns, {}};
        }
        auto flows = engine.flows();
        std::vector<gate::Flow> ruled;
        bool all = true;
        for (auto& e : h.entries) {
            bool runs = std::any_of(flows.begin(), flows.end(), [&](const engine::Engine::Flow& f) {
                return f.rtp && f.client.s_addr == e.client.s_addr && f.port == e.port;
            });
            gate::Flow gf{e.client, e.port};
            if (!runs || !gate->set_flow_rule(gf, gate::Rule::PassFrom, e.seq)) {
                all = false;
                break;
            }
            ruled.push_back(gf);
        }
        if (!all) {
            for (auto& f : ruled) (void)gate->clear_flow_rule(f);
            ruled.clear();
        }
        handover_in->flows.insert(handover_in->flows.end(), ruled.begin(), ruled.end());
        send_on(p, HandOverAck{h.id, h.part, uint16_t(ruled.size())});
    }
    void on_message(const HandOverCancel& c, Path, const Message&, int64_t, std::unique_lock<std::mutex>&) {
        if (handover_in && handover_in->id == c.id) forget_handover();
    }
    void forget_handover() {
        if (handover_in && gate)
            for (auto& f : handover_in->flows) (void)gate->clear_flow_rule(f);
        handover_in.reset();
    }
    // Primary: a part acknowledged (on either path; the first answer counts).
    void on_message(const HandOverAck& a, Path, const Message&, int64_t, std::unique_lock<std::mutex>&) {
        if (!handover_out || handover_out->id != a.id || a.part >= handover_out->sizes.size()) return;
        if (handover_out->acked[a.part]) return;
        handover_out->acked[a.part] = true;
        if (a.accepted != handover_out->sizes[a.part]) handover_out->refused = true;
        handover_cv.notify_all();
    }

    void on_message(const FailoverNotice& f, Path, const Message&, int64_t, std::unique_lock<std::mutex>&) {
        if (state == State::kSecondary)
            takeover(std::string("failover message: ") + f.detail);
    }

    void on_message(const StopOrder& o, Path, const Message&, int64_t, std::unique_lock<std::mutex>&) {
        // Only a partner that became active after us may stop us: a stale primary waking up
        // after a takeover must not stop the server that replaced it.
        if (transmits(state) && int64_t(o.takeover_ns) <= active_since_rt) return;
        if (transmits(state) || state == State::kFailed) {
            bool stopped = transmits(state);  // a failed server keeps why it failed
            (void)run_event(Event::kStopOrdered, false);
            if (stopped) st.last_error = "stopped by the partner, which took over";
        }
    }

    void on_message(const SessionRecord& r, Path, const Message&, int64_t, std::unique_lock<std::mutex>& lk) {
        if (state != State::kSecondary && state != State::kSecondaryNoPrimary) return;
        apply_record(r, lk);
    }

    // An RTSP answer of the primary: its decisions first, then the answer for the hub view, which
    // is brought up to date first so that the answer finds its connection.
    void on_message(const ConnReply& r, Path, const Message&, int64_t, std::unique_lock<std::mutex>& lk) {
        if (state != State::kSecondary && state != State::kSecondaryNoPrimary) return;
        for (auto& rec : r.records) apply_record(rec, lk);
        if (!view) return;
        pump_frames();
        view->add_reply({{r.client_ip, r.client_port}, r.request_end, r.response_start, r.response});
    }

    // Reads the frames the gate copied into the hub view. Called with mu held, on the controller
    // thread. Only a standby sees both directions on the hub; a transmitting server's own segments
    // are outgoing, so there the view would only pile up half-known connections: drained, not kept.
    void pump_frames() {
        if (!view || !gate) return;
        bool keep = !transmits(state);
        auto n = gate->drain_tcp_frames([&](std::span<const uint8_t> f, int64_t seen_ns) {
            if (!keep) return;
            // The kernel checked or made the checksum (it is not visible here): not verified.
            auto seg = tcp_takeover::parse_frame(f, false);
            if (seg) view->add(*seg, seen_ns);
            else if (seg.error().code != ENOENT) ++frames_malformed;
        });
        if (!n) st.last_error = "TCP frames: " + n.error().message;
    }

    void apply_record(const SessionRecord& r, std::unique_lock<std::mutex>& lk) {
        if (gate && r.op == SessionOp::kSetup) (void)gate->forget_seen({r.client_ip, r.client_port});
        if (r.op == SessionOp::kTeardown) {
            progress.erase(r.session);  // bounded by live sessions
            unprotected.erase(r.session);
        }
        lk.unlock();  // the engine talks to streaming threads; never hold our lock across that
        auto s = engine.apply(r);
        lk.lock();
        // Records travel on both paths: the second copy of a setup finds the session there
        // (EEXIST), of a pause or teardown finds it gone (ESRCH). Both are the same decision.
        if (!s && s.error().code != EEXIST && s.error().code != ESRCH) {
            st.last_error = "replicated session: " + s.error().message;
            if (r.op != SessionOp::kTeardown && unprotected.size() < 65536)
                unprotected[r.session] = r.asset + ": " + s.error().message;
        }
    }
    // [0083] the primary's heartbeat settings, carried by a sync: the running pair's timing.
    void adopt_heartbeat(const std::vector<std::pair<std::string, std::string>>& params) {
        uint32_t hb = opts.heartbeat_ms, missed = opts.max_missed;
        for (auto& [k, v] : params) {
            if (k == "failover_heartbeat_freq_ms") hb = uint32_t(std::strtoul(v.c_str(), nullptr, 10));
            if (k == "max_missed_heartbeats") missed = uint32_t(std::strtoul(v.c_str(), nullptr, 10));
        }
        if (auto s = check_heartbeat_settings(hb, missed); !s) {
            st.last_error = "primary's heartbeat settings: " + s.error().message;
            return;
        }
        opts.heartbeat_ms = hb;
        opts.max_missed = missed;
    }

    void on_message(const SyncRequest& q, Path p, const Message&, int64_t, std::unique_lock<std::mutex>&) {
        if (type_of(state) != FOTYPE_MASTER) return;
        SyncReply r{q.nonce, realtime_ns(), opts.sync_params ? opts.sync_params() : decltype(SyncReply::params){}};
        send_on(p, r);
    }

    void on_message(const SyncReply& r, Path, const Message&, int64_t, std::unique_lock<std::mutex>& lk) {
        if (r.nonce != 0 && r.nonce == sync_nonce) {
            sync_result = r;
            sync_cv.notify_all();
            return;
        }
        // A change pushed by an online primary ([0083]: later changes reach the secondary).
        if (r.nonce == 0 && type_of(state) == FOTYPE_SLAVE && state != State::kSecondaryOffline && opts.apply_sync) {
            lk.unlock();
            auto s = opts.apply_sync(r.params);
            lk.lock();
            if (!s) st.last_error = "pushed parameters: " + s.error().message;
            else adopt_heartbeat(r.params);
        }
    }

    void partner_event(Event e) {
        Outcome o = transition(state, e, true);
        if (o.allowed) (void)move_to(o.next);
    }

    void tick(int64_t now) {
        std::unique_lock lk(mu);
        watch_disk();
        if (transmits(state)) tick_primary(now);
        else if (state == State::kSecondary) tick_secondary(now);
        if (push_params && state == State::kPrimary) {
            push_params = false;
            send_on(Path::kPrivate, SyncReply{0, realtime_ns(), opts.sync_params ? opts.sync_params() : decltype(SyncReply::params){}});
        }
    }

    void tick_primary(int64_t now) {
        if (gate) {
            auto tripped = gate->fence_tripped();
            if (tripped && *tripped) {
                // The partner has transmitted since we became active: it took over while we
                // were away. Our gate already drops; make the state say so.
                (void)run_event(Event::kStopOrdered, false);
                st.last_error = "fenced: the partner transmits on the stream IP";
                return;
            }
        }
        // A tick that comes late means this thread (or all of us) was stalled: the partner's acks
        // may be missing because our heartbeats were, so give it one period to answer.
        bool we_stalled = last_tick_mono != 0 && now - last_tick_mono > 2 * period_ns();
        last_tick_mono = now;
        if (!opts.stream_interface.empty() && !link_up(opts.stream_interface)) {
            fail_locally(FailureReason::kStreamInterface, opts.stream_interface + " is down");
            return;
        }
        if (!partner_configured()) return;
        Heartbeat hb;
        hb.state = uint8_t(state);
        // Never wait for the engine here (see Engine::try_snapshot): if it is busy, this heartbeat
        // carries no progress; the next one will.
        std::vector<Progress> prog;
        if (auto p = engine.try_progress()) prog = std::move(*p);
        hb.sessions = uint32_t(prog.size());
        if (!prog.empty()) {
            size_t from = progress_cursor % prog.size();
            hb.progress_offset = uint32_t(from);
            for (size_t i = 0; i < std::min(prog.size(), kMaxProgressEntries); ++i)
                hb.progress.push_back(prog[(from + i) % prog.size()]);
            progress_cursor = uint32_t((from + hb.progress.size()) % prog.size());
        }
        send_both(hb);
        ++st.heartbeats_sent;
        announce_takeover();
        if (state == State::kPrimary && !we_stalled && now - partner_ack_mono > silence_limit_ns())
            partner_event(Event::kPartnerOffline);
        send_pending_snapshot();
        refresh_prebuilt();
    }

    void tick_secondary(int64_t now) {
        int64_t quiet_private = now - heard_mono[0], quiet_lan = now - heard_mono[1];
        if (quiet_private > silence_limit_ns() && quiet_lan > silence_limit_ns()) {
            char why[160];
            snprintf(why, sizeof why, "missed %u heartbeats on both paths (private silent %.1f ms, LAN silent %.1f ms)",
                     opts.max_missed, double(quiet_private) / 1e6, double(quiet_lan) / 1e6);
            takeover(why);
        }
    }

    // [0095] disk failure: an extent read failed (the engine failed that session). A Primary fails
    // over, so that the secondary, reading its own copy in lockstep, carries every session on; a
    // Secondary can no longer protect the primary's sessions and says so by failing (its acks then
    // make the primary Primary_No_Secondary). Alone, the failed session is all there is to it.
    void watch_disk() {
        auto [n, err] = engine.read_failures();
        if (n == read_failures_seen) return;
        read_failures_seen = n;
        (void)report_failure(FailureReason::kDisk, std::string("extent read failed: ") + std::strerror(err ? err : EIO));
    }

    Result<State> report_failure(FailureReason reason, const std::string& detail) {
        if (state == State::kFailed || state == State::kSecondaryFailed || state == State::kUnconfiguredFailed)
            return state;  // a failed server keeps why it failed
        if (state == State::kPrimary) {
            fail_locally(reason, detail);
            return state;
        }
        if (type_of(state) == FOTYPE_SLAVE) {
            auto r = run_event(Event::kLocalFailure, false);
            if (r) st.last_error = "local failure: " + detail + " (cannot protect the primary's sessions)";
            return r;
        }
        // Primary_No_Secondary, a standalone server (Unconfigured), Primary_Offline: nobody to
        // take over; failing would only stop whatever this server still serves.
        st.last_error = std::string(to_string(reason)) + ": " + detail + " (no partner to take over" +
                        (state == State::kPrimaryOffline ? ")" : ": serving on)");
        return make_error(EBUSY, st.last_error);
    }

    // Carrier on the stream interface, asked through a socket so that it reads this network
    // namespace (sysfs may show another one's).
    bool link_up(const std::string& ifname) const {
        ifreq ifr{};
        std::strncpy(ifr.ifr_name, ifname.c_str(), IFNAMSIZ - 1);
        if (ioctl(ctl_fd, SIOCGIFFLAGS, &ifr) != 0) return false;
        return (ifr.ifr_flags & IFF_UP) && (ifr.ifr_flags & IFF_RUNNING);
    }

    void fail_locally(FailureReason reason, const std::string& detail) {
        if (!transmits(state) && state != State::kPrimaryOffline) return;
        // Close our gate first: the partner takes over the moment the notice arrives. Closed
        // even if the backend refused the state change: this server is failing either way.
        if (!run_event(Event::kLocalFailure, false) && gate) (void)gate->set_role(gate::Role::Standby);
        send_both(FailoverNotice{uint8_t(reason), detail});
        st.last_error = std::string("local failure: ") + detail;
    }

    // The message the backend sends for us if this process dies ([0094]). Re-signed often so
    // that its timestamp passes the partner's clock check whenever it goes out.
    void refresh_prebuilt() {
        if (!backend || !opts.partner_private || opts.key.empty()) return;
        int64_t now = realtime_ns();
        if (now < next_prebuilt_ns) return;
        next_prebuilt_ns = now + kPrebuiltRefreshNs;
        Message m{epoch, ++prebuilt_seq, now, FailoverNotice{uint8_t(FailureReason::kCriticalProcess), "oneframed died"}};
        auto wire = encode(m, key_of[int(Path::kPrivate)]);  // the holder sends it on the private path
        if (!wire) return;
        fo::FailoverMessage fm;
        fm.dest.sin_family = AF_INET;
        fm.dest.sin_addr = *opts.partner_private;
        fm.dest.sin_port = htons(opts.peer_port);
        // No source port: our own socket holds peer_port while we live. The partner checks the
        // source address and the tag, not the port.
        fm.payload = std::move(*wire);
        if (auto s = backend->set_message(fm); !s) st.last_error = "prebuilt failover message: " + s.error().message;
    }

    // Seed 004 [0097]: the secondary becomes the primary, from the first packet the old primary
    // did not put on the wire. Order matters: hold every sender, rewind each session to its
    // resume point, open the gate, release. Nothing can leave between the rewind and the open
    // gate (it would be dropped), and nothing later than a resume point can overtake it.
    void takeover(const std::string& cause) {
        int64_t detected = realtime_ns();
        Outcome o = transition(state, Event::kPartnerFailed, false);
        if (!o.allowed) return;
        (void)engine.hold_all(true);
        int64_t mono_to_real = realtime_minus_monotonic_ns();
        // Flows of a planned hand-over whose switch has passed are ours already, to the datagram
        // (PASS_FROM): nothing to resume. Before the switch (the primary failed on the way) they
        // resume like any other.
        bool switched = handover_in && detected > handover_in->at_ns;
        auto handed_over = [&](const engine::Engine::Flow& f) {
            return switched && std::any_of(handover_in->flows.begin(), handover_in->flows.end(), [&](const gate::Flow& g) {
                       return g.client.s_addr == f.client.s_addr && g.port == f.port;
                   });
        };
        for (auto& f : engine.flows()) {
            if (handed_over(f)) {
                ++st.sessions_handed_over;
                continue;
            }
            // What the hub showed is what the client got (the old primary's frames reach the
            // client and us through the same hub), to the datagram, unless our own receive path
            // dropped some of them under load (then the client gets those twice).
            std::optional<uint64_t> from;
            if (gate) {
                auto seen = gate->seen({f.client, f.port});
                if (seen && seen->last_ns + mono_to_real >= f.segment.start_time_ns)
                    from = seen->rtp ? engine.packet_after_seq(f.session, seen->high_seq)
                                     : engine.packet_after_time(f.session, seen->last_ns + mono_to_real);
            }
            // The heartbeat's progress counts datagrams the old primary produced, not what reached
            // the wire (a stream link going down swallows the last ones): it is only the fallback.
            if (from) {
                ++st.sessions_resumed_from_hub;
            } else if (auto pr = progress.find(f.session);
                       pr != progress.end() && pr->second.first >= f.segment.start_packet) {
                from = pr->second.first;
                ++st.sessions_resumed_from_heartbeat;
            }
            if (from) (void)engine.resume_from(f.session, *from);
        }
        // The TCP connections, before the gate opens: from then on a client segment that found no
        // socket here would be answered with an RST that leaves.
        std::vector<RevivedConnection> revived = revive_connections();
        State prev = state;
        set_state(o.next);
        apply_gate(prev);  // the gate opens now; the backend learns next (a round trip)
        int64_t opened = realtime_ns();
        forget_handover();  // ACTIVE passes those flows now
        (void)engine.hold_all(false);
        if (backend) {
            if (auto s = backend->set_state(fo_of(o.next)); !s) st.last_error = "takeover: backend: " + s.error().message;
        }
        st.takeovers++;
        st.last_detection_ns = detected;
        st.last_takeover_ns = opened;
        st.last_takeover_cause = cause;
        send_both(StopOrder{uint64_t(active_since_rt)});
        if (!opts.key.empty()) {
            own_token = fence_token(opts.key, epoch, fence_gen);
            announcements_left = kTakeoverAnnouncements;
            announce_takeover();
        }
        if (takeover_hook) takeover_hook(std::move(revived));
        else
            for (auto& r : revived) tcp_takeover::close_silently(r.fd);
    }

    // Revives every connection the hub view can (repair.h) and holds it in the gate. What cannot
    // be revived is counted, with the last reason.
    std::vector<RevivedConnection> revive_connections() {
        std::vector<RevivedConnection> out;
        if (!view) return out;
        pump_frames();
        auto plan = view->plan(monotonic_ns());
        for (auto& r : plan.revive) {
            auto fd = tcp_takeover::revive(r);
            if (!fd) {
                ++st.connections_lost;
                st.last_connection_lost = fd.error().message;
                continue;
            }
            if (gate) (void)gate->hold_tcp({r.key.client, r.key.port});
            view->forget(r.key);
            ++st.connections_revived;
            out.push_back({*fd, std::move(r)});
        }
        for (auto& [k, why] : plan.lost) {
            ++st.connections_lost;
            st.last_connection_lost = tcp_takeover::to_string(k) + ": " + why;
        }
        view->clear();  // from now on this server serves them; a later standby watches afresh
        return out;
    }
};

Controller::Controller(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

Controller::~Controller() {
    impl_->stop = true;
    uint64_t one = 1;
    (void)!write(impl_->wake_fd, &one, sizeof one);
    if (impl_->thread.joinable()) impl_->thread.join();
    if (impl_->sock >= 0) close(impl_->sock);
    if (impl_->lan_sock >= 0) close(impl_->lan_sock);
    if (impl_->ctl_fd >= 0) close(impl_->ctl_fd);
    if (impl_->wake_fd >= 0) close(impl_->wake_fd);
}

Status check_heartbeat_settings(uint32_t heartbeat_ms, uint32_t max_missed) {
    if (heartbeat_ms < 1 || heartbeat_ms > kMaxHeartbeatMs)
        return make_error(EINVAL, "heartbeat period must be 1.." + std::to_string(kMaxHeartbeatMs) + " ms");
    if (max_missed < 1 || max_missed > kMaxMissedHeartbeats)
        return make_error(EINVAL, "max missed heartbeats must be 1.." + std::to_string(kMaxMissedHeartbeats));
    if (uint64_t(max_missed - 1) * heartbeat_ms < kMinDetectionSlackMs)
        return make_error(EINVAL, "detection time (heartbeat period x max missed) must exceed one period by " +
                                      std::to_string(kMinDetectionSlackMs) + " ms or more, for the primary's lease: got " +
                                      std::to_string(heartbeat_ms) + " ms x " + std::to_string(max_missed));
    return {};
}

Result<std::unique_ptr<Controller>> Controller::create(ControllerOptions options, engine::Engine& engine,
                                                        gate::Gate* gate, fo::Backend* backend) {
    if (auto s = check_heartbeat_settings(options.heartbeat_ms, options.max_missed); !s) return s.error();
    if (!options.key.empty() && (options.key.size() < kMinKeyBytes || options.key.size() > kMaxKeyBytes))
        return make_error(EINVAL, "peer key must be 16..64 bytes");
    auto impl = std::make_unique<Impl>(std::move(options), engine, gate, backend);
    if (getrandom(&impl->epoch, sizeof impl->epoch, 0) != sizeof impl->epoch) impl->epoch = uint64_t(realtime_ns());

    if (!impl->opts.key.empty())
        for (Path p : {Path::kPrivate, Path::kLan})
            impl->key_of[int(p)] = path_key(impl->opts.key, p == Path::kPrivate ? PeerPath::kPrivate : PeerPath::kLan);
    impl->ctl_fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (impl->ctl_fd < 0) return errno_error("control socket");
    // The private path's socket is bound by the controller's thread (bind_private): its address is
    // our route toward the partner, which set_config_type may change and which a link that is down
    // at start does not have yet. The stream LAN's is on our admin address, on the stream interface.
    if (impl->opts.admin_ip) {
        auto fd = peer_socket(*impl->opts.admin_ip, impl->opts.peer_port, impl->opts.stream_interface);
        if (!fd) return make_error(fd.error().code, "stream LAN path: " + fd.error().message);
        impl->lan_sock = *fd;
    }
    impl->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (impl->wake_fd < 0) return errno_error("eventfd");
    if (impl->opts.tcp) {
        // The gate must have been attached with the service's port (AttachOptions::tcp_port).
        if (!gate) return make_error(EINVAL, "TCP takeover needs the egress gate");
        auto fd = gate->tcp_frames_fd();
        if (!fd) return make_error(fd.error().code, "TCP takeover: " + fd.error().message);
        impl->frames_fd = *fd;
        impl->view.emplace(*impl->opts.tcp);
    }

    // Adopt what the backend holds (the kernel keeps the state across daemon restarts).
    if (backend) {
        auto s = backend->status();
        if (s) {
            auto known = state_of(fo_type(s->now.type), fo_state(s->now.state));
            impl->set_state(known.value_or(State::kUnconfigured));
        }
    }
    impl->st.partner_configured = impl->partner_configured();
    // A re-attached gate keeps its last role: make it say what the state says, no more.
    if (gate) {
        if (auto s = gate->set_role(transmits(impl->state) ? gate::Role::Active : gate::Role::Standby); !s)
            return make_error(s.error().code, "egress gate: " + s.error().message);
        if (!transmits(impl->state)) (void)gate->clear_flow_rules();
    }
    impl->apply_lease();
    impl->read_failures_seen = engine.read_failures().first;  // failures before us are not ours to act on
    Impl* raw = impl.get();
    if (backend) {
        // The backend may change the state on its own (a critical process died): follow it.
        auto reg = backend->register_notify([raw](const fo::Change&) {
            std::lock_guard lk(raw->mu);
            // Notifications of our own moves arrive after them: one says a state we have left
            // already. What counts is where the backend is now (read under mu, so never in the
            // middle of one of our moves): different from ours only when someone else moved it.
            auto cur = raw->backend->status();
            if (!cur) return;
            auto known = state_of(fo_type(cur->now.type), fo_state(cur->now.state));
            if (!known || *known == raw->state) return;
            State prev = raw->state;
            raw->set_state(*known);
            raw->apply_gate(prev);
        });
        if (!reg) return make_error(reg.error().code, "failover backend notifications: " + reg.error().message);
    }
    std::promise<Status> ready;
    auto started = ready.get_future();
    impl->thread = std::thread([raw, &ready] {
        if (raw->opts.rt_priority > 0) {
            sched_param sp{};
            sp.sched_priority = raw->opts.rt_priority;
            if (int rc = pthread_setschedparam(pthread_self(), SCHED_FIFO, &sp); rc != 0) {
                ready.set_value(errno_error("failover thread: SCHED_FIFO", rc));
                return;
            }
        }
        ready.set_value(Status{});
        raw->run();
    });
    if (auto s = started.get(); !s) {
        impl->thread.join();
        return s.error();
    }
    return std::unique_ptr<Controller>(new Controller(std::move(impl)));
}

Result<State> Controller::set_config_type(bool primary, const TypeSettings& t) {
    std::lock_guard lk(impl_->mu);
    Outcome o = transition(impl_->state, primary ? Event::kSetConfigPrimary : Event::kSetConfigSecondary, false);
    if (!o.allowed) return make_error(EBADFD, o.reason);
    if (auto s = check_heartbeat_settings(t.heartbeat_ms.value_or(impl_->opts.heartbeat_ms),
                                          t.max_missed.value_or(impl_->opts.max_missed)); !s)
        return s.error();
    if (!primary && !t.partner_private && !impl_->opts.partner_private)
        return make_error(EINVAL, "a secondary needs its primary's private address ([0081])");
    if ((t.partner_private || t.partner_admin || impl_->partner_configured()) && impl_->opts.key.empty())
        return make_error(EINVAL, "a failover pair needs a peer key (peer_key_file in the config)");
    if (auto s = impl_->move_to(o.next); !s) return s.error();
    std::lock_guard sl(impl_->send_mu);
    if (t.partner_private) {
        impl_->opts.partner_private = t.partner_private;
        impl_->rebind_private = true;  // the controller's thread binds toward the new partner
        impl_->next_bind_try = 0;
    }
    if (t.partner_admin) impl_->opts.partner_admin = t.partner_admin;
    if (t.heartbeat_ms) impl_->opts.heartbeat_ms = *t.heartbeat_ms;
    if (t.max_missed) impl_->opts.max_missed = *t.max_missed;
    impl_->st.partner_configured = impl_->partner_configured();
    impl_->guard[0] = ReplayGuard{};
    impl_->guard[1] = ReplayGuard{};
    return impl_->state;
}

Result<State> Controller::start_streaming() {
    std::lock_guard lk(impl_->mu);
    // The partner counts as online if it spoke within the detection window.
    bool partner = impl_->partner_configured() &&
                   monotonic_ns() - impl_->partner_ack_mono <= impl_->silence_limit_ns() &&
                   impl_->st.partner_state &&
                   (type_of(impl_->state) == FOTYPE_MASTER ? online(*impl_->st.partner_state)
                                                           : transmits(*impl_->st.partner_state));
    return impl_->run_event(Event::kStartStreaming, partner);
}

std::optional<State> Controller::listen_for_partner(std::chrono::milliseconds wait) {
    std::unique_lock lk(impl_->mu);
    const int64_t since = monotonic_ns();
    auto heard = [&] {
        return std::max(impl_->heard_mono[0].load(), impl_->heard_mono[1].load()) >= since && impl_->st.partner_state;
    };
    if (!impl_->partner_configured() || !impl_->heard_cv.wait_for(lk, wait, heard)) return std::nullopt;
    return impl_->st.partner_state;
}

std::chrono::milliseconds Controller::join_listen_time() const {
    std::lock_guard lk(impl_->mu);
    // Long enough for the private path's socket to be bound and several heartbeats to arrive.
    return std::max(std::chrono::milliseconds(500),
                    std::chrono::milliseconds(4 * impl_->silence_limit_ns() / 1'000'000));
}

Result<State> Controller::stop_streaming() {
    if (state_is(State::kPrimary) && impl_->gate) return hand_over();
    std::lock_guard lk(impl_->mu);
    return impl_->run_event(Event::kStopStreaming, false);
}

bool Controller::state_is(State s) const { return impl_->state_is(s); }

// Planned hand-over (docs/failover.md): every RTP flow switches to the secondary between two
// datagrams, at the first one due after `at`; then this server stands down (Primary_Offline)
// and tells the secondary, which takes the RTSP connections and the rest over as at a takeover.
Result<State> Controller::hand_over() {
    Impl& I = *impl_;
    int64_t lead;
    {
        std::lock_guard lk(I.mu);
        if (I.state != State::kPrimary || !I.gate) return make_error(EBADFD, "a planned hand-over needs a Primary with its Secondary online");
        if (I.handover_out) return make_error(EALREADY, "a hand-over is in progress");
        lead = std::max(kHandOverLeadNs, 4 * I.silence_limit_ns());
    }
    // The switch points, from the engine, without our lock (the engine may wait for the lease
    // only our thread renews).
    const int64_t at = realtime_ns() + lead;
    std::vector<HandOverEntry> entries;
    for (auto& f : I.engine.flows())
        if (auto seq = I.engine.seq_after_time(f.session, at)) entries.push_back({f.client, f.port, *seq});
    std::vector<HandOver> parts;
    for (size_t i = 0; i < entries.size(); i += kMaxHandOverEntries)
        parts.push_back({0, at, 0, 0, {entries.begin() + i, entries.begin() + std::min(entries.size(), i + kMaxHandOverEntries)}});

    std::unique_lock lk(I.mu);
    if (I.state != State::kPrimary) return make_error(EBADFD, "no longer Primary");
    if (I.handover_out) return make_error(EALREADY, "a hand-over is in progress");
    uint64_t id = 0;
    while (id == 0) (void)!getrandom(&id, sizeof id, 0);
    Impl::HandOverOut out{id, {}, std::vector<bool>(parts.size(), false), false};
    auto undo = [&](const std::string& why) -> Result<State> {
        for (auto& e : entries) (void)I.gate->clear_flow_rule({e.client, e.port});
        I.send_both(HandOverCancel{id});
        I.handover_out.reset();
        I.st.last_handover = "cancelled: " + why;
        return make_error(ETIMEDOUT, "planned hand-over cancelled: " + why + "; still Primary");
    };
    // Our side first: from the switch point on we send nothing of these flows, acknowledged or not.
    for (auto& e : entries)
        if (auto s = I.gate->set_flow_rule({e.client, e.port}, gate::Rule::PassBefore, e.seq); !s) return undo(s.error().message);
    for (size_t i = 0; i < parts.size(); ++i) {
        parts[i].id = id;
        parts[i].part = uint16_t(i);
        parts[i].parts = uint16_t(parts.size());
        out.sizes.push_back(uint16_t(parts[i].entries.size()));
    }
    I.handover_out = out;
    for (auto& p : parts) I.send_both(p);
    auto acked = [&] {
        return I.handover_out->refused ||
               std::all_of(I.handover_out->acked.begin(), I.handover_out->acked.end(), [](bool b) { return b; });
    };
    auto until = [](int64_t realtime) {
        return std::chrono::steady_clock::now() + std::chrono::nanoseconds(std::max<int64_t>(0, realtime - realtime_ns()));
    };
    I.handover_cv.wait_until(lk, until(at - kHandOverMarginNs), acked);
    if (I.state != State::kPrimary) return undo("this server left Primary");
    if (I.handover_out->refused) return undo("the secondary does not run every session");
    if (!acked()) return undo("the secondary did not answer in time");
    // Wait past the switch (the lock released: heartbeats and the lease go on), then stand down.
    I.handover_cv.wait_until(lk, until(at + kHandOverMarginNs), [&] { return I.state != State::kPrimary; });
    I.handover_out.reset();
    if (I.state != State::kPrimary) return I.state;  // taken over on the way: nothing more to do
    auto r = I.run_event(Event::kStopStreaming, false);
    if (!r) return r;
    I.send_both(FailoverNotice{uint8_t(FailureReason::kOperator), "planned hand-over"});
    for (auto& e : entries) (void)I.gate->clear_flow_rule({e.client, e.port});
    ++I.st.handovers;
    I.st.last_handover = std::to_string(entries.size()) + " RTP flows switched at their first datagram after " +
                         std::to_string(lead / 1'000'000) + " ms";
    return r;
}

Result<State> Controller::failover_sync() {
    std::unique_lock lk(impl_->mu);
    auto r = impl_->run_event(Event::kFailoverSync, false);
    if (!r) return r;
    if (!impl_->opts.partner_private) {
        (void)impl_->run_event(Event::kSyncFailed, false);
        return make_error(EINVAL, "no partner private address configured");
    }
    auto fail = [&](const std::string& why) -> Result<State> {
        (void)impl_->run_event(Event::kSyncFailed, false);
        impl_->st.last_error = "failover_sync: " + why;
        return make_error(EIO, "failover_sync failed: " + why + "; back to Secondary_Offline");
    };
    // System time ([0083]): lockstep needs both clocks to agree far below a frame. One probe
    // brackets the primary's clock reading between our send and receive times, so a round trip
    // stretched by scheduling (a busy host) blurs it: probe up to kSyncProbes times, stop at a
    // clean round trip, judge the offset by the tightest one.
    std::optional<SyncReply> reply;
    int64_t best_rtt = INT64_MAX, offset = 0;
    for (int probe = 0; probe < kSyncProbes && best_rtt > kSyncCleanRttNs; ++probe) {
        uint64_t nonce = 0;
        while (nonce == 0) (void)!getrandom(&nonce, sizeof nonce, 0);
        impl_->sync_nonce = nonce;
        impl_->sync_result.reset();
        int64_t sent_ns = realtime_ns();
        impl_->send_on(Path::kPrivate, SyncRequest{nonce});
        bool got = impl_->sync_cv.wait_for(lk, std::chrono::nanoseconds(kSyncTimeoutNs),
                                           [&] { return impl_->sync_result.has_value(); });
        int64_t recv_ns = realtime_ns();
        impl_->sync_nonce = 0;
        if (!got) return fail("no answer from the primary at " + ip_text(*impl_->opts.partner_private) + " within 2 s");
        if (!*impl_->sync_result) return fail(impl_->sync_result->error().message);
        SyncReply r = std::move(**impl_->sync_result);
        if (recv_ns - sent_ns < best_rtt) {
            best_rtt = recv_ns - sent_ns;
            offset = r.primary_time_ns - (sent_ns + recv_ns) / 2;
        }
        reply = std::move(r);
    }
    // The offset is known to within half the round trip: both together must stay within 1 ms.
    if (std::abs(offset) + best_rtt / 2 > 1'000'000)
        return fail("system clocks differ by " + std::to_string(offset / 1000) + " us (round trip " +
                    std::to_string(best_rtt / 1000) + " us); synchronize them (PTP/NTP)");
    if (impl_->opts.apply_sync) {
        lk.unlock();
        auto s = impl_->opts.apply_sync(reply->params);
        lk.lock();
        if (!s) return fail(s.error().message);
    }
    impl_->adopt_heartbeat(reply->params);
    return impl_->run_event(Event::kSyncSucceeded, false);
}

Result<State> Controller::failover_unsync() {
    std::lock_guard lk(impl_->mu);
    return impl_->run_event(Event::kFailoverUnsync, false);
}

void Controller::local_failure(FailureReason reason, const std::string& detail) {
    std::lock_guard lk(impl_->mu);
    impl_->fail_locally(reason, detail);
}

Result<State> Controller::report_failure(FailureReason reason, const std::string& detail) {
    std::lock_guard lk(impl_->mu);
    return impl_->report_failure(reason, detail);
}

void Controller::parameters_changed() {
    std::lock_guard lk(impl_->mu);
    impl_->push_params = true;
}

void Controller::replicate(const SessionRecord& record) {
    if (!transmits(impl_->shared_state.load())) return;
    impl_->send_both(record);
}

void Controller::replicate_reply(const ConnReply& reply) {
    if (!transmits(impl_->shared_state.load())) return;
    ++impl_->replies_sent;
    // One message if it fits; else the decisions go first on their own and the answer after them
    // (the partner then cannot complete this answer should it be cut on the wire).
    Message probe{0, 1, 0, reply};
    if (!impl_->opts.key.empty() && !encode(probe, impl_->key_of[0])) {
        ++impl_->replies_oversized;
        for (auto& r : reply.records) impl_->send_both(r);
        ConnReply bare = reply;
        bare.records.clear();
        impl_->send_both(bare);
        return;
    }
    impl_->send_both(reply);
}

void Controller::on_takeover(std::function<void(std::vector<RevivedConnection>)> fn) {
    std::lock_guard lk(impl_->mu);
    impl_->takeover_hook = std::move(fn);
}

void Controller::on_state(std::function<void(State, State)> fn) {
    std::lock_guard lk(impl_->mu);
    impl_->state_hook = std::move(fn);
}

ControllerStatus Controller::status() const {
    std::lock_guard lk(impl_->mu);
    ControllerStatus s = impl_->st;
    s.state = impl_->state;
    s.peer.sent = impl_->sent.load();
    s.peer.send_errors = impl_->send_errors.load();
    s.heartbeat_ms = impl_->opts.heartbeat_ms;
    s.max_missed = impl_->opts.max_missed;
    s.partner_online = impl_->partner_configured() &&
                       monotonic_ns() - impl_->partner_ack_mono <= impl_->silence_limit_ns();
    s.replies_sent = impl_->replies_sent.load();
    s.replies_oversized = impl_->replies_oversized.load();
    if (impl_->view) s.hub = impl_->view->counters();
    s.frames_malformed = impl_->frames_malformed;
    s.unprotected_sessions = impl_->unprotected.size();
    for (auto& [id, why] : impl_->unprotected) {  // (ids stay out: the status is everyone's)
        if (s.unprotected.size() == kMaxUnprotectedListed) break;
        s.unprotected.push_back(why);
    }
    return s;
}

State Controller::state() const {
    std::lock_guard lk(impl_->mu);
    return impl_->state;
}

}  // namespace of::failover
