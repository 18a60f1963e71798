// One TCP segment as a frame on the stream LAN carried it: Ethernet (up to two VLAN tags), IPv4,
// TCP with its options. Frames come from the hub, so from anyone: the parser bounds every read
// and refuses what it cannot read whole (fragments, truncated headers, bad lengths).
#pragma once

#include <netinet/in.h>

#include <cstdint>
#include <optional>
#include <span>

#include "common/result.h"

namespace of::tcp_takeover {

// TCP header flags (RFC 9293), as in the flags byte.
inline constexpr uint8_t kFin = 0x01, kSyn = 0x02, kRst = 0x04, kPsh = 0x08, kAck = 0x10;

struct Segment {
    in_addr saddr{}, daddr{};
    uint16_t sport = 0, dport = 0;  // host order
    uint32_t seq = 0, ack = 0;
    uint8_t flags = 0;
    uint16_t window = 0;            // as on the wire (unscaled)
    // Options (RFC 9293, 7323, 2018); only the ones a connection restore needs.
    std::optional<uint16_t> mss;
    std::optional<uint8_t> wscale;
    bool sack_permitted = false;
    std::optional<uint32_t> ts_val, ts_ecr;
    std::span<const uint8_t> payload;  // points into the frame

    // Sequence space the segment occupies: payload, plus one each for SYN and FIN.
    uint32_t seq_len() const {
        return uint32_t(payload.size()) + ((flags & kSyn) ? 1 : 0) + ((flags & kFin) ? 1 : 0);
    }
};

// Parses an Ethernet frame. ENOENT: not IPv4/TCP (nothing wrong, just not ours); EBADMSG:
// malformed, with the reason. When `verify_checksum` is set the TCP checksum must be right (a
// frame whose checksum the sending host left to hardware, as on veth, is not verifiable: the tap
// says so, see Tap).
Result<Segment> parse_frame(std::span<const uint8_t> frame, bool verify_checksum);

// RFC 1982 order on 32-bit sequence numbers: a is after b.
inline bool seq_after(uint32_t a, uint32_t b) { return int32_t(a - b) > 0; }
inline bool seq_before(uint32_t a, uint32_t b) { return int32_t(a - b) < 0; }

}  // namespace of::tcp_takeover
