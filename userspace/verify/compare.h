// Received TS packets against the source file, packet by packet: where does the stream start in
// the source, and does every following packet equal the next source packet? Bounded memory: a few
// dozen buffered packets while aligning, a few while deciding what a mismatch was.
#pragma once

#include <array>
#include <cstdint>
#include <span>
#include <vector>

#include "verify/analyzer.h"

namespace of::verify {

class SourceCompare {
public:
    static constexpr size_t kRun = 8;          // consecutive packets that must match to align
    static constexpr size_t kAlignTries = 64;  // received packets tried as the start before giving up
    static constexpr size_t kPending = 32;     // received packets that judge a mismatch's explanations
    static constexpr uint64_t kLookahead = 65536;  // source packets searched either way after one

    explicit SourceCompare(std::span<const uint8_t> source);

    void add(const uint8_t* packet);  // exactly 188 bytes
    // Counts so far, as if the stream ended now (the object itself is not changed).
    CompareStats stats() const;

private:
    using Packet = std::array<uint8_t, 188>;
    const uint8_t* src(uint64_t i) const { return source_.data() + i * 188; }
    bool try_align(size_t j, size_t run);
    void align_at(size_t j, uint64_t pos);
    void step();  // decide about pend_.front()
    void finish();
    void error_at(uint64_t rx_index);

    std::span<const uint8_t> source_;
    uint64_t n_ = 0;              // source packets
    bool aligned_ = false, failed_ = false;
    std::vector<Packet> buf_;     // before alignment
    size_t next_try_ = 0;         // buf_ index to try as the start next
    std::vector<Packet> pend_;    // after alignment, not yet decided
    uint64_t pend_first_ = 0;     // received index of pend_.front()
    uint64_t received_ = 0;       // received packets so far
    uint64_t cur_ = 0;            // next expected source packet
    CompareStats st_;
};

}  // namespace of::verify
