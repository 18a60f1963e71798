// A packet socket on one interface that receives the TCP segments of one service (address and
// port) in both directions: what the gate's ingress program copies on a stream interface, here on
// loopback (which the gate does not attach to) for the revival tests. Classic BPF filter, outgoing
// packets ignored (on loopback every packet is also received once).
#pragma once

#include <arpa/inet.h>
#include <linux/filter.h>
#include <linux/if_ether.h>
#include <linux/if_packet.h>
#include <net/if.h>
#include <sys/socket.h>
#include <unistd.h>

#include <functional>
#include <string>
#include <vector>

#include "common/clock.h"
#include "common/result.h"
#include "tcp_takeover/segment.h"

namespace of::test {

class PacketTap {
public:
    static Result<PacketTap> open(const std::string& ifname, in_addr server, uint16_t port) {
        unsigned ifindex = if_nametoindex(ifname.c_str());
        if (!ifindex) return errno_error("tap: interface " + ifname);
        PacketTap t;
        t.fd_ = socket(AF_PACKET, SOCK_RAW | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);  // nothing queued yet
        if (t.fd_ < 0) return errno_error("tap: packet socket");
        uint32_t ip = ntohl(server.s_addr);
        // IPv4, TCP, not a fragment, from server:port or to server:port. Jumps count instructions.
        std::vector<sock_filter> prog = {
            BPF_STMT(BPF_LD | BPF_H | BPF_ABS, 12),
            BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, ETH_P_IP, 0, 14),
            BPF_STMT(BPF_LD | BPF_B | BPF_ABS, 23),
            BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, IPPROTO_TCP, 0, 12),
            BPF_STMT(BPF_LD | BPF_H | BPF_ABS, 20),
            BPF_JUMP(BPF_JMP | BPF_JSET | BPF_K, 0x1fff, 10, 0),
            BPF_STMT(BPF_LDX | BPF_B | BPF_MSH, 14),
            BPF_STMT(BPF_LD | BPF_W | BPF_ABS, 26),
            BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, ip, 0, 2),
            BPF_STMT(BPF_LD | BPF_H | BPF_IND, 14),
            BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, port, 4, 0),
            BPF_STMT(BPF_LD | BPF_W | BPF_ABS, 30),
            BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, ip, 0, 3),
            BPF_STMT(BPF_LD | BPF_H | BPF_IND, 16),
            BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, port, 0, 1),
            BPF_STMT(BPF_RET | BPF_K, 0x10000),
            BPF_STMT(BPF_RET | BPF_K, 0),
        };
        sock_fprog fp{uint16_t(prog.size()), prog.data()};
        int one = 1;
        if (setsockopt(t.fd_, SOL_SOCKET, SO_ATTACH_FILTER, &fp, sizeof fp) < 0) return errno_error("tap: filter");
        if (setsockopt(t.fd_, SOL_PACKET, PACKET_IGNORE_OUTGOING, &one, sizeof one) < 0)
            return errno_error("tap: PACKET_IGNORE_OUTGOING");
        sockaddr_ll sll{};
        sll.sll_family = AF_PACKET;
        sll.sll_protocol = htons(ETH_P_ALL);
        sll.sll_ifindex = int(ifindex);
        if (bind(t.fd_, reinterpret_cast<sockaddr*>(&sll), sizeof sll) < 0) return errno_error("tap: bind");
        return t;
    }
    PacketTap(PacketTap&& o) noexcept : fd_(o.fd_), frames_(o.frames_) { o.fd_ = -1; }
    PacketTap(const PacketTap&) = delete;
    PacketTap& operator=(const PacketTap&) = delete;
    ~PacketTap() {
        if (fd_ >= 0) close(fd_);
    }

    // Every segment waiting, to `sink` (checksums not verified: loopback leaves them to "hardware").
    size_t drain(const std::function<void(const tcp_takeover::Segment&, int64_t)>& sink) {
        size_t n = 0;
        std::vector<uint8_t> buf(0x10000);
        for (;;) {
            ssize_t len = recv(fd_, buf.data(), buf.size(), MSG_DONTWAIT);
            if (len < 0 && errno == EINTR) continue;
            if (len <= 0) break;
            ++frames_;
            auto seg = tcp_takeover::parse_frame(std::span<const uint8_t>(buf.data(), size_t(len)), false);
            if (seg) sink(*seg, monotonic_ns());
            ++n;
        }
        return n;
    }
    uint64_t frames() const { return frames_; }

private:
    PacketTap() = default;
    int fd_ = -1;
    uint64_t frames_ = 0;
};

}  // namespace of::test
