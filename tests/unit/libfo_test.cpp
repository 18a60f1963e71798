// libfo: one suite, run against both backends. Here (no module) the userspace backend runs
// against a real holder process; the kernel-backend instantiation runs where /dev/failover
// exists: inside the qemu VM of tests/vm/run, which builds this same file as a static binary
// (OF_LIBFO_VM) against the real failover.ko.
//
// Each test runs inside a network namespace it creates (loopback only): the holder, the
// kernel's message socket and the UDP listener that plays the partner all live there.
#include "libfo/libfo.h"
#ifndef OF_LIBFO_VM
#include "libfo/holder.h"
#include "libfo/wire.h"
#endif
#include "common/clock.h"

#include <gtest/gtest.h>

#include <arpa/inet.h>
#include <fcntl.h>
#include <linux/capability.h>
#include <net/if.h>
#include <poll.h>
#include <sched.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <deque>
#include <map>
#include <random>
#include <set>

#include <uapi/linux/failover_fsm.h>

namespace of::fo {
inline void PrintTo(BackendKind k, std::ostream* os) { *os << to_string(k); }
}  // namespace of::fo

namespace {

using of::fo::Backend;
using of::fo::BackendKind;
using of::fo::Cause;
using of::fo::Change;
using of::fo::FoState;
using of::fo::State;
using of::fo::Type;

constexpr FoState kUnconfigured{Type::Undef, State::Undef};
constexpr FoState kPrimary{Type::Master, State::Live};
constexpr FoState kPrimaryOffline{Type::Master, State::None};

std::string name(FoState s) {
    const char* n = of::fo::fsm_name(s);
    return n ? n : "(" + std::to_string(int(s.type)) + "," + std::to_string(int(s.state)) + ")";
}

// ---- the table itself -------------------------------------------------------------------

TEST(LibfoFsm, EveryStateCanFailAndFailedLeavesOnlyByConfiguration) {
    auto states = of::fo::all_states();
    EXPECT_EQ(states.size(), 12u);  // nine of Fig. 5, Unconfigured, two failed variants
    for (auto s : states) {
        if (s.state == State::Failed) {
            for (const fo_fsm_edge* e = fo_fsm_edges; e->event; ++e) {
                if (e->from_type == unsigned(s.type) && e->from_state == unsigned(s.state)) {
                    EXPECT_EQ(e->event, FO_EV_SET_CONFIG_TYPE) << name(s);
                }
            }
        } else {
            EXPECT_TRUE(of::fo::transition_allowed(s, FoState{s.type, State::Failed})) << name(s);
        }
    }
    for (const fo_fsm_edge* e = fo_fsm_edges; e->event; ++e) {
        EXPECT_TRUE(of::fo::is_valid(FoState{Type(e->from_type), State(e->from_state)}));
        EXPECT_TRUE(of::fo::is_valid(FoState{Type(e->to_type), State(e->to_state)}));
    }
}

TEST(LibfoFsm, TheSeedsWalkthroughIsAllowed) {
    auto ok = [](FoState a, FoState b) { return of::fo::transition_allowed(a, b); };
    // [0079]-[0080]: set_config_type primary, start_streaming
    EXPECT_TRUE(ok(kUnconfigured, kPrimaryOffline));
    EXPECT_TRUE(ok(kPrimaryOffline, {Type::Master, State::NoPartner}));
    // [0081]-[0082], [0086]: the secondary
    EXPECT_TRUE(ok(kUnconfigured, {Type::Slave, State::None}));
    EXPECT_TRUE(ok({Type::Slave, State::None}, {Type::Slave, State::Syncing}));
    EXPECT_TRUE(ok({Type::Slave, State::Syncing}, {Type::Slave, State::Synced}));
    EXPECT_TRUE(ok({Type::Slave, State::Syncing}, {Type::Slave, State::None}));
    EXPECT_TRUE(ok({Type::Slave, State::Synced}, {Type::Slave, State::Live}));
    EXPECT_TRUE(ok({Type::Master, State::NoPartner}, kPrimary));
    // [0098]: failover
    EXPECT_TRUE(ok(kPrimary, {Type::Master, State::Failed}));
    EXPECT_TRUE(ok({Type::Slave, State::Live}, {Type::Master, State::NoPartner}));
    // and some that Fig. 5 does not have
    EXPECT_FALSE(ok(kUnconfigured, kPrimary));
    EXPECT_FALSE(ok({Type::Slave, State::None}, {Type::Slave, State::Live}));
    EXPECT_FALSE(ok({Type::Master, State::Failed}, kPrimary));
    EXPECT_FALSE(ok({Type::Slave, State::NoPartner}, {Type::Master, State::NoPartner}));
}

// ---- environment: a namespace, a partner, a backend -------------------------------------

struct Listener {
    int fd = -1;
    sockaddr_in addr{};
};

// Brings lo up in the current network namespace.
bool lo_up() {
    int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (s < 0) return false;
    ifreq ifr{};
    std::strcpy(ifr.ifr_name, "lo");
    bool ok = ioctl(s, SIOCGIFFLAGS, &ifr) == 0;
    ifr.ifr_flags |= IFF_UP | IFF_RUNNING;
    ok = ok && ioctl(s, SIOCSIFFLAGS, &ifr) == 0;
    close(s);
    return ok;
}

// Waits for one datagram; returns its bytes and the kernel's receive time (CLOCK_REALTIME).
bool recv_datagram(int fd, int timeout_ms, std::vector<uint8_t>& out, int64_t& rx_ns) {
    pollfd p{fd, POLLIN, 0};
    if (poll(&p, 1, timeout_ms) != 1) return false;
    uint8_t buf[2048];
    alignas(cmsghdr) char ctrl[256];
    iovec iov{buf, sizeof(buf)};
    msghdr mh{};
    mh.msg_iov = &iov;
    mh.msg_iovlen = 1;
    mh.msg_control = ctrl;
    mh.msg_controllen = sizeof(ctrl);
    ssize_t n = recvmsg(fd, &mh, MSG_DONTWAIT);
    if (n < 0) return false;
    out.assign(buf, buf + n);
    rx_ns = 0;
    for (cmsghdr* cm = CMSG_FIRSTHDR(&mh); cm; cm = CMSG_NXTHDR(&mh, cm))
        if (cm->cmsg_level == SOL_SOCKET && cm->cmsg_type == SCM_TIMESTAMPNS) {
            timespec ts;
            std::memcpy(&ts, CMSG_DATA(cm), sizeof(ts));
            rx_ns = int64_t(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
        }
    return true;
}

void kill_and_reap(pid_t pid) {
    if (pid <= 0) return;
    kill(pid, SIGKILL);
    int st;
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR) {
    }
}

// Waits (bounded) until the child reports readiness with one byte on fd.
bool wait_ready(int fd, int timeout_ms = 20000) {
    pollfd p{fd, POLLIN, 0};
    char c;
    return poll(&p, 1, timeout_ms) == 1 && read(fd, &c, 1) == 1 && c == 'r';
}

enum class ChildMode { Wait, WaitLarge, CloseAndWait, UnregisterAndExit, ForkKeeperAndWait, ForkExitThenUnregister };
// WaitLarge: the critical process first fills this much memory, as a streaming daemon would.
constexpr size_t kLargeBytes = 64u << 20;

class LibfoSuite : public ::testing::TestWithParam<BackendKind> {
protected:
    void graceful_exit(ChildMode mode);
    void kill9(ChildMode mode);

    void SetUp() override {
        orig_ns_ = ::open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC);
        ASSERT_GE(orig_ns_, 0);
        if (GetParam() == BackendKind::Kernel && access(FO_DEVICE_PATH, F_OK) != 0)
            GTEST_SKIP() << FO_DEVICE_PATH << " is absent: failover.ko is not loaded (this kernel "
                         << "cannot load modules; tests/vm/run runs this backend in a VM)";
        if (unshare(CLONE_NEWNET) != 0)
            GTEST_SKIP() << "cannot create a network namespace: " << std::strerror(errno);
        in_ns_ = true;
        ASSERT_TRUE(lo_up()) << "bringing lo up: " << std::strerror(errno);
        listener_.fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        ASSERT_GE(listener_.fd, 0);
        int one = 1;
        ASSERT_EQ(setsockopt(listener_.fd, SOL_SOCKET, SO_TIMESTAMPNS, &one, sizeof(one)), 0);
        listener_.addr.sin_family = AF_INET;
        listener_.addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        ASSERT_EQ(bind(listener_.fd, reinterpret_cast<sockaddr*>(&listener_.addr), sizeof(listener_.addr)), 0);
        socklen_t len = sizeof(listener_.addr);
        ASSERT_EQ(getsockname(listener_.fd, reinterpret_cast<sockaddr*>(&listener_.addr), &len), 0);
        if (GetParam() == BackendKind::Userspace) start_holder();
        auto b = open();
        ASSERT_TRUE(b) << b.error().message;
        main_ = std::move(b.value());
        reset(*main_);
    }

    void TearDown() override {
        if (main_) {
            (void)main_->unregister();
            if (GetParam() == BackendKind::Kernel) {
                (void)main_->clear_message();
                reset(*main_);
            }
        }
        main_.reset();
        kill_and_reap(holder_pid_);
        if (!dir_.empty()) {
            unlink((dir_ + "/failover.sock").c_str());
            rmdir(dir_.c_str());
        }
        if (listener_.fd >= 0) close(listener_.fd);
        if (in_ns_) {
            EXPECT_EQ(setns(orig_ns_, CLONE_NEWNET), 0);  // the namespace goes with its last user
        }
        if (orig_ns_ >= 0) close(orig_ns_);
    }

    void start_holder() {
#ifndef OF_LIBFO_VM
        char tmpl[] = "/tmp/libfo-test-XXXXXX";
        ASSERT_NE(mkdtemp(tmpl), nullptr);
        dir_ = tmpl;
        int ready[2];
        ASSERT_EQ(pipe2(ready, O_CLOEXEC), 0);
        pid_t parent = getpid();
        holder_pid_ = fork();
        ASSERT_GE(holder_pid_, 0);
        if (holder_pid_ == 0) {
            prctl(PR_SET_PDEATHSIG, SIGKILL);
            if (getppid() != parent) _exit(1);
            of::fo::HolderOptions o;
            o.socket_path = dir_ + "/failover.sock";
            auto h = of::fo::Holder::create(o);
            if (!h) {
                std::fprintf(stderr, "holder: %s\n", h.error().message.c_str());
                _exit(1);
            }
            if (write(ready[1], "r", 1) != 1) _exit(1);
            for (;;) {
                pollfd p{(*h)->fd(), POLLIN, 0};
                if (poll(&p, 1, -1) > 0 && !(*h)->dispatch(0)) _exit(1);
            }
        }
        close(ready[1]);
        ASSERT_TRUE(wait_ready(ready[0])) << "holder did not start";
        close(ready[0]);
#else
        FAIL() << "no userspace backend in the VM build";
#endif
    }

    of::Result<std::unique_ptr<Backend>> open() {
        if (GetParam() == BackendKind::Kernel) return of::fo::open_kernel_backend();
        return of::fo::open_userspace_backend(dir_ + "/failover.sock");
    }

    // A path of allowed moves from `from` to `to` (breadth first over the table).
    static std::vector<FoState> path(FoState from, FoState to) {
        auto states = of::fo::all_states();
        std::map<std::pair<int, int>, FoState> prev;
        auto key = [](FoState s) { return std::make_pair(int(s.type), int(s.state)); };
        std::deque<FoState> q{from};
        prev[key(from)] = from;
        while (!q.empty()) {
            FoState s = q.front();
            q.pop_front();
            if (s == to) break;
            for (auto n : states)
                if (!prev.count(key(n)) && of::fo::transition_allowed(s, n)) {
                    prev[key(n)] = s;
                    q.push_back(n);
                }
        }
        std::vector<FoState> out;
        if (!prev.count(key(to))) return out;
        for (FoState s = to; !(s == from); s = prev[key(s)]) out.insert(out.begin(), s);
        return out;
    }

    static void drive(Backend& b, FoState to) {
        auto st = b.status();
        ASSERT_TRUE(st) << st.error().message;
        for (auto s : path(st->now, to)) {
            auto r = b.set_state(s);
            ASSERT_TRUE(r) << r.error().message;
        }
        auto now = b.status();
        ASSERT_TRUE(now);
        ASSERT_EQ(name(now->now), name(to));
    }

    // Any state to Unconfigured: every state may fail; a failed one may be unconfigured.
    static void reset(Backend& b) { drive(b, kUnconfigured); }

    of::fo::FailoverMessage message(size_t n, uint8_t seed) const {
        of::fo::FailoverMessage m;
        m.dest = listener_.addr;
        for (size_t i = 0; i < n; ++i) m.payload.push_back(uint8_t(seed + i * 7));
        return m;
    }

    int orig_ns_ = -1;
    bool in_ns_ = false;
    Listener listener_;
    std::string dir_;
    pid_t holder_pid_ = -1;
    std::unique_ptr<Backend> main_;
};

// Records notifications; wait() polls the notify fd (bounded) until n arrived.
struct Recorder {
    std::vector<Change> changes;
    of::fo::ChangeCallback cb() {
        return [this](const Change& c) { changes.push_back(c); };
    }
    bool wait(Backend& b, size_t n, int timeout_ms = 10000) {
        int64_t end = of::monotonic_ns() + int64_t(timeout_ms) * 1'000'000;
        while (changes.size() < n) {
            int64_t left = (end - of::monotonic_ns()) / 1'000'000;
            if (left <= 0) return false;
            pollfd p{b.notify_fd(), POLLIN, 0};
            if (poll(&p, 1, int(left)) <= 0) continue;
            if (!b.dispatch()) return false;
        }
        return true;
    }
};

TEST_P(LibfoSuite, StatusIsReadableAndStartsUnconfigured) {
    auto st = main_->status();
    ASSERT_TRUE(st) << st.error().message;
    EXPECT_EQ(main_->kind(), GetParam());
    EXPECT_EQ(st->now, kUnconfigured);
    EXPECT_TRUE(of::fo::is_valid(st->now));
}

TEST_P(LibfoSuite, EveryAllowedMoveWorksAndEveryOtherIsRefused) {
    size_t allowed = 0, refused = 0;
    for (auto from : of::fo::all_states()) {
        for (auto to : of::fo::all_states()) {
            drive(*main_, from);
            if (HasFatalFailure()) return;
            auto before = main_->status();
            ASSERT_TRUE(before);
            auto r = main_->set_state(to);
            auto after = main_->status();
            ASSERT_TRUE(after);
            if (to == from) {
                EXPECT_TRUE(r) << name(from) << " -> itself: " << r.error().message;
                EXPECT_EQ(after->generation, before->generation) << "a no-op counted as a change";
            } else if (of::fo::transition_allowed(from, to)) {
                EXPECT_TRUE(r) << name(from) << " -> " << name(to) << ": " << r.error().message;
                EXPECT_EQ(after->now, to);
                EXPECT_EQ(after->generation, before->generation + 1);
                EXPECT_EQ(after->last_cause, Cause::Set);
                ++allowed;
            } else {
                ASSERT_FALSE(r) << name(from) << " -> " << name(to) << " was accepted";
                EXPECT_EQ(r.error().code, EPROTO) << r.error().message;
                EXPECT_EQ(after->now, from);
                ++refused;
            }
        }
    }
    EXPECT_EQ(allowed, 41u);
    EXPECT_EQ(refused, 12u * 12u - 12u - 41u);
}

TEST_P(LibfoSuite, CompareAndSetRefusesAStaleExpectation) {
    auto r = main_->transition(kPrimaryOffline, {Type::Master, State::NoPartner});
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().code, ESTALE);
    ASSERT_TRUE(main_->transition(kUnconfigured, kPrimaryOffline));
    EXPECT_EQ(main_->status()->now, kPrimaryOffline);
}

TEST_P(LibfoSuite, GarbageStatesAreInvalid) {
    for (auto bad : {FoState{Type(7), State::Live}, FoState{Type::Master, State(99)},
                     FoState{Type::Master, State::Undef}, FoState{Type::Slave, State::Undef},
                     FoState{Type::Undef, State::Live}}) {
        auto r = main_->set_state(bad);
        ASSERT_FALSE(r) << name(bad);
        EXPECT_EQ(r.error().code, EINVAL) << name(bad) << ": " << r.error().message;
        auto t = main_->transition(bad, kPrimaryOffline);
        ASSERT_FALSE(t);
        EXPECT_EQ(t.error().code, EINVAL);
    }
    EXPECT_EQ(main_->status()->now, kUnconfigured);
}

TEST_P(LibfoSuite, NotificationsCarryTheNewStateInSiValueInOrder) {
    Recorder a, b;
    auto base = main_->register_notify(a.cb());
    ASSERT_TRUE(base) << base.error().message;
    auto other = open();
    ASSERT_TRUE(other) << other.error().message;
    ASSERT_TRUE((*other)->register_notify(b.cb(), FO_SIGFAILOVER + 2));
    std::vector<FoState> walk{kPrimaryOffline, {Type::Master, State::NoPartner}, kPrimary};
    for (auto s : walk) ASSERT_TRUE(main_->set_state(s));
    ASSERT_TRUE(a.wait(*main_, walk.size())) << "got " << a.changes.size() << " notifications";
    ASSERT_TRUE(b.wait(**other, walk.size())) << "got " << b.changes.size() << " on the second signal";
    for (auto* rec : {&a, &b}) {
        ASSERT_EQ(rec->changes.size(), walk.size());
        for (size_t i = 0; i < walk.size(); ++i) {
            EXPECT_EQ(rec->changes[i].now, walk[i]) << i;
            EXPECT_EQ(rec->changes[i].cause, Cause::Set);
            EXPECT_EQ(rec->changes[i].generation, uint32_t(base->generation + i + 1));
            EXPECT_EQ(rec->changes[i].missed, 0u);
        }
    }
    EXPECT_EQ(main_->foreign_signals(), 0u);
    // a no-op is not a change: nothing more arrives
    ASSERT_TRUE(main_->set_state(kPrimary));
    pollfd p{main_->notify_fd(), POLLIN, 0};
    EXPECT_EQ(poll(&p, 1, 200), 0);
    EXPECT_EQ(main_->status()->registered, 2u);
}

TEST_P(LibfoSuite, ForeignSignalsAreNotNotifications) {
    Recorder a;
    ASSERT_TRUE(main_->register_notify(a.cb()));
    sigval v{};
    v.sival_ptr = reinterpret_cast<void*>(uintptr_t(FO_SIGVAL(FOTYPE_MASTER, FOSTATE_FAILED, 1, 99)));
    ASSERT_EQ(sigqueue(getpid(), SIGFAILOVER, v), 0);  // a forgery: si_code SI_QUEUE, our pid
    pollfd p{main_->notify_fd(), POLLIN, 0};
    ASSERT_EQ(poll(&p, 1, 5000), 1);
    auto n = main_->dispatch();
    ASSERT_TRUE(n);
    EXPECT_EQ(*n, 0u);
    EXPECT_EQ(main_->foreign_signals(), 1u);
    EXPECT_TRUE(a.changes.empty());
}

// Forks a child that opens its own backend, registers critical (optionally forks a
// grandchild that keeps the descriptor), reports ready and then does what `mode` says.

pid_t spawn_critical(ChildMode mode, int& ready_fd, pid_t* keeper = nullptr,
                     std::function<of::Result<std::unique_ptr<Backend>>()> open = nullptr) {
    int p[2];
    if (pipe2(p, O_CLOEXEC) != 0) return -1;
    int kp[2] = {-1, -1};
    if (keeper && pipe2(kp, O_CLOEXEC) != 0) return -1;
    pid_t pid = fork();
    if (pid != 0) {
        close(p[1]);
        ready_fd = p[0];
        if (keeper) {
            close(kp[1]);
            pid_t k = -1;
            pollfd pf{kp[0], POLLIN, 0};
            if (poll(&pf, 1, 20000) == 1 && read(kp[0], &k, sizeof(k)) != sizeof(k)) k = -1;
            *keeper = k;
            close(kp[0]);
        }
        return pid;
    }
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (mode == ChildMode::WaitLarge) {
        void* m = mmap(nullptr, kLargeBytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
        if (m == MAP_FAILED) _exit(16);
        std::memset(m, 0x5a, kLargeBytes);
    }
    auto b = open();
    if (!b) _exit(10);
    if (!(*b)->register_critical()) _exit(11);
    if (mode == ChildMode::ForkKeeperAndWait) {
        pid_t k = fork();
        if (k == 0) {
            for (;;) pause();  // holds a copy of the descriptor / connection
        }
        if (write(kp[1], &k, sizeof(k)) != sizeof(k)) _exit(12);
    }
    if (mode == ChildMode::ForkExitThenUnregister) {
        // a child of the critical process has its own address space and its own copy of the
        // descriptor: its exit is not the critical process's death
        pid_t k = fork();
        if (k == 0) _exit(0);
        int st;
        if (waitpid(k, &st, 0) != k) _exit(15);
        mode = ChildMode::UnregisterAndExit;
    }
    if (mode == ChildMode::UnregisterAndExit) {
        if (!(*b)->unregister()) _exit(13);
        b->reset();
        if (write(p[1], "r", 1) != 1) _exit(14);
        _exit(0);
    }
    if (mode == ChildMode::CloseAndWait) b->reset();  // dropped without unregister
    if (write(p[1], "r", 1) != 1) _exit(14);
    for (;;) pause();
}

TEST_P(LibfoSuite, Kill9OfACriticalProcessFailsTheServerNotifiesAndSendsTheMessage) {
    kill9(ChildMode::Wait);
}

// The module sees the death when the address space starts to go, not after it is gone: the
// teardown of a large process must not delay the message (the holder cannot do that).
TEST_P(LibfoSuite, Kill9OfALargeCriticalProcess) {
    kill9(ChildMode::WaitLarge);
}

void LibfoSuite::kill9(ChildMode mode) {
    drive(*main_, kPrimary);
    Recorder rec;
    auto base = main_->register_notify(rec.cb());
    ASSERT_TRUE(base);
    auto msg = message(300, 0x5a);
    ASSERT_TRUE(main_->set_message(msg));
    EXPECT_TRUE(main_->status()->message_armed);

    int ready = -1;
    pid_t child = spawn_critical(mode, ready, nullptr, [this] { return open(); });
    ASSERT_GT(child, 0);
    ASSERT_TRUE(wait_ready(ready)) << "critical child did not register";
    close(ready);
    EXPECT_EQ(main_->status()->critical, 1u);

    int64_t t0 = of::realtime_ns();
    ASSERT_EQ(kill(child, SIGKILL), 0);
    std::vector<uint8_t> got;
    int64_t rx = 0;
    bool arrived = recv_datagram(listener_.fd, 10000, got, rx);
    int st;
    waitpid(child, &st, 0);
    ASSERT_TRUE(arrived) << "no failover message within 10 s of kill -9";
    EXPECT_EQ(got, msg.payload);
    ASSERT_GT(rx, 0) << "no SO_TIMESTAMPNS";
    double us = double(rx - t0) / 1000.0;
    std::printf("[ measure  ] %s backend: kill -9 -> failover message received: %.1f us%s\n",
                of::fo::to_string(GetParam()), us, mode == ChildMode::WaitLarge ? " (64 MiB process)" : "");
    RecordProperty("kill_to_message_us", std::to_string(us));

    ASSERT_TRUE(rec.wait(*main_, 1)) << "no notification of the failure";
    EXPECT_EQ(rec.changes[0].now, (FoState{Type::Master, State::Failed}));
    EXPECT_EQ(rec.changes[0].cause, Cause::Critical);
    auto now = main_->status();
    ASSERT_TRUE(now);
    EXPECT_EQ(now->now, (FoState{Type::Master, State::Failed}));
    EXPECT_EQ(now->last_cause, Cause::Critical);
    EXPECT_FALSE(now->message_armed) << "the message is sent once";
    EXPECT_EQ(now->critical, 0u);
    EXPECT_GE(now->messages_sent, 1u);
    EXPECT_GE(now->critical_deaths, 1u);
    // exactly one datagram
    EXPECT_FALSE(recv_datagram(listener_.fd, 200, got, rx));
}

TEST_P(LibfoSuite, CloseWithoutUnregisterIsACriticalDeath) {
    drive(*main_, {Type::Slave, State::Live});
    Recorder rec;
    ASSERT_TRUE(main_->register_notify(rec.cb()));
    ASSERT_TRUE(main_->set_message(message(16, 1)));
    int ready = -1;
    pid_t child = spawn_critical(ChildMode::CloseAndWait, ready, nullptr, [this] { return open(); });
    ASSERT_GT(child, 0);
    EXPECT_TRUE(wait_ready(ready));
    close(ready);
    std::vector<uint8_t> got;
    int64_t rx;
    EXPECT_TRUE(recv_datagram(listener_.fd, 10000, got, rx));
    EXPECT_EQ(got, message(16, 1).payload);
    ASSERT_TRUE(rec.wait(*main_, 1));
    EXPECT_EQ(rec.changes[0].now, (FoState{Type::Slave, State::Failed}));
    kill_and_reap(child);
}

TEST_P(LibfoSuite, UnregisterThenExitIsNotADeath) {
    for (auto mode : {ChildMode::UnregisterAndExit, ChildMode::ForkExitThenUnregister}) {
        SCOPED_TRACE(mode == ChildMode::UnregisterAndExit ? "unregister, exit" : "fork, child exits, unregister, exit");
        graceful_exit(mode);
        if (HasFatalFailure()) return;
    }
}

void LibfoSuite::graceful_exit(ChildMode mode) {
    drive(*main_, kPrimary);
    ASSERT_TRUE(main_->set_message(message(16, 2)));
    auto before = main_->status();
    int ready = -1;
    pid_t child = spawn_critical(mode, ready, nullptr, [this] { return open(); });
    ASSERT_GT(child, 0);
    EXPECT_TRUE(wait_ready(ready));
    close(ready);
    int st;
    ASSERT_EQ(waitpid(child, &st, 0), child);
    EXPECT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 0) << "child status " << st;
    std::vector<uint8_t> got;
    int64_t rx;
    EXPECT_FALSE(recv_datagram(listener_.fd, 300, got, rx)) << "a message after a graceful exit";
    auto after = main_->status();
    EXPECT_EQ(after->now, kPrimary);
    EXPECT_EQ(after->critical_deaths, before->critical_deaths);
    EXPECT_TRUE(after->message_armed);
}

TEST_P(LibfoSuite, AForkedChildHoldingTheDescriptorDoesNotHideTheDeath) {
    drive(*main_, kPrimary);
    ASSERT_TRUE(main_->set_message(message(32, 3)));
    int ready = -1;
    pid_t keeper = -1;
    pid_t child = spawn_critical(ChildMode::ForkKeeperAndWait, ready, &keeper, [this] { return open(); });
    ASSERT_GT(child, 0);
    EXPECT_TRUE(wait_ready(ready));
    close(ready);
    ASSERT_GT(keeper, 0);
    ASSERT_EQ(kill(child, SIGKILL), 0);
    std::vector<uint8_t> got;
    int64_t rx;
    bool arrived = recv_datagram(listener_.fd, 10000, got, rx);
    int st;
    waitpid(child, &st, 0);
    kill(keeper, SIGKILL);  // orphaned grandchild: reaped by init, not by us
    EXPECT_TRUE(arrived) << "the death went unnoticed while a forked child held the descriptor";
    EXPECT_EQ(main_->status()->now, (FoState{Type::Master, State::Failed}));
}

TEST_P(LibfoSuite, CallsWithoutCapNetAdminAreRefused) {
    int p[2];
    ASSERT_EQ(pipe2(p, O_CLOEXEC), 0);
    auto msg = message(8, 4);
    pid_t child = fork();
    ASSERT_GE(child, 0);
    if (child == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        // drop CAP_NET_ADMIN from the effective set, keep everything else (still root)
        __user_cap_header_struct h{_LINUX_CAPABILITY_VERSION_3, 0};
        __user_cap_data_struct d[2]{};
        if (syscall(SYS_capget, &h, d) != 0) _exit(20);
        d[CAP_NET_ADMIN / 32].effective &= ~(1u << (CAP_NET_ADMIN % 32));
        if (syscall(SYS_capset, &h, d) != 0) _exit(21);
        auto b = open();
        int bits = 0;
        if (!b) _exit(22);
        if ((*b)->status()) bits |= 1;
        auto e = [](const of::Status& s) { return !s && s.error().code == EPERM; };
        if (e((*b)->set_state(kPrimaryOffline))) bits |= 2;
        if (e((*b)->register_critical())) bits |= 4;
        auto rn = (*b)->register_notify([](const Change&) {});
        if (!rn && rn.error().code == EPERM) bits |= 8;
        if (e((*b)->set_message(msg))) bits |= 16;
        if (e((*b)->clear_message())) bits |= 32;
        char c = char(bits);
        if (write(p[1], &c, 1) != 1) _exit(23);
        _exit(0);
    }
    close(p[1]);
    pollfd pf{p[0], POLLIN, 0};
    char c = 0;
    bool got = poll(&pf, 1, 20000) == 1 && read(p[0], &c, 1) == 1;
    close(p[0]);
    int st;
    waitpid(child, &st, 0);
    ASSERT_TRUE(got) << "child failed before reporting, status " << st;
    EXPECT_EQ(int(c), 63) << "bits: 1 status readable, 2 set_state, 4 register_critical, "
                             "8 register_notify, 16 set_message, 32 clear_message refused";
    auto now = main_->status();
    EXPECT_EQ(now->now, kUnconfigured);
    EXPECT_FALSE(now->message_armed);
    EXPECT_EQ(now->registered, 0u);
}

TEST_P(LibfoSuite, RegistrationsAreBounded) {
    auto st = main_->status();
    ASSERT_TRUE(st);
    std::vector<std::unique_ptr<Backend>> regs;
    for (uint32_t i = st->registered; i < FO_MAX_REGISTRATIONS; ++i) {
        auto b = open();
        ASSERT_TRUE(b) << i << ": " << b.error().message;
        auto r = (*b)->register_critical();
        ASSERT_TRUE(r) << i << ": " << r.error().message;
        regs.push_back(std::move(b.value()));
    }
    EXPECT_EQ(main_->status()->registered, uint32_t(FO_MAX_REGISTRATIONS));
    auto extra = open();
    ASSERT_TRUE(extra);
    auto r = (*extra)->register_critical();
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().code, ENOSPC);
    ASSERT_TRUE(regs.back()->unregister());
    EXPECT_TRUE((*extra)->register_critical());
    EXPECT_TRUE((*extra)->unregister());
    for (auto& b : regs) EXPECT_TRUE(b->unregister());
    regs.clear();
    auto end = main_->status();
    EXPECT_EQ(end->registered, st->registered);
    EXPECT_EQ(end->now, kUnconfigured) << "an unregistered close failed the server";
}

TEST_P(LibfoSuite, MessageIsValidatedReplacedAndCleared) {
    auto m = message(FO_MESSAGE_MAX, 9);
    ASSERT_TRUE(main_->set_message(m));
    EXPECT_TRUE(main_->status()->message_armed);
    auto big = message(FO_MESSAGE_MAX + 1, 9);
    EXPECT_EQ(main_->set_message(big).error().code, EINVAL);
    auto mc = message(10, 9);
    mc.dest.sin_addr.s_addr = inet_addr("239.1.1.1");
    EXPECT_EQ(main_->set_message(mc).error().code, EINVAL);
    mc.dest.sin_addr.s_addr = inet_addr("255.255.255.255");
    EXPECT_EQ(main_->set_message(mc).error().code, EINVAL);
    mc = message(10, 9);
    mc.dest.sin_port = 0;
    EXPECT_EQ(main_->set_message(mc).error().code, EINVAL);
    EXPECT_EQ(main_->set_message(message(0, 9)).error().code, EINVAL);
    EXPECT_TRUE(main_->status()->message_armed) << "a refused message disarmed the good one";
    ASSERT_TRUE(main_->clear_message());
    EXPECT_FALSE(main_->status()->message_armed);
}

#ifndef OF_LIBFO_VM
// The holder's socket is its "ioctl": garbage packets get EINVAL, the holder lives on.
TEST_P(LibfoSuite, GarbageRequestsNeverHurtTheHolder) {
    if (GetParam() != BackendKind::Userspace) GTEST_SKIP() << "holder only";
    int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
    ASSERT_GE(fd, 0);
    sockaddr_un sun{};
    sun.sun_family = AF_UNIX;
    std::strcpy(sun.sun_path, (dir_ + "/failover.sock").c_str());
    ASSERT_EQ(connect(fd, reinterpret_cast<sockaddr*>(&sun), sizeof(sun)), 0);
    std::mt19937 rng(12345);
    std::set<int> errs;
    for (int i = 0; i < 3000; ++i) {
        std::vector<uint8_t> pkt(rng() % 700);
        for (auto& b : pkt) b = uint8_t(rng());
        if (pkt.size() >= sizeof(of::fo::wire::Header) && rng() % 2) {  // a valid header, garbage body
            of::fo::wire::Header h{of::fo::wire::kMagic, uint32_t(1 + rng() % 5), uint32_t(i)};
            std::memcpy(pkt.data(), &h, sizeof(h));
            if (h.op == 5 && rng() % 2) pkt.resize(sizeof(h) + sizeof(fo_message));
            if (h.op == 2 && rng() % 2) pkt.resize(sizeof(h) + sizeof(fo_transition));
            if (h.op == 3 && rng() % 2) pkt.resize(sizeof(h) + sizeof(fo_registration));
        }
        of::fo::wire::Header ph{};
        if (pkt.size() >= sizeof(ph)) std::memcpy(&ph, pkt.data(), sizeof(ph));
        if (ph.magic == of::fo::wire::kMagic && ph.op == 5) continue;  // never arm a random address
        ASSERT_EQ(send(fd, pkt.data(), pkt.size(), 0), ssize_t(pkt.size()));
        of::fo::wire::Reply r{};
        pollfd p{fd, POLLIN, 0};
        ASSERT_EQ(poll(&p, 1, 5000), 1) << "no reply to garbage " << i;
        ASSERT_EQ(recv(fd, &r, sizeof(r), 0), ssize_t(sizeof(r)));
        errs.insert(r.err);
    }
    // what garbage may get: refused, or harmless (status, set state along the table, unregister)
    for (int e : errs) EXPECT_TRUE(e == 0 || e == EINVAL || e == EPROTO || e == ESTALE || e == ENOENT) << e;
    EXPECT_TRUE(errs.count(EINVAL));
    close(fd);
    auto st = main_->status();
    ASSERT_TRUE(st) << "holder died: " << st.error().message;
    EXPECT_TRUE(of::fo::is_valid(st->now));
}
#endif

#ifdef OF_LIBFO_VM
// Garbage ioctls: unknown commands get ENOTTY, bad pointers EFAULT, malformed arguments
// EINVAL; nothing crashes and the state stays one of the table.
TEST_P(LibfoSuite, GarbageIoctlsNeverCrashTheModule) {
    int fd = ::open(FO_DEVICE_PATH, O_RDWR | O_CLOEXEC);
    ASSERT_GE(fd, 0);
    std::mt19937 rng(4242);
    std::map<int, int> errs;
    alignas(8) uint8_t buf[4096];
    const unsigned long cmds[] = {FO_IOC_GET_STATUS, FO_IOC_SET_STATE, FO_IOC_REGISTER, FO_IOC_UNREGISTER};
    for (int i = 0; i < 5000; ++i) {
        for (auto& b : buf) b = uint8_t(rng());
        unsigned long cmd;
        switch (rng() % 4) {
        case 0: cmd = rng(); break;  // anything
        case 1: cmd = _IOC(rng() % 4, FO_IOC_MAGIC, rng() % 16, rng() % 1024); break;
        default: cmd = cmds[rng() % 4]; break;
        }
        if (cmd == FO_IOC_SET_MESSAGE) continue;  // structured below: never arm a random address
        void* arg = buf;
        switch (rng() % 8) {
        case 0: arg = nullptr; break;
        case 1: arg = reinterpret_cast<void*>(uintptr_t(1)); break;
        case 2: arg = reinterpret_cast<void*>(uintptr_t(0xffffffff81000000ull)); break;
        default: break;
        }
        int rc = ioctl(fd, cmd, arg);
        errs[rc == 0 ? 0 : errno]++;
    }
    // SET_MESSAGE: garbage in every field but a loopback destination
    for (int i = 0; i < 500; ++i) {
        fo_message m;
        for (size_t k = 0; k < sizeof(m); ++k) reinterpret_cast<uint8_t*>(&m)[k] = uint8_t(rng());
        m.daddr = htonl(INADDR_LOOPBACK);
        m.saddr = rng() % 2 ? 0 : m.saddr;
        int rc = ioctl(fd, FO_IOC_SET_MESSAGE, &m);
        errs[rc == 0 ? 0 : errno]++;
    }
    for (auto [e, n] : errs) {
        std::printf("[ garbage  ] errno %d (%s): %d\n", e, e ? std::strerror(e) : "ok", n);
        EXPECT_TRUE(e == 0 || e == ENOTTY || e == EINVAL || e == EFAULT || e == EPROTO || e == ESTALE ||
                    e == ENOENT || e == EADDRNOTAVAIL || e == EBUSY) << e;
    }
    EXPECT_GT(errs[ENOTTY], 0);
    EXPECT_GT(errs[EINVAL], 0);
    EXPECT_GT(errs[EFAULT], 0);
    ioctl(fd, FO_IOC_UNREGISTER);  // a random REGISTER may have succeeded
    fo_message clear{};
    EXPECT_EQ(ioctl(fd, FO_IOC_SET_MESSAGE, &clear), 0);
    close(fd);
    auto st = main_->status();
    ASSERT_TRUE(st);
    EXPECT_TRUE(of::fo::is_valid(st->now));
}
#endif

std::string param_name(const ::testing::TestParamInfo<BackendKind>& i) {
    return of::fo::to_string(i.param);
}

#ifdef OF_LIBFO_VM
INSTANTIATE_TEST_SUITE_P(Backends, LibfoSuite, ::testing::Values(BackendKind::Kernel), param_name);
#else
INSTANTIATE_TEST_SUITE_P(Backends, LibfoSuite,
                         ::testing::Values(BackendKind::Userspace, BackendKind::Kernel), param_name);

TEST(LibfoHolder, ASecondHolderOnTheSameSocketIsRefusedAndAStaleOneReplaced) {
    char tmpl[] = "/tmp/libfo-holder-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    std::string path = std::string(tmpl) + "/failover.sock";
    of::fo::HolderOptions o;
    o.socket_path = path;
    {
        auto h = of::fo::Holder::create(o);
        ASSERT_TRUE(h) << h.error().message;
        auto h2 = of::fo::Holder::create(o);
        ASSERT_FALSE(h2);
        EXPECT_EQ(h2.error().code, EADDRINUSE);
    }
    // a socket file left by a dead holder
    int s = socket(AF_UNIX, SOCK_SEQPACKET, 0);
    sockaddr_un sun{};
    sun.sun_family = AF_UNIX;
    std::strcpy(sun.sun_path, path.c_str());
    ASSERT_EQ(bind(s, reinterpret_cast<sockaddr*>(&sun), sizeof(sun)), 0);
    close(s);
    auto h3 = of::fo::Holder::create(o);
    EXPECT_TRUE(h3) << h3.error().message;
    h3 = of::Error{};
    unlink(path.c_str());
    rmdir(tmpl);
}

TEST(LibfoHolder, ChoiceParsingAndAutoWithoutModuleOrHolder) {
    EXPECT_EQ(*of::fo::parse_choice("auto"), of::fo::Choice::Auto);
    EXPECT_EQ(*of::fo::parse_choice("kernel"), of::fo::Choice::Kernel);
    EXPECT_EQ(*of::fo::parse_choice("userspace"), of::fo::Choice::Userspace);
    EXPECT_FALSE(of::fo::parse_choice("kernal"));
    of::fo::BackendOptions o;
    o.device = "/nonexistent/failover";
    o.holder_socket = "/nonexistent/failover.sock";
    auto b = of::fo::open_backend(of::fo::Choice::Auto, o);
    ASSERT_FALSE(b);  // auto fell back to userspace, which has no holder
    EXPECT_EQ(b.error().code, ENOENT);
    EXPECT_NE(b.error().message.find("holder"), std::string::npos) << b.error().message;
}

TEST(LibfoWire, ParseRequestChecksMagicOpAndSize) {
    using namespace of::fo::wire;
    std::vector<uint8_t> pkt(sizeof(Header));
    Header h{kMagic, uint32_t(Op::GetStatus), 7};
    std::memcpy(pkt.data(), &h, sizeof(h));
    EXPECT_TRUE(parse_request(pkt));
    pkt.push_back(0);
    EXPECT_FALSE(parse_request(pkt));  // GetStatus has no body
    h.op = uint32_t(Op::SetState);
    pkt.assign(sizeof(Header) + sizeof(fo_transition), 0);
    std::memcpy(pkt.data(), &h, sizeof(h));
    auto r = parse_request(pkt);
    ASSERT_TRUE(r);
    EXPECT_EQ(r->op, Op::SetState);
    EXPECT_EQ(r->seq, 7u);
    h.op = 77;
    std::memcpy(pkt.data(), &h, sizeof(h));
    EXPECT_FALSE(parse_request(pkt));
    h.magic = 0;
    std::memcpy(pkt.data(), &h, sizeof(h));
    EXPECT_FALSE(parse_request(pkt));
    EXPECT_FALSE(parse_request(std::span<const uint8_t>(pkt.data(), 3)));
}
#endif

}  // namespace
