#include "libfo/holder.h"
#include "libfo/status_conv.h"

#include "libfo/wire.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <poll.h>
#include <linux/capability.h>
#include <signal.h>
#include <sys/epoll.h>
// glibc 2.36 declares these without extern "C"
extern "C" {
#include <sys/pidfd.h>
}
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <vector>

#include <uapi/linux/failover_fsm.h>

namespace of::fo {

namespace {

enum : uint64_t { kListener = 0, kConn = 1, kPidfd = 2 };
uint64_t tag(uint64_t id, uint64_t kind) { return (id << 2) | kind; }

// CAP_NET_ADMIN in the effective set of pid. The pid comes from SCM_CREDENTIALS of the
// request being served, so it names the sender (barring pid reuse after it exits).
bool has_net_admin(pid_t pid) {
    char path[64];
    std::snprintf(path, sizeof(path), "/proc/%d/status", int(pid));
    FILE* f = std::fopen(path, "re");
    if (!f) return false;
    char line[256];
    bool ok = false;
    while (std::fgets(line, sizeof(line), f)) {
        unsigned long long caps = 0;
        if (std::sscanf(line, "CapEff: %llx", &caps) == 1) {
            ok = (caps >> CAP_NET_ADMIN) & 1;
            break;
        }
    }
    std::fclose(f);
    return ok;
}

// The pid a pidfd refers to (-1 if that process has exited), from /proc/self/fdinfo.
long pidfd_pid(int fd) {
    char path[64];
    std::snprintf(path, sizeof(path), "/proc/self/fdinfo/%d", fd);
    FILE* f = std::fopen(path, "re");
    if (!f) return 0;
    char line[128];
    long pid = 0;
    while (std::fgets(line, sizeof(line), f))
        if (std::sscanf(line, "Pid: %ld", &pid) == 1) break;
    std::fclose(f);
    return pid;
}

}  // namespace

of::Result<std::unique_ptr<Holder>> Holder::create(const HolderOptions& opts) {
    sockaddr_un sun{};
    sun.sun_family = AF_UNIX;
    if (opts.socket_path.empty() || opts.socket_path.size() >= sizeof(sun.sun_path))
        return make_error(EINVAL, "holder socket path empty or longer than " +
                                      std::to_string(sizeof(sun.sun_path) - 1) + " bytes");
    if (opts.max_connections == 0 || opts.max_connections > 4096)
        return make_error(EINVAL, "holder max_connections must be 1..4096");
    std::memcpy(sun.sun_path, opts.socket_path.data(), opts.socket_path.size());

    std::unique_ptr<Holder> h(new Holder(opts));
    h->ep_ = epoll_create1(EPOLL_CLOEXEC);
    if (h->ep_ < 0) return errno_error("epoll_create1");
    h->listen_fd_ = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (h->listen_fd_ < 0) return errno_error("socket AF_UNIX");

    // A socket file that nobody answers is stale (a holder that died); one that answers is not
    // ours to take.
    int probe = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
    if (probe >= 0) {
        int rc = connect(probe, reinterpret_cast<sockaddr*>(&sun), sizeof(sun));
        int e = errno;
        ::close(probe);
        if (rc == 0) return make_error(EADDRINUSE, "a holder already serves " + opts.socket_path);
        if (e == ECONNREFUSED) ::unlink(opts.socket_path.c_str());
    }
    int one = 1;
    if (setsockopt(h->listen_fd_, SOL_SOCKET, SO_PASSCRED, &one, sizeof(one)) != 0)
        return errno_error("SO_PASSCRED");
    if (bind(h->listen_fd_, reinterpret_cast<sockaddr*>(&sun), sizeof(sun)) != 0)
        return errno_error("bind " + opts.socket_path);
    if (chmod(opts.socket_path.c_str(), opts.socket_mode) != 0)
        return errno_error("chmod " + opts.socket_path);
    if (listen(h->listen_fd_, 64) != 0) return errno_error("listen " + opts.socket_path);
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.u64 = tag(0, kListener);
    if (epoll_ctl(h->ep_, EPOLL_CTL_ADD, h->listen_fd_, &ev) != 0) return errno_error("epoll_ctl");
    return h;
}

Holder::~Holder() {
    for (auto& [id, c] : conns_) {
        if (c.pidfd >= 0) ::close(c.pidfd);
        ::close(c.fd);
    }
    if (listen_fd_ >= 0) {
        ::close(listen_fd_);
        ::unlink(opts_.socket_path.c_str());
    }
    if (msg_fd_ >= 0) ::close(msg_fd_);
    if (ep_ >= 0) ::close(ep_);
}

Status Holder::status() const { return from_uapi(uapi_status()); }

fo_status Holder::uapi_status() const {
    fo_status st{};
    st.version = FO_API_VERSION;
    st.type = type_;
    st.state = state_;
    st.last_cause = last_cause_;
    st.flags = msg_armed_ ? FO_STATUS_MESSAGE_ARMED : 0;
    st.generation = generation_;
    st.registered = registered_;
    st.critical = critical_;
    st.messages_sent = msg_sent_;
    st.message_errors = msg_errors_;
    st.signals_dropped = signals_dropped_;
    st.critical_deaths = critical_deaths_;
    return st;
}

of::Result<size_t> Holder::dispatch(int timeout_ms) {
    epoll_event evs[32];
    int n = epoll_wait(ep_, evs, 32, timeout_ms);
    if (n < 0) {
        if (errno == EINTR) return size_t(0);
        return errno_error("epoll_wait");
    }
    for (int i = 0; i < n; ++i) {
        uint64_t id = evs[i].data.u64 >> 2;
        switch (evs[i].data.u64 & 3) {
        case kListener: accept_all(); break;
        case kConn: on_conn_readable(id); break;
        case kPidfd: on_pidfd(id); break;
        }
    }
    return size_t(n);
}

void Holder::accept_all() {
    for (;;) {
        int fd = accept4(listen_fd_, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) return;  // EAGAIN, or a client that went away before we accepted it
        if (conns_.size() >= opts_.max_connections) {
            ::close(fd);
            continue;
        }
        int one = 1;
        setsockopt(fd, SOL_SOCKET, SO_PASSCRED, &one, sizeof(one));
        uint64_t id = next_id_++;
        epoll_event ev{};
        ev.events = EPOLLIN | EPOLLRDHUP;
        ev.data.u64 = tag(id, kConn);
        if (epoll_ctl(ep_, EPOLL_CTL_ADD, fd, &ev) != 0) {
            ::close(fd);
            continue;
        }
        Conn c;
        c.fd = fd;
        conns_.emplace(id, c);
    }
}

void Holder::on_conn_readable(uint64_t id) {
    auto it = conns_.find(id);
    if (it == conns_.end()) return;
    Conn& c = it->second;
    // Bounded: a client cannot keep the holder here.
    for (int round = 0; round < 16; ++round) {
        uint8_t pkt[wire::kMaxRequest + 1];
        alignas(cmsghdr) char ctrl[CMSG_SPACE(sizeof(ucred)) + CMSG_SPACE(sizeof(int) * 4)];
        iovec iov{pkt, sizeof(pkt)};
        msghdr mh{};
        mh.msg_iov = &iov;
        mh.msg_iovlen = 1;
        mh.msg_control = ctrl;
        mh.msg_controllen = sizeof(ctrl);
        ssize_t len = recvmsg(c.fd, &mh, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
        if (len < 0 && (errno == EAGAIN || errno == EINTR)) return;
        if (len == 0) {
            // SEQPACKET: 0 is either the peer's close or an empty packet
            pollfd p{c.fd, POLLRDHUP, 0};
            if (poll(&p, 1, 0) == 1 && (p.revents & (POLLRDHUP | POLLHUP))) {
                close_conn(id);
                return;
            }
        } else if (len < 0) {  // reset
            close_conn(id);
            return;
        }
        pid_t sender = 0;
        std::vector<int> fds;
        for (cmsghdr* cm = CMSG_FIRSTHDR(&mh); cm; cm = CMSG_NXTHDR(&mh, cm)) {
            if (cm->cmsg_level != SOL_SOCKET) continue;
            if (cm->cmsg_type == SCM_CREDENTIALS && cm->cmsg_len >= CMSG_LEN(sizeof(ucred))) {
                ucred uc{};
                std::memcpy(&uc, CMSG_DATA(cm), sizeof(uc));
                sender = uc.pid;
            } else if (cm->cmsg_type == SCM_RIGHTS) {
                size_t nfd = (cm->cmsg_len - CMSG_LEN(0)) / sizeof(int);
                for (size_t k = 0; k < nfd; ++k) {
                    int f;
                    std::memcpy(&f, CMSG_DATA(cm) + k * sizeof(int), sizeof(int));
                    fds.push_back(f);
                }
            }
        }
        int err;
        wire::Header h{};
        if (size_t(len) >= sizeof(h)) std::memcpy(&h, pkt, sizeof(h));
        if ((mh.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) || fds.size() > 1)
            err = EINVAL;
        else
            err = handle(c, id, pkt, size_t(len), sender, fds.empty() ? -1 : fds[0]);
        for (int f : fds)
            if (f != c.pidfd) ::close(f);
        reply(c, err, h.seq);
    }
}

void Holder::reply(Conn& c, int err, uint32_t seq) {
    wire::Reply r{};
    r.magic = wire::kMagic;
    r.err = err;
    r.seq = seq;
    r.status = uapi_status();
    // A client that does not read its replies loses them; libfo always reads.
    (void)::send(c.fd, &r, sizeof(r), MSG_DONTWAIT | MSG_NOSIGNAL);
}

int Holder::handle(Conn& c, uint64_t id, const uint8_t* pkt, size_t len, pid_t sender, int passed_fd) {
    auto req = wire::parse_request(std::span<const uint8_t>(pkt, len));
    if (!req) return EINVAL;
    if (req->op == wire::Op::GetStatus) return 0;
    if (req->op == wire::Op::Unregister) {
        if (!c.owner) return ENOENT;
        if (c.owner != sender) return EPERM;
        unregister(c);
        return 0;
    }
    if (sender <= 0 || !has_net_admin(sender)) return EPERM;
    switch (req->op) {
    case wire::Op::SetState: {
        const fo_transition& t = req->transition;
        if ((t.flags & ~FO_TRANSITION_EXPECT) || t.reserved) return EINVAL;
        if (!fo_fsm_state_name(t.type, t.state)) return EINVAL;
        bool expect = t.flags & FO_TRANSITION_EXPECT;
        if (expect ? !fo_fsm_state_name(t.expect_type, t.expect_state) : (t.expect_type || t.expect_state))
            return EINVAL;
        if (expect && (t.expect_type != type_ || t.expect_state != state_)) return ESTALE;
        if (t.type == type_ && t.state == state_) return 0;
        if (!fo_fsm_find(type_, state_, t.type, t.state)) return EPROTO;
        change(t.type, t.state, FO_CAUSE_SET);
        return 0;
    }
    case wire::Op::Register: return do_register(c, id, req->registration, sender, passed_fd);
    case wire::Op::SetMessage: return do_set_message(req->message);
    default: return EINVAL;
    }
}

int Holder::do_register(Conn& c, uint64_t id, const fo_registration& r, pid_t sender, int passed_fd) {
    if (!r.flags || (r.flags & ~FO_REG_ALL) || r.reserved) return EINVAL;
    int signo = 0;
    if (r.flags & FO_REG_NOTIFY) {
        signo = r.signo ? int(r.signo) : SIGFAILOVER;
        if (signo < FO_SIG_MIN || signo > FO_SIG_MAX) return EINVAL;
    } else if (r.signo) {
        return EINVAL;
    }
    if (c.owner && c.owner != sender) return EBUSY;
    if (!c.owner) {
        if (registered_ >= FO_MAX_REGISTRATIONS) return ENOSPC;
        // The pidfd must be the sender's own: that is what ties the registration to the
        // process's life without a pid-reuse race.
        if (passed_fd < 0 || pidfd_pid(passed_fd) != sender) return EINVAL;
        epoll_event ev{};
        ev.events = EPOLLIN;
        ev.data.u64 = tag(id, kPidfd);
        if (epoll_ctl(ep_, EPOLL_CTL_ADD, passed_fd, &ev) != 0) return errno;
        c.pidfd = passed_fd;
        c.owner = sender;
        ++registered_;
    }
    if (c.flags & FO_REG_CRITICAL) --critical_;
    if (r.flags & FO_REG_CRITICAL) ++critical_;
    c.flags = r.flags;
    c.signo = signo;
    return 0;
}

int Holder::do_set_message(const fo_message& m) {
    if (m.flags || m.reserved || m.len > FO_MESSAGE_MAX) return EINVAL;
    if (m.len == 0) {
        if (msg_fd_ >= 0) ::close(msg_fd_);
        msg_fd_ = -1;
        msg_armed_ = false;
        return 0;
    }
    uint32_t d = ntohl(m.daddr), s = ntohl(m.saddr);
    if ((d >> 24) == 0 || (d >> 28) == 0xe || d == 0xffffffffu || m.dport == 0) return EINVAL;
    if ((s >> 28) == 0xe || s == 0xffffffffu) return EINVAL;
    int fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) return errno;
    sockaddr_in sin{};
    sin.sin_family = AF_INET;
    if (m.saddr || m.sport) {
        sin.sin_addr.s_addr = m.saddr;
        sin.sin_port = m.sport;
        if (bind(fd, reinterpret_cast<sockaddr*>(&sin), sizeof(sin)) != 0) {
            int e = errno;
            ::close(fd);
            return e;
        }
    }
    sin.sin_addr.s_addr = m.daddr;
    sin.sin_port = m.dport;
    if (connect(fd, reinterpret_cast<sockaddr*>(&sin), sizeof(sin)) != 0) {
        int e = errno;
        ::close(fd);
        return e;
    }
    if (msg_fd_ >= 0) ::close(msg_fd_);
    msg_fd_ = fd;
    msg_ = m;
    msg_armed_ = true;
    return 0;
}

void Holder::unregister(Conn& c) {
    if (!c.owner) return;
    if (c.pidfd >= 0) {
        epoll_ctl(ep_, EPOLL_CTL_DEL, c.pidfd, nullptr);
        ::close(c.pidfd);
        c.pidfd = -1;
    }
    --registered_;
    if (c.flags & FO_REG_CRITICAL) --critical_;
    c.owner = 0;
    c.flags = 0;
    c.signo = 0;
}

void Holder::critical_death(Conn& c) {
    unregister(c);
    ++critical_deaths_;
    if (state_ == FOSTATE_FAILED || !fo_fsm_find(type_, state_, type_, FOSTATE_FAILED)) return;
    send_message();  // first: it is what the partner waits for
    change(type_, FOSTATE_FAILED, FO_CAUSE_CRITICAL);
}

void Holder::send_message() {
    if (!msg_armed_ || msg_fd_ < 0) return;
    ssize_t n = ::send(msg_fd_, msg_.payload, msg_.len, MSG_DONTWAIT | MSG_NOSIGNAL);
    if (n == ssize_t(msg_.len))
        ++msg_sent_;
    else
        ++msg_errors_;
    msg_armed_ = false;  // sent once, like the module
}

void Holder::change(uint8_t type, uint8_t state, uint8_t cause) {
    type_ = type;
    state_ = state;
    last_cause_ = cause;
    ++generation_;
    notify_all();
}

void Holder::notify_all() {
    uint64_t val = FO_SIGVAL(type_, state_, last_cause_, generation_);
    for (auto& [id, c] : conns_) {
        if (!c.owner || !(c.flags & FO_REG_NOTIFY)) continue;
        siginfo_t si{};
        si.si_signo = c.signo;
        si.si_code = FO_SI_CODE;
        si.si_pid = getpid();
        si.si_uid = getuid();
        si.si_value.sival_ptr = reinterpret_cast<void*>(uintptr_t(val));
        if (pidfd_send_signal(c.pidfd, c.signo, &si, 0) != 0) ++signals_dropped_;
    }
}

void Holder::on_pidfd(uint64_t id) {
    auto it = conns_.find(id);
    if (it == conns_.end()) return;
    // The registering process exited (the connection may live on in a child it forked).
    registration_ended(it->second);
}

// A registration ended without unregister: for a critical process that is a critical death.
void Holder::registration_ended(Conn& c) {
    if (c.flags & FO_REG_CRITICAL)
        critical_death(c);
    else
        unregister(c);
}

void Holder::close_conn(uint64_t id) {
    auto it = conns_.find(id);
    if (it == conns_.end()) return;
    Conn& c = it->second;
    registration_ended(c);
    epoll_ctl(ep_, EPOLL_CTL_DEL, c.fd, nullptr);
    ::close(c.fd);
    conns_.erase(it);
}

}  // namespace of::fo
