// The tap: a packet socket on the stream interface that receives the TCP segments of one service
// (address and port) in both directions, as the hub delivers them: the clients' segments to it and,
// on a standby server, the active server's segments from it. A classic BPF filter in the kernel
// passes only those, so the flood of stream datagrams on the same interface never reaches
// userspace. Outgoing packets are not looked at (PACKET_IGNORE_OUTGOING). Needs CAP_NET_RAW.
#pragma once

#include <netinet/in.h>

#include <cstdint>
#include <functional>
#include <string>

#include "common/result.h"
#include "tcp_takeover/segment.h"

namespace of::tcp_takeover {

struct TapCounters {
    uint64_t frames = 0;     // passed by the filter and read
    uint64_t malformed = 0;  // refused by parse_frame (bad lengths, bad checksum, ...)
    uint64_t dropped = 0;    // the kernel's count of frames the socket had no room for
};

class Tap {
public:
    // Opens the tap on `ifname` in the calling thread's network namespace.
    static Result<Tap> open(const std::string& ifname, in_addr server, uint16_t port);
    Tap(Tap&&) noexcept;
    Tap& operator=(Tap&&) noexcept;
    Tap(const Tap&) = delete;
    Tap& operator=(const Tap&) = delete;
    ~Tap();

    int fd() const { return fd_; }
    // Reads up to `max` frames without blocking and hands each well-formed segment to `sink`.
    // Returns the number of frames read. Checksums are verified unless the kernel says the frame
    // was checked already or was made on this host (veth).
    Result<size_t> drain(const std::function<void(const Segment&)>& sink, size_t max = 4096);
    TapCounters counters() const;

private:
    Tap() = default;
    int fd_ = -1;
    mutable TapCounters counters_;  // dropped is summed on read (the kernel resets its count)
};

}  // namespace of::tcp_takeover
