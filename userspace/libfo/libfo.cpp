#include "libfo/libfo.h"

#include <arpa/inet.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include <uapi/linux/failover_fsm.h>

namespace of::fo {

const char* to_string(Type t) {
    switch (t) {
    case Type::Undef: return "undef";
    case Type::Master: return "master";
    case Type::Slave: return "slave";
    }
    return "?";
}

const char* to_string(State s) {
    switch (s) {
    case State::Undef: return "undef";
    case State::Live: return "live";
    case State::Failed: return "failed";
    case State::Syncing: return "syncing";
    case State::Synced: return "synced";
    case State::NoPartner: return "nopartner";
    case State::None: return "none";
    }
    return "?";
}

const char* to_string(Cause c) {
    switch (c) {
    case Cause::None: return "none";
    case Cause::Set: return "set";
    case Cause::Critical: return "critical";
    }
    return "?";
}

const char* to_string(BackendKind k) { return k == BackendKind::Kernel ? "kernel" : "userspace"; }

const char* fsm_name(FoState s) {
    return fo_fsm_state_name(unsigned(s.type), unsigned(s.state));
}

bool is_valid(FoState s) { return fsm_name(s) != nullptr; }

bool transition_allowed(FoState from, FoState to) {
    return fo_fsm_find(unsigned(from.type), unsigned(from.state), unsigned(to.type),
                       unsigned(to.state)) != nullptr;
}

std::vector<FoState> all_states() {
    std::vector<FoState> out;
    for (unsigned t = 0; t <= FOTYPE_MAX; ++t)
        for (unsigned s = 0; s <= FOSTATE_MAX; ++s)
            if (fo_fsm_state_name(t, s)) out.push_back(FoState{Type(t), State(s)});
    return out;
}

of::Result<Choice> parse_choice(const std::string& s) {
    if (s == "auto") return Choice::Auto;
    if (s == "kernel") return Choice::Kernel;
    if (s == "userspace") return Choice::Userspace;
    return make_error(EINVAL, "failover backend must be auto, kernel or userspace, not '" + s + "'");
}

of::Status block_signal(int signo) {
    sigset_t set;
    sigemptyset(&set);
    if (sigaddset(&set, signo) != 0) return errno_error("sigaddset " + std::to_string(signo));
    int rc = pthread_sigmask(SIG_BLOCK, &set, nullptr);
    if (rc != 0) return errno_error("pthread_sigmask", rc);
    return {};
}

static bool nonzero_sin(const sockaddr_in& a) { return a.sin_addr.s_addr != 0 || a.sin_port != 0; }

of::Status validate_message(const FailoverMessage& m) {
    if (m.payload.empty() || m.payload.size() > FO_MESSAGE_MAX)
        return make_error(EINVAL, "failover message payload must be 1.." +
                                      std::to_string(FO_MESSAGE_MAX) + " bytes, not " +
                                      std::to_string(m.payload.size()));
    if (m.dest.sin_family != AF_INET) return make_error(EINVAL, "failover message: destination is not IPv4");
    uint32_t d = ntohl(m.dest.sin_addr.s_addr);
    // the kernel's ipv4_is_zeronet / ipv4_is_multicast / ipv4_is_lbcast
    if ((d >> 24) == 0 || (d >> 28) == 0xe || d == 0xffffffffu)
        return make_error(EINVAL, "failover message: destination is 0/8, multicast or broadcast");
    if (m.dest.sin_port == 0) return make_error(EINVAL, "failover message: destination port 0");
    if (m.src.sin_family != AF_INET && m.src.sin_family != AF_UNSPEC)
        return make_error(EINVAL, "failover message: source is not IPv4");
    if (m.src.sin_family == AF_INET) {
        uint32_t s = ntohl(m.src.sin_addr.s_addr);
        if ((s >> 28) == 0xe || s == 0xffffffffu)
            return make_error(EINVAL, "failover message: source is multicast or broadcast");
    }
    return {};
}

of::Result<fo_message> to_uapi(const FailoverMessage& m) {
    if (auto st = validate_message(m); !st) return st.error();
    fo_message u{};
    u.daddr = m.dest.sin_addr.s_addr;
    u.dport = m.dest.sin_port;
    if (m.src.sin_family == AF_INET && nonzero_sin(m.src)) {
        u.saddr = m.src.sin_addr.s_addr;
        u.sport = m.src.sin_port;
    }
    u.len = uint16_t(m.payload.size());
    std::memcpy(u.payload, m.payload.data(), m.payload.size());
    return u;
}

Backend::~Backend() {
    if (sigfd_ >= 0) ::close(sigfd_);
}

static std::string state_str(FoState s) {
    const char* n = fsm_name(s);
    return n ? std::string(n)
             : std::string("(") + std::to_string(unsigned(s.type)) + "," +
                   std::to_string(unsigned(s.state)) + ")";
}

of::Status Backend::set_state(FoState to) {
    fo_transition t{};
    t.type = uint8_t(to.type);
    t.state = uint8_t(to.state);
    auto st = do_transition(t);
    if (!st) return make_error(st.error().code, "set state " + state_str(to) + ": " + st.error().message);
    return st;
}

of::Status Backend::transition(FoState expect, FoState to) {
    fo_transition t{};
    t.flags = FO_TRANSITION_EXPECT;
    t.expect_type = uint8_t(expect.type);
    t.expect_state = uint8_t(expect.state);
    t.type = uint8_t(to.type);
    t.state = uint8_t(to.state);
    auto st = do_transition(t);
    if (!st)
        return make_error(st.error().code, "transition " + state_str(expect) + " -> " + state_str(to) +
                                               ": " + st.error().message);
    return st;
}

of::Status Backend::reregister() {
    if (flags_ == 0) return do_unregister();
    fo_registration r{};
    r.flags = flags_;
    r.signo = (flags_ & FO_REG_NOTIFY) ? uint32_t(signo_) : 0;
    return do_register(r);
}

of::Status Backend::register_critical() {
    uint32_t old = flags_;
    flags_ |= FO_REG_CRITICAL;
    auto st = reregister();
    if (!st) flags_ = old;
    return st;
}

of::Status Backend::unregister_critical() {
    if (!(flags_ & FO_REG_CRITICAL)) return {};
    uint32_t old = flags_;
    flags_ &= ~FO_REG_CRITICAL;
    auto st = reregister();
    if (!st) flags_ = old;
    return st;
}

of::Status Backend::unregister() {
    if (flags_ == 0) return {};
    auto st = do_unregister();
    if (st) flags_ = 0;
    return st;
}

static void noop_handler(int) {}

of::Result<Status> Backend::register_notify(ChangeCallback cb, int signo) {
    if (signo < FO_SIG_MIN || signo > FO_SIG_MAX)
        return make_error(EINVAL, "notification signal must be a real-time signal " +
                                      std::to_string(FO_SIG_MIN) + ".." + std::to_string(FO_SIG_MAX) +
                                      ", not " + std::to_string(signo));
    if (!cb) return make_error(EINVAL, "notification callback is empty");
    if (auto st = block_signal(signo); !st) return st.error();
    struct sigaction old {};
    if (sigaction(signo, nullptr, &old) == 0 && old.sa_handler == SIG_DFL &&
        !(old.sa_flags & SA_SIGINFO)) {
        struct sigaction sa {};
        sa.sa_handler = noop_handler;
        sigemptyset(&sa.sa_mask);
        sigaction(signo, &sa, nullptr);
    }
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, signo);
    int fd = signalfd(sigfd_ >= 0 && signo == signo_ ? sigfd_ : -1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
    if (fd < 0) return errno_error("signalfd");
    if (sigfd_ >= 0 && fd != sigfd_) ::close(sigfd_);
    sigfd_ = fd;

    uint32_t old_flags = flags_;
    int old_signo = signo_;
    flags_ |= FO_REG_NOTIFY;
    signo_ = signo;
    if (auto st = reregister(); !st) {
        flags_ = old_flags;
        signo_ = old_signo;
        return st.error();
    }
    cb_ = std::move(cb);
    // Baseline after registering: a change between the two is seen here, and its signal is
    // then dropped as already known.
    auto s = status();
    if (!s) return s.error();
    last_gen_ = uint32_t(s->generation);
    return s;
}

of::Result<size_t> Backend::dispatch() {
    if (sigfd_ < 0) return make_error(EBADF, "dispatch: not registered for notifications");
    size_t ran = 0;
    signalfd_siginfo buf[16];
    for (;;) {
        ssize_t n = ::read(sigfd_, buf, sizeof(buf));
        if (n < 0) {
            if (errno == EINTR) continue;
            if (errno == EAGAIN) break;
            return errno_error("read signalfd");
        }
        size_t count = size_t(n) / sizeof(buf[0]);
        for (size_t i = 0; i < count; ++i) {
            const signalfd_siginfo& si = buf[i];
            if (int(si.ssi_signo) != signo_ || si.ssi_code != FO_SI_CODE ||
                pid_t(si.ssi_pid) != notifier_pid()) {
                ++foreign_;
                continue;
            }
            uint64_t v = si.ssi_ptr;
            Change c;
            c.now = FoState{Type(FO_SIGVAL_TYPE(v)), State(FO_SIGVAL_STATE(v))};
            c.cause = Cause(FO_SIGVAL_CAUSE(v));
            c.generation = FO_SIGVAL_GEN(v);
            uint32_t d = c.generation - last_gen_;
            if (d == 0 || d > 0x80000000u) continue;  // already known (baseline or older)
            c.missed = d - 1;
            last_gen_ = c.generation;
            if (cb_) cb_(c);
            ++ran;
        }
        if (count < sizeof(buf) / sizeof(buf[0])) break;
    }
    return ran;
}

of::Result<std::unique_ptr<Backend>> open_backend(Choice choice, const BackendOptions& opts) {
    if (choice == Choice::Auto) {
        struct stat st {};
        choice = ::stat(opts.device.c_str(), &st) == 0 ? Choice::Kernel : Choice::Userspace;
    }
    if (choice == Choice::Kernel) return open_kernel_backend(opts.device);
    return open_userspace_backend(opts.holder_socket, opts.timeout_ms);
}

}  // namespace of::fo
