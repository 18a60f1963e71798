#include "verify/receiver.h"

#include <sys/socket.h>
#include <unistd.h>

#include <cstring>
#include <utility>

#include "common/clock.h"

namespace of::verify {

namespace {
constexpr size_t kCtrl = 128;  // room for SCM_TIMESTAMPNS and SO_RXQ_OVFL
}

Result<UdpReceiver> UdpReceiver::open(uint16_t port, int rcvbuf) {
    UdpReceiver r;
    r.fd_ = ::socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (r.fd_ < 0) return errno_error("socket");
    int one = 1;
    if (setsockopt(r.fd_, SOL_SOCKET, SO_TIMESTAMPNS, &one, sizeof one) < 0) return errno_error("SO_TIMESTAMPNS");
    if (setsockopt(r.fd_, SOL_SOCKET, SO_RXQ_OVFL, &one, sizeof one) < 0) return errno_error("SO_RXQ_OVFL");
    // A bigger buffer rides out the moments we spend on RTSP keepalives; FORCE needs CAP_NET_ADMIN.
    if (setsockopt(r.fd_, SOL_SOCKET, SO_RCVBUFFORCE, &rcvbuf, sizeof rcvbuf) < 0)
        (void)setsockopt(r.fd_, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_ANY);
    a.sin_port = htons(port);
    if (::bind(r.fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) < 0)
        return errno_error("bind UDP port " + std::to_string(port));
    socklen_t len = sizeof a;
    if (getsockname(r.fd_, reinterpret_cast<sockaddr*>(&a), &len) < 0) return errno_error("getsockname");
    r.port_ = ntohs(a.sin_port);
    r.bufs_.resize(kBatch * kMaxDatagram);
    r.ctrl_.resize(kBatch * kCtrl);
    return r;
}

Result<std::pair<UdpReceiver, UdpReceiver>> UdpReceiver::open_pair(uint16_t port, int rcvbuf) {
    if (port != 0) {
        if (port % 2 != 0 || port == 65534) return make_error(EINVAL, "client port must be even and below 65534");
        auto a = open(port, rcvbuf);
        if (!a) return a.error();
        auto b = open(uint16_t(port + 1), 1 << 16);
        if (!b) return b.error();
        return std::make_pair(std::move(*a), std::move(*b));
    }
    // Let the kernel pick, keep it if even and its neighbour is free.
    for (int attempt = 0; attempt < 64; ++attempt) {
        auto a = open(0, rcvbuf);
        if (!a) return a.error();
        uint16_t p = a->port();
        if (p % 2 != 0 || p == 65534) continue;
        auto b = open(uint16_t(p + 1), 1 << 16);
        if (b) return std::make_pair(std::move(*a), std::move(*b));
    }
    return make_error(EADDRINUSE, "no free even/odd UDP port pair found in 64 tries");
}

UdpReceiver::UdpReceiver(UdpReceiver&& o) noexcept
    : fd_(std::exchange(o.fd_, -1)), port_(o.port_), drops_(o.drops_), truncated_(o.truncated_),
      bufs_(std::move(o.bufs_)), ctrl_(std::move(o.ctrl_)) {}

UdpReceiver& UdpReceiver::operator=(UdpReceiver&& o) noexcept {
    if (this != &o) {
        if (fd_ >= 0) ::close(fd_);
        fd_ = std::exchange(o.fd_, -1);
        port_ = o.port_;
        drops_ = o.drops_;
        truncated_ = o.truncated_;
        bufs_ = std::move(o.bufs_);
        ctrl_ = std::move(o.ctrl_);
    }
    return *this;
}

UdpReceiver::~UdpReceiver() {
    if (fd_ >= 0) ::close(fd_);
}

Result<size_t> UdpReceiver::receive(const Sink& sink, size_t max) {
    size_t total = 0;
    mmsghdr msgs[kBatch];
    iovec iov[kBatch];
    sockaddr_in from[kBatch];
    while (total < max) {
        size_t want = std::min(kBatch, max - total);
        for (size_t i = 0; i < want; ++i) {
            iov[i] = {bufs_.data() + i * kMaxDatagram, kMaxDatagram};
            std::memset(&msgs[i], 0, sizeof msgs[i]);
            msgs[i].msg_hdr.msg_iov = &iov[i];
            msgs[i].msg_hdr.msg_iovlen = 1;
            msgs[i].msg_hdr.msg_name = &from[i];
            msgs[i].msg_hdr.msg_namelen = sizeof from[i];
            msgs[i].msg_hdr.msg_control = ctrl_.data() + i * kCtrl;
            msgs[i].msg_hdr.msg_controllen = kCtrl;
        }
        int n = ::recvmmsg(fd_, msgs, unsigned(want), MSG_DONTWAIT, nullptr);
        if (n < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK) break;
            if (errno == EINTR) continue;
            return errno_error("recvmmsg");
        }
        for (int i = 0; i < n; ++i) {
            msghdr& h = msgs[i].msg_hdr;
            int64_t ts = 0;
            for (cmsghdr* c = CMSG_FIRSTHDR(&h); c; c = CMSG_NXTHDR(&h, c)) {
                if (c->cmsg_level != SOL_SOCKET) continue;
                if (c->cmsg_type == SCM_TIMESTAMPNS && c->cmsg_len >= CMSG_LEN(sizeof(timespec))) {
                    timespec t;
                    std::memcpy(&t, CMSG_DATA(c), sizeof t);
                    ts = int64_t(t.tv_sec) * 1'000'000'000 + t.tv_nsec;
                } else if (c->cmsg_type == SO_RXQ_OVFL && c->cmsg_len >= CMSG_LEN(sizeof(uint32_t))) {
                    uint32_t d;
                    std::memcpy(&d, CMSG_DATA(c), sizeof d);
                    drops_ = d;  // cumulative count for the socket
                }
            }
            if (ts == 0) ts = realtime_ns();  // no timestamp (should not happen): best effort
            size_t len = msgs[i].msg_len;
            if (h.msg_flags & MSG_TRUNC) {
                ++truncated_;
                len = std::min(len, kMaxDatagram);
            }
            sink({bufs_.data() + size_t(i) * kMaxDatagram, len}, ts, from[i]);
        }
        total += size_t(n);
        if (size_t(n) < want) break;
    }
    return total;
}

}  // namespace of::verify
