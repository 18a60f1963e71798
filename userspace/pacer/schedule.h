// The send schedule: when each datagram of a session leaves, and what RTP header it carries.
//
// A session plays in segments (PLAY starts one, PAUSE ends it, resume starts the next). Within a
// segment, datagram j carries TS packets start_packet + 7j .. +6 and leaves at
//     start_time_ns + T(start_packet + 7j) - T(start_packet)
// where T is the asset's PCR time map. That is a pure function of the segment and the asset
// index: the two servers of a failover pair, given the same segment, emit the same datagram at
// the same moment, which is what lets a secondary take over at an exact position.
#pragma once

#include <cstdint>
#include <cstring>

#include "mpegts/packet.h"

namespace of::pacer {

constexpr uint8_t kRtpPayloadTypeMp2t = 33;  // RFC 3551 / RFC 2250
constexpr size_t kRtpHeaderSize = 12;
constexpr int64_t kRtpClockHz = 90'000;

struct Segment {
    uint64_t start_packet = 0;   // a multiple of 7, so datagrams never straddle extents
    int64_t start_time_ns = 0;   // CLOCK_REALTIME at which datagram 0 leaves
    uint16_t seq_base = 0;       // RTP sequence number of datagram 0
    uint32_t rtp_ts_base = 0;    // RTP timestamp of datagram 0
};

// Datagrams needed to carry packets [start_packet, packet_count).
inline uint64_t datagram_count(uint64_t packet_count, uint64_t start_packet) {
    if (start_packet >= packet_count) return 0;
    return (packet_count - start_packet + mpegts::kPacketsPerDatagram - 1) / mpegts::kPacketsPerDatagram;
}

inline uint64_t first_packet_of(const Segment& s, uint64_t j) {
    return s.start_packet + j * mpegts::kPacketsPerDatagram;
}

// Rounds a packet index down to a datagram boundary of the asset (entry points are RAPs; the
// datagram that starts up to 6 packets before the RAP carries it).
inline uint64_t align_to_datagram(uint64_t packet) {
    return packet - packet % mpegts::kPacketsPerDatagram;
}

// TimeMap: anything with `int64_t packet_time_ns(uint64_t packet) const`, monotonic.
template <class TimeMap>
int64_t send_time_ns(const TimeMap& tm, const Segment& s, uint64_t j) {
    return s.start_time_ns + tm.packet_time_ns(first_packet_of(s, j)) - tm.packet_time_ns(s.start_packet);
}

inline uint16_t rtp_seq(const Segment& s, uint64_t j) { return uint16_t(s.seq_base + j); }

template <class TimeMap>
uint32_t rtp_timestamp(const TimeMap& tm, const Segment& s, uint64_t j) {
    int64_t dt = tm.packet_time_ns(first_packet_of(s, j)) - tm.packet_time_ns(s.start_packet);
    return uint32_t(s.rtp_ts_base + uint64_t(__int128(dt) * kRtpClockHz / 1'000'000'000));
}

// RFC 3550 fixed header: V=2, no padding/extension/CSRC, marker 0, PT 33.
inline void write_rtp_header(uint8_t* out, uint16_t seq, uint32_t ts, uint32_t ssrc) {
    out[0] = 0x80;
    out[1] = kRtpPayloadTypeMp2t;
    out[2] = uint8_t(seq >> 8);
    out[3] = uint8_t(seq);
    out[4] = uint8_t(ts >> 24);
    out[5] = uint8_t(ts >> 16);
    out[6] = uint8_t(ts >> 8);
    out[7] = uint8_t(ts);
    out[8] = uint8_t(ssrc >> 24);
    out[9] = uint8_t(ssrc >> 16);
    out[10] = uint8_t(ssrc >> 8);
    out[11] = uint8_t(ssrc);
}

}  // namespace of::pacer
