// MPEG-TS packet fields (ISO/IEC 13818-1 2.4.3), read from untrusted bytes without copying.
// Every accessor checks what it reads; none of them assumes a well-formed packet.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>

namespace of::mpegts {

constexpr size_t kPacketSize = 188;
constexpr size_t kPacketsPerDatagram = 7;
constexpr size_t kDatagramSize = kPacketSize * kPacketsPerDatagram;  // 1316
constexpr uint8_t kSyncByte = 0x47;
constexpr uint16_t kNullPid = 0x1fff;
constexpr int64_t kPcrHz = 27'000'000;  // PCR = base * 300 + ext, 27 MHz
constexpr int64_t kPcrWrap = (int64_t(1) << 33) * 300;

struct PacketView {
    const uint8_t* p;  // exactly kPacketSize bytes

    bool sync() const { return p[0] == kSyncByte; }
    bool transport_error() const { return p[1] & 0x80; }
    bool payload_unit_start() const { return p[1] & 0x40; }
    uint16_t pid() const { return uint16_t((p[1] & 0x1f) << 8 | p[2]); }
    uint8_t scrambling() const { return p[3] >> 6; }
    bool has_adaptation() const { return p[3] & 0x20; }
    bool has_payload() const { return p[3] & 0x10; }
    uint8_t continuity_counter() const { return p[3] & 0x0f; }

    // Adaptation field length, or nullopt if absent or longer than the packet allows.
    std::optional<uint8_t> adaptation_length() const {
        if (!has_adaptation()) return std::nullopt;
        uint8_t len = p[4];
        if (len > 183) return std::nullopt;
        return len;
    }
    uint8_t adaptation_flags() const {
        auto len = adaptation_length();
        return (len && *len > 0) ? p[5] : 0;
    }
    bool discontinuity() const { return adaptation_flags() & 0x80; }
    bool random_access() const { return adaptation_flags() & 0x40; }

    // The 27 MHz PCR if this packet carries one (PCR_flag set and the field fits).
    std::optional<int64_t> pcr() const {
        auto len = adaptation_length();
        if (!len || *len < 7 || !(p[5] & 0x10)) return std::nullopt;
        const uint8_t* f = p + 6;
        int64_t base = int64_t(f[0]) << 25 | int64_t(f[1]) << 17 | int64_t(f[2]) << 9 |
                       int64_t(f[3]) << 1 | int64_t(f[4] >> 7);
        int64_t ext = int64_t(f[4] & 0x01) << 8 | f[5];
        return base * 300 + ext;
    }

    // Offset of the payload within the packet, or nullopt if there is none or the header is bad.
    std::optional<size_t> payload_offset() const {
        if (!has_payload()) return std::nullopt;
        size_t off = 4;
        if (has_adaptation()) {
            auto len = adaptation_length();
            if (!len) return std::nullopt;
            off += 1 + *len;
        }
        if (off >= kPacketSize) return std::nullopt;
        return off;
    }
};

// Sets or clears the discontinuity_indicator of a packet that has an adaptation field of length >= 1
// (used at migration hand-over points, seed 002). Returns false if the packet has no room for it.
inline bool set_discontinuity(uint8_t* p, bool on) {
    PacketView v{p};
    auto len = v.adaptation_length();
    if (!len || *len < 1) return false;
    p[5] = on ? (p[5] | 0x80) : (p[5] & ~0x80);
    return true;
}

}  // namespace of::mpegts
