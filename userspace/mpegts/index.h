// The index of an ingested MPEG-TS asset: where its PCRs are, where it may be entered (random-access
// points), and the time map derived from them. The time map is a pure integer function of the
// index, so two servers holding the same index compute identical send times for every packet.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.h"
#include "mpegts/packet.h"

namespace of::mpegts {

// Why an asset was refused. Each has its own errno value in Error::code (see error_code()), so a
// caller can branch on it without parsing the message.
enum class IndexError {
    kEmpty,               // ENODATA      no bytes at all
    kNotTransportStream,  // EMEDIUMTYPE  no 0x47 sync byte at offset 0 (or within the first packets)
    kSyncLost,            // EILSEQ       sync byte missing at a later packet boundary
    kTruncated,           // EBADMSG      size not a multiple of 188: the last packet is short
    kTooLarge,            // EFBIG        more bytes than the caller's limit
    kTransportErrors,     // EPROTO       packets with transport_error_indicator beyond the limit
    kNoPcr,               // ENOMSG       no PCR on the PCR PID (or on any PID)
    kTooFewPcrs,          // EDOM         fewer than two PCRs in one continuous time base
    kPcrOutOfRange,       // ERANGE       PCR timing outside what the time map represents
    kTooManyEntries,      // E2BIG        PCR or random-access table beyond the caller's limit
    kCorruptIndex,        // EUCLEAN      a serialized index that fails its checks
};
int error_code(IndexError e);
std::string_view to_string(IndexError e);
// The IndexError an Error from this library stands for, if any.
std::optional<IndexError> index_error_of(const Error& e);
Error make_index_error(IndexError kind, const std::string& detail);

// A PCR of the PCR PID: the packet that carries it and its value in 27 MHz ticks, unwrapped across
// the 33-bit wrap and bridged across discontinuities, so values strictly increase with packet.
struct PcrPoint {
    uint64_t packet = 0;
    int64_t pcr = 0;
    bool operator==(const PcrPoint&) const = default;
};

// Hard limits of the representation (checked on build and on load).
constexpr uint64_t kMaxPackets = uint64_t(1) << 40;      // 206 TB of TS
constexpr int64_t kMaxPcrSpan = int64_t(1) << 56;        // about 84 years of 27 MHz ticks
constexpr int64_t kMaxTimeNs = int64_t(1) << 62;         // bound on any time-map value

struct IndexStats {
    uint64_t transport_errors = 0;     // packets with transport_error_indicator (tolerated ones)
    uint64_t cc_errors = 0;            // continuity_counter gaps not flagged by discontinuity_indicator
    uint64_t pcr_discontinuities = 0;  // time-base breaks bridged (flagged, backwards or > 1 s)
    bool operator==(const IndexStats&) const = default;
};

class Index {
public:
    // Builds an index from its parts, checking every invariant the time map relies on.
    static Result<Index> make(uint64_t packet_count, uint16_t pcr_pid, uint16_t rap_pid,
                              std::vector<PcrPoint> pcrs, std::vector<uint64_t> raps,
                              IndexStats stats);

    uint64_t packet_count() const { return packet_count_; }
    uint64_t bytes() const { return packet_count_ * kPacketSize; }
    uint16_t pcr_pid() const { return pcr_pid_; }
    uint16_t rap_pid() const { return rap_pid_; }  // PID whose random_access_indicator counts
    const std::vector<PcrPoint>& pcrs() const { return pcrs_; }
    const std::vector<uint64_t>& raps() const { return raps_; }  // ascending packet indices
    const IndexStats& stats() const { return stats_; }

    // Average rate between the first and the last PCR, bits per second (rounded down).
    uint64_t bitrate_bps() const;
    // packet_time_ns(packet_count()): when the last packet has been fully sent.
    int64_t duration_ns() const { return packet_time_ns(packet_count_); }

    // Time of packet n relative to packet 0 in ns: linear between the surrounding PCR points,
    // extrapolated at either end with the nearest segment's rate, rounded down. Strictly
    // increasing in n; n beyond packet_count() is clamped to packet_count().
    int64_t packet_time_ns(uint64_t n) const;
    // The first packet n with packet_time_ns(n) >= t_ns; packet_count() if t_ns > duration_ns().
    uint64_t packet_at_or_after(int64_t t_ns) const;
    // The last random-access point <= packet, or 0 if there is none.
    uint64_t rap_at_or_before(uint64_t packet) const;

    // Things an operator should know about an accepted asset (no random-access points, ...).
    std::vector<std::string> warnings() const;

    // Versioned, length-checked, checksummed; see docs/ingest.md for the layout.
    std::vector<uint8_t> serialize() const;
    static Result<Index> deserialize(std::span<const uint8_t> bytes);

    bool operator==(const Index&) const = default;

private:
    Index() = default;
    // floor((time of packet n) - (time of the first PCR)) in ns; see index.cpp.
    __int128 abs_time_ns(uint64_t n) const;

    uint64_t packet_count_ = 0;
    uint16_t pcr_pid_ = kNullPid;
    uint16_t rap_pid_ = kNullPid;
    std::vector<PcrPoint> pcrs_;
    std::vector<uint64_t> raps_;
    IndexStats stats_;
    int64_t origin_ns_ = 0;  // abs_time_ns(0), cached
};

constexpr uint32_t kIndexFormatVersion = 1;
constexpr size_t kMaxIndexFileBytes = size_t(1) << 30;

}  // namespace of::mpegts
