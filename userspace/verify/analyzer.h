// What a viewer received, measured: feed every datagram with its arrival time, read a Report.
//
// No sockets here: the caller (fo-verify, a test) receives and timestamps; this only counts. Memory is
// bounded whatever the run length: per-PID state is a fixed table, intervals go into a log histogram,
// PCR offsets into a fixed-size reservoir, and the source compare keeps a bounded look-ahead.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "common/result.h"

namespace of::verify {

enum class Mode {
    Auto,  // decided by the first datagram: 0x47 first byte means raw MP2T, RTP version 2 means RTP
    Rtp,   // RTP (RFC 3550) carrying MP2T (RFC 2250), payload a whole number of TS packets
    Raw,   // UDP payload is TS packets
};
const char* mode_name(Mode m);

struct Options {
    Mode mode = Mode::Auto;
    std::optional<uint16_t> pcr_pid;  // default: the first PID seen carrying a PCR
    size_t top_gaps = 5;              // how many of the largest gaps to keep (at most 64)
};

struct Gap {
    double ms = 0;                 // interval between two consecutive datagrams
    int64_t at_ns = 0;             // arrival (CLOCK_REALTIME ns) of the datagram that ended the gap
    int64_t prev_ns = 0;           // arrival of the datagram before it
    uint64_t index = 0;            // index (0-based) of the datagram that ended the gap
    std::optional<uint16_t> seq;   // its RTP sequence number (RTP mode)
    std::optional<uint16_t> prev_seq;
};

struct RtpStats {
    uint64_t packets = 0;      // datagrams with a valid RTP header
    uint64_t invalid = 0;      // datagrams that are not RTP v2 or whose header overruns them
    uint64_t expected = 0;     // sum over sequence runs of (highest - lowest + 1), extended
    uint64_t lost = 0;         // expected - distinct sequence numbers received
    uint64_t duplicated = 0;   // a sequence number received again
    uint64_t reordered = 0;    // arrived after a higher sequence number (filled a hole)
    uint64_t resyncs = 0;      // jumps that RFC 3550 A.1 accepted as a new sequence run
    uint64_t strays = 0;       // lone packets far outside the run, ignored (A.1 "bad_seq")
    uint64_t ssrc_changes = 0;
    uint32_t ssrc = 0;
    uint8_t payload_type = 0;
    uint16_t first_seq = 0;    // sequence number of the first RTP datagram
    uint16_t last_seq = 0;     // highest sequence number received (in the current run)
    uint32_t cycles = 0;       // times the highest sequence number wrapped past 65535
};

struct PidStats {
    uint16_t pid = 0;
    uint64_t packets = 0;
    uint64_t cc_errors = 0;        // TR 101 290 1.4
    uint64_t duplicates = 0;       // the one duplicate packet 1.4 allows
    uint64_t discontinuities = 0;  // packets with discontinuity_indicator
    bool pcr = false;              // carries PCRs
};

struct TsStats {
    uint64_t packets = 0;
    uint64_t cc_errors = 0;
    uint64_t transport_errors = 0;    // TR 101 290 2.1 (transport_error_indicator)
    uint64_t sync_byte_errors = 0;    // TR 101 290 1.2 (a packet not starting with 0x47)
    uint64_t sync_losses = 0;         // TR 101 290 1.1 (two or more bad sync bytes in a row)
    uint64_t null_packets = 0;
    uint64_t bad_length = 0;          // datagrams whose TS payload is not a multiple of 188 bytes
    std::vector<PidStats> pids;       // every PID seen except the null PID, ascending
};

struct JitterStats {
    std::optional<uint16_t> pcr_pid;
    uint64_t samples = 0;          // datagrams timed against the PCR PID's schedule (all but the first PCR's)
    uint64_t pcr_discontinuities = 0;  // PCR jumps re-anchored (discontinuity_indicator or > 1 s off)
    bool sampled = false;          // more samples than the reservoir holds: p50/p99 are estimates
    double p50_ms = 0, p99_ms = 0, max_ms = 0;
};

struct CompareStats {
    bool enabled = false;
    bool aligned = false;          // found where the received packets start in the source
    uint64_t source_packets = 0;
    uint64_t start_packet = 0;     // source index of the first received packet that aligned
    uint64_t end_packet = 0;       // source index after the last matched packet
    uint64_t matched = 0;          // received packets equal to the next source packet
    uint64_t mismatched = 0;       // received packets that differ from it (or precede alignment)
    uint64_t missing = 0;          // source packets skipped over (never received in order)
    uint64_t extra = 0;            // received packets that repeat an earlier source packet or run past its end
    std::optional<uint64_t> first_error_packet;  // received TS packet index of the first problem
    // Every source packet from start_packet to end_packet arrived, once, in order, intact.
    bool in_order_complete() const {
        return enabled && aligned && mismatched == 0 && missing == 0 && extra == 0 && matched > 0;
    }
};

struct Report {
    Mode mode = Mode::Auto;        // the mode used (Auto resolved; Auto only if nothing arrived)
    uint64_t datagrams = 0;
    uint64_t bytes = 0;            // UDP payload bytes
    uint64_t ts_packets = 0;
    int64_t first_ns = 0, last_ns = 0;  // arrival of the first and last datagram (CLOCK_REALTIME)
    RtpStats rtp;
    TsStats ts;
    std::optional<Gap> largest_gap;
    std::vector<Gap> top_gaps;     // largest first
    double median_interval_ms = 0; // the nominal spacing of datagrams
    double p99_interval_ms = 0;
    JitterStats jitter;
    CompareStats compare;

    double duration_s() const { return datagrams > 1 ? double(last_ns - first_ns) / 1e9 : 0.0; }
    // Any sign that a packet was lost, repeated, reordered or altered.
    bool has_errors() const;
};

class Analyzer {
public:
    explicit Analyzer(Options opt = {});
    ~Analyzer();
    Analyzer(Analyzer&&) noexcept;
    Analyzer& operator=(Analyzer&&) noexcept;

    // Compares every received TS packet with `source` (a whole .ts file). The bytes are not copied:
    // they must outlive the Analyzer. Call before the first add(). EINVAL if shorter than one packet.
    Status set_source(std::span<const uint8_t> source);

    // One UDP payload as received, with its arrival time (CLOCK_REALTIME ns, SO_TIMESTAMPNS).
    void add(std::span<const uint8_t> datagram, int64_t arrival_ns);

    // The TS packets of the last datagram given to add() (empty if it was not understood), for
    // callers that save the received stream.
    std::span<const uint8_t> last_ts_payload() const;

    uint64_t datagrams() const;

    // A snapshot; the Analyzer can keep receiving afterwards.
    Report report() const;

private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

}  // namespace of::verify
