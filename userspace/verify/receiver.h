// A UDP receiving socket for measurements: recvmmsg in batches, kernel arrival timestamps
// (SO_TIMESTAMPNS, CLOCK_REALTIME) and the socket's drop counter (SO_RXQ_OVFL), so that losses in
// our own receive buffer are told apart from losses on the network.
#pragma once

#include <netinet/in.h>

#include <cstdint>
#include <functional>
#include <span>
#include <vector>

#include "common/result.h"

namespace of::verify {

class UdpReceiver {
public:
    static constexpr size_t kBatch = 64;
    static constexpr size_t kMaxDatagram = 2048;  // 12 (RTP) + 7 * 188 fits; longer is truncated

    // Binds 0.0.0.0:port (0: any free port). rcvbuf: bytes asked for (SO_RCVBUFFORCE when root).
    static Result<UdpReceiver> open(uint16_t port, int rcvbuf = 8 << 20);
    // Two sockets on an even port and the next one (RTP and RTCP). port 0: any free pair.
    static Result<std::pair<UdpReceiver, UdpReceiver>> open_pair(uint16_t port, int rcvbuf = 8 << 20);

    UdpReceiver(UdpReceiver&&) noexcept;
    UdpReceiver& operator=(UdpReceiver&&) noexcept;
    ~UdpReceiver();

    int fd() const { return fd_; }
    uint16_t port() const { return port_; }

    using Sink = std::function<void(std::span<const uint8_t> data, int64_t arrival_ns, const sockaddr_in& from)>;
    // Receives what is queued, without blocking, in batches of kBatch until the socket is empty or
    // max datagrams were taken. Returns how many.
    Result<size_t> receive(const Sink& sink, size_t max = SIZE_MAX);

    uint64_t drops() const { return drops_; }        // SO_RXQ_OVFL, since open
    uint64_t truncated() const { return truncated_; }

private:
    UdpReceiver() = default;
    int fd_ = -1;
    uint16_t port_ = 0;
    uint64_t drops_ = 0;
    uint64_t truncated_ = 0;
    std::vector<uint8_t> bufs_;
    std::vector<uint8_t> ctrl_;
};

}  // namespace of::verify
