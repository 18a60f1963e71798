// The userspace backend: requests to a Holder over a unix SEQPACKET socket.
#include "libfo/libfo.h"
#include "libfo/status_conv.h"
#include "libfo/wire.h"

#include <poll.h>
// glibc 2.36 declares these without extern "C"
extern "C" {
#include <sys/pidfd.h>
}
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "common/clock.h"

namespace of::fo {
namespace {

class UserspaceBackend final : public Backend {
public:
    UserspaceBackend(int fd, pid_t holder, int timeout_ms) : fd_(fd), holder_(holder), timeout_ms_(timeout_ms) {}
    // Closing while registered critical is a critical death, as with the module.
    ~UserspaceBackend() override { ::close(fd_); }

    BackendKind kind() const override { return BackendKind::Userspace; }

    of::Result<Status> status() override {
        auto r = call(wire::Op::GetStatus, nullptr, 0, -1, "status");
        if (!r) return r.error();
        return from_uapi(r->status);
    }

    of::Status set_message(const FailoverMessage& m) override {
        auto u = to_uapi(m);
        if (!u) return u.error();
        auto r = call(wire::Op::SetMessage, &u.value(), sizeof(fo_message), -1, "set message");
        if (!r) return r.error();
        return {};
    }

    of::Status clear_message() override {
        fo_message u{};
        auto r = call(wire::Op::SetMessage, &u, sizeof(u), -1, "clear message");
        if (!r) return r.error();
        return {};
    }

protected:
    of::Status do_transition(const fo_transition& t) override {
        auto r = call(wire::Op::SetState, &t, sizeof(t), -1, "holder");
        if (!r) return r.error();
        return {};
    }
    of::Status do_register(const fo_registration& r) override {
        // Our own pidfd ties the registration to this process's life (holder.h).
        int pidfd = pidfd_open(getpid(), 0);
        if (pidfd < 0) return errno_error("pidfd_open");
        auto res = call(wire::Op::Register, &r, sizeof(r), pidfd, "holder register");
        ::close(pidfd);
        if (!res) return res.error();
        return {};
    }
    of::Status do_unregister() override {
        auto r = call(wire::Op::Unregister, nullptr, 0, -1, "holder unregister");
        if (!r) return r.error();
        return {};
    }
    pid_t notifier_pid() const override { return holder_; }

private:
    of::Result<wire::Reply> call(wire::Op op, const void* body, size_t len, int pass_fd, const char* what) {
        uint8_t pkt[wire::kMaxRequest];
        wire::Header h{wire::kMagic, uint32_t(op), ++seq_};
        std::memcpy(pkt, &h, sizeof(h));
        if (len) std::memcpy(pkt + sizeof(h), body, len);
        iovec iov{pkt, sizeof(h) + len};
        msghdr mh{};
        mh.msg_iov = &iov;
        mh.msg_iovlen = 1;
        alignas(cmsghdr) char ctrl[CMSG_SPACE(sizeof(int))];
        if (pass_fd >= 0) {
            std::memset(ctrl, 0, sizeof(ctrl));
            mh.msg_control = ctrl;
            mh.msg_controllen = sizeof(ctrl);
            cmsghdr* cm = CMSG_FIRSTHDR(&mh);
            cm->cmsg_level = SOL_SOCKET;
            cm->cmsg_type = SCM_RIGHTS;
            cm->cmsg_len = CMSG_LEN(sizeof(int));
            std::memcpy(CMSG_DATA(cm), &pass_fd, sizeof(int));
        }
        if (::sendmsg(fd_, &mh, MSG_NOSIGNAL) < 0) return errno_error(std::string(what) + ": send to holder");
        int64_t deadline = of::monotonic_ns() + int64_t(timeout_ms_) * 1'000'000;
        for (;;) {
            int64_t left_ms = (deadline - of::monotonic_ns()) / 1'000'000;
            if (left_ms < 0) return make_error(ETIMEDOUT, std::string(what) + ": no reply from holder");
            pollfd p{fd_, POLLIN, 0};
            int rc = ::poll(&p, 1, int(left_ms) + 1);
            if (rc < 0 && errno == EINTR) continue;
            if (rc < 0) return errno_error("poll holder socket");
            if (rc == 0) continue;
            wire::Reply r{};
            ssize_t n = ::recv(fd_, &r, sizeof(r), MSG_DONTWAIT);
            if (n < 0 && (errno == EAGAIN || errno == EINTR)) continue;
            if (n < 0) return errno_error(std::string(what) + ": receive from holder");
            if (n == 0) return make_error(ECONNRESET, std::string(what) + ": holder closed the connection");
            if (size_t(n) != sizeof(r) || r.magic != wire::kMagic || r.err < 0)
                return make_error(EPROTO, std::string(what) + ": malformed reply from holder");
            if (r.seq != h.seq) continue;  // the late reply to a request that timed out
            if (r.err) return make_error(r.err, std::string(what) + ": " + errno_meaning(r.err));
            return r;
        }
    }

    int fd_;
    pid_t holder_;
    int timeout_ms_;
    uint32_t seq_ = 0;
};

}  // namespace

of::Result<std::unique_ptr<Backend>> open_userspace_backend(const std::string& socket_path, int timeout_ms) {
    sockaddr_un sun{};
    sun.sun_family = AF_UNIX;
    if (socket_path.empty() || socket_path.size() >= sizeof(sun.sun_path))
        return make_error(EINVAL, "holder socket path empty or too long: " + socket_path);
    if (timeout_ms <= 0 || timeout_ms > 60'000) return make_error(EINVAL, "holder timeout must be 1..60000 ms");
    std::memcpy(sun.sun_path, socket_path.data(), socket_path.size());
    int fd = ::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
    if (fd < 0) return errno_error("socket AF_UNIX");
    if (::connect(fd, reinterpret_cast<sockaddr*>(&sun), sizeof(sun)) != 0) {
        auto e = errno_error("connect " + socket_path + " (is the failover holder running?)");
        ::close(fd);
        return e;
    }
    ucred peer{};
    socklen_t plen = sizeof(peer);
    if (::getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &peer, &plen) != 0) {
        auto e = errno_error("SO_PEERCRED " + socket_path);
        ::close(fd);
        return e;
    }
    std::unique_ptr<Backend> b(new UserspaceBackend(fd, peer.pid, timeout_ms));
    // One round trip now: a holder that does not answer is an error here, not later.
    auto st = b->status();
    if (!st) return st.error();
    return b;
}

}  // namespace of::fo
