#include "tcp_takeover/tap.h"

#include <arpa/inet.h>
#include <linux/filter.h>
#include <linux/if_ether.h>
#include <linux/if_packet.h>
#include <net/if.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstring>
#include <vector>

namespace of::tcp_takeover {
namespace {

constexpr uint32_t kSnap = 0x10000;  // RTSP segments are small; a bigger frame is cut, counted malformed

// Classic BPF, offsets from the Ethernet header: IPv4, TCP, not a fragment, and either from
// server:port or to server:port. Jump offsets count the instructions skipped.
std::vector<sock_filter> service_filter(in_addr server, uint16_t port) {
    uint32_t ip = ntohl(server.s_addr);
    return {
        BPF_STMT(BPF_LD | BPF_H | BPF_ABS, 12),                 // 0: ethertype
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, ETH_P_IP, 0, 14),   // 1: IPv4, else drop
        BPF_STMT(BPF_LD | BPF_B | BPF_ABS, 23),                 // 2: protocol
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, IPPROTO_TCP, 0, 12),// 3: TCP, else drop
        BPF_STMT(BPF_LD | BPF_H | BPF_ABS, 20),                 // 4: flags and fragment offset
        BPF_JUMP(BPF_JMP | BPF_JSET | BPF_K, 0x1fff, 10, 0),    // 5: a fragment: drop
        BPF_STMT(BPF_LDX | BPF_B | BPF_MSH, 14),                // 6: x = IPv4 header length
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, 26),                 // 7: source address
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, ip, 0, 2),          // 8: from the server? else 11
        BPF_STMT(BPF_LD | BPF_H | BPF_IND, 14),                 // 9: source port
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, port, 4, 0),        // 10: accept : try 11
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, 30),                 // 11: destination address
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, ip, 0, 3),          // 12: to the server? else drop
        BPF_STMT(BPF_LD | BPF_H | BPF_IND, 16),                 // 13: destination port
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, port, 0, 1),        // 14: accept : drop
        BPF_STMT(BPF_RET | BPF_K, kSnap),                       // 15: accept
        BPF_STMT(BPF_RET | BPF_K, 0),                           // 16: drop
    };
}

}  // namespace

Result<Tap> Tap::open(const std::string& ifname, in_addr server, uint16_t port) {
    unsigned ifindex = if_nametoindex(ifname.c_str());
    if (!ifindex) return errno_error("tap: interface " + ifname);
    // Protocol 0: nothing is queued before the filter is in place and bind() names the protocol.
    int fd = socket(AF_PACKET, SOCK_RAW | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) return errno_error("tap: packet socket");
    Tap t;
    t.fd_ = fd;
    auto prog = service_filter(server, port);
    sock_fprog fp{uint16_t(prog.size()), prog.data()};
    int one = 1, rcvbuf = 4 << 20;
    if (setsockopt(fd, SOL_SOCKET, SO_ATTACH_FILTER, &fp, sizeof fp) < 0) return errno_error("tap: SO_ATTACH_FILTER");
    if (setsockopt(fd, SOL_PACKET, PACKET_AUXDATA, &one, sizeof one) < 0) return errno_error("tap: PACKET_AUXDATA");
    if (setsockopt(fd, SOL_PACKET, PACKET_IGNORE_OUTGOING, &one, sizeof one) < 0)
        return errno_error("tap: PACKET_IGNORE_OUTGOING");
    (void)setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);
    sockaddr_ll sll{};
    sll.sll_family = AF_PACKET;
    sll.sll_protocol = htons(ETH_P_ALL);
    sll.sll_ifindex = int(ifindex);
    if (bind(fd, reinterpret_cast<sockaddr*>(&sll), sizeof sll) < 0) return errno_error("tap: bind to " + ifname);
    return t;
}

Tap::Tap(Tap&& o) noexcept : fd_(o.fd_), counters_(o.counters_) { o.fd_ = -1; }
Tap& Tap::operator=(Tap&& o) noexcept {
    if (this != &o) {
        if (fd_ >= 0) close(fd_);
        fd_ = o.fd_;
        counters_ = o.counters_;
        o.fd_ = -1;
    }
    return *this;
}
Tap::~Tap() {
    if (fd_ >= 0) close(fd_);
}

Result<size_t> Tap::drain(const std::function<void(const Segment&)>& sink, size_t max) {
    static thread_local std::vector<uint8_t> buf(kSnap);
    size_t n = 0;
    for (; n < max; ++n) {
        iovec iov{buf.data(), buf.size()};
        alignas(cmsghdr) char cbuf[CMSG_SPACE(sizeof(tpacket_auxdata))];
        msghdr mh{};
        mh.msg_iov = &iov;
        mh.msg_iovlen = 1;
        mh.msg_control = cbuf;
        mh.msg_controllen = sizeof cbuf;
        ssize_t len = recvmsg(fd_, &mh, MSG_DONTWAIT | MSG_TRUNC);
        if (len < 0) {
            if (errno == EINTR) continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK) break;
            return errno_error("tap: recvmsg");
        }
        ++counters_.frames;
        if (size_t(len) > buf.size() || (mh.msg_flags & MSG_TRUNC)) {
            ++counters_.malformed;
            continue;
        }
        // The kernel knows whether the checksum was checked (by the NIC or the stack) or is
        // not there yet (made on this host, e.g. by the partner's namespace over veth).
        bool verify = true;
        for (cmsghdr* c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c)) {
            if (c->cmsg_level != SOL_PACKET || c->cmsg_type != PACKET_AUXDATA) continue;
            tpacket_auxdata aux;
            std::memcpy(&aux, CMSG_DATA(c), sizeof aux);
            if (aux.tp_status & (TP_STATUS_CSUM_VALID | TP_STATUS_CSUMNOTREADY)) verify = false;
        }
        auto seg = parse_frame(std::span<const uint8_t>(buf.data(), size_t(len)), verify);
        if (!seg) {
            ++counters_.malformed;
            continue;
        }
        sink(*seg);
    }
    return n;
}

TapCounters Tap::counters() const {
    TapCounters c = counters_;
    tpacket_stats st{};
    socklen_t sl = sizeof st;
    // The kernel's counters reset on every read: keep the running sum.
    if (getsockopt(fd_, SOL_PACKET, PACKET_STATISTICS, &st, &sl) == 0) counters_.dropped += st.tp_drops;
    c.dropped = counters_.dropped;
    return c;
}

}  // namespace of::tcp_takeover
