// Streaming MPEG-TS validation and indexing: feed the bytes of an asset in chunks of any size as
// they are copied, then finish() to get its Index or the reason it was refused (IndexError).
// Memory is bounded: one partial packet, two PSI sections and the PCR / random-access tables,
// whose sizes the caller limits.
#pragma once

#include <array>
#include <cstdint>
#include <map>
#include <optional>
#include <span>
#include <vector>

#include "common/result.h"
#include "mpegts/index.h"
#include "mpegts/psi.h"

namespace of::mpegts {

struct IndexLimits {
    uint64_t max_bytes = uint64_t(256) << 30;  // largest asset accepted (clamped to kMaxPackets)
    uint64_t max_pcrs = uint64_t(1) << 23;     // PCR entries kept while indexing (16 B each)
    uint64_t max_raps = uint64_t(1) << 23;     // random_access_indicator entries (8 B each)
    // Packets with transport_error_indicator are refused by default: an asset is served for years,
    // and a packet its own source marked as damaged should be re-captured, not sent.
    uint64_t max_transport_errors = 0;
};

// A PCR as read from the stream, before unwrapping and bridging.
struct RawPcr {
    uint64_t packet = 0;
    int64_t value = 0;           // base * 300 + ext, in [0, kPcrWrap)
    bool discontinuity = false;  // discontinuity_indicator on this or an earlier packet of the PID
};

// Unwraps the 33-bit PCR and bridges each time-base discontinuity (flagged, backwards, zero or
// more than 1 s forward) at the rate of the nearest preceding continuous run (or the following one
// if none precedes), so the result strictly increases. *discontinuities gets the number bridged.
Result<std::vector<PcrPoint>> bridge_pcrs(const std::vector<RawPcr>& raw, uint16_t pid,
                                          uint64_t* discontinuities);

class Indexer {
public:
    explicit Indexer(IndexLimits limits = {});

    // Consumes the next bytes of the asset. After a failure every call returns the same error,
    // so a caller may stop copying at once.
    Status feed(std::span<const uint8_t> data);
    // Ends the asset: validates what needs the whole of it and builds the Index. Call once.
    Result<Index> finish();

    uint64_t bytes_fed() const { return bytes_; }

private:
    struct Track {
        std::vector<RawPcr> pcrs;
        std::vector<uint64_t> raps;
        bool pending_discontinuity = false;
    };
    static constexpr size_t kPrefixBytes = 1024;  // held back so refusals can name the format
    static constexpr size_t kMaxTracks = 64;      // PIDs followed before the PMT narrows them

    Status consume(const uint8_t* d, size_t n);
    Status on_packet(const uint8_t* p);
    void on_pmt(const Pmt& pmt);
    bool followed(uint16_t pid) const;
    Error fail(Error e);
    Error sync_error(uint64_t packet) const;

    IndexLimits limits_;
    std::optional<Error> failed_;
    bool finished_ = false;
    uint64_t bytes_ = 0;
    uint64_t packets_ = 0;
    std::vector<uint8_t> prefix_;
    bool prefix_done_ = false;
    std::array<uint8_t, kPacketSize> partial_{};
    size_t partial_len_ = 0;

    SectionAssembler pat_asm_, pmt_asm_;
    std::optional<Pat> pat_;
    std::optional<Pmt> pmt_;
    bool narrowed_ = false;  // the PMT named a PCR PID: only it and the video PID are followed
    std::map<uint16_t, Track> tracks_;
    uint64_t pcr_entries_ = 0, rap_entries_ = 0;

    std::array<int8_t, 8192> last_cc_;
    IndexStats stats_;
    uint64_t first_tei_packet_ = 0;
};

// Indexes a whole buffer at once.
Result<Index> index_buffer(std::span<const uint8_t> data, IndexLimits limits = {});

}  // namespace of::mpegts
