// Program-specific information that ingest needs: the PAT (which PID carries the PMT) and the PMT
// (which PID carries the PCR, which carries video). Sections are reassembled across packets,
// bounded to the 1024 bytes ISO/IEC 13818-1 allows for PAT/PMT, and accepted only with a good CRC.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <vector>

#include "mpegts/packet.h"

namespace of::mpegts {

constexpr size_t kMaxPsiSection = 1024;  // 3 header bytes + section_length <= 1021
constexpr uint16_t kPatPid = 0x0000;

struct Pat {
    uint16_t program_number = 0;  // the first program (program_number != 0) listed
    uint16_t pmt_pid = 0;
};

struct Pmt {
    uint16_t program_number = 0;
    uint16_t pcr_pid = kNullPid;           // 0x1fff: the program has no PCR
    std::optional<uint16_t> video_pid;     // first elementary stream with a video stream_type
};

// A complete section (table_id .. CRC_32) in, or nullopt if it is not a valid current one.
std::optional<Pat> parse_pat(std::span<const uint8_t> section);
std::optional<Pmt> parse_pmt(std::span<const uint8_t> section, uint16_t program_number);

bool is_video_stream_type(uint8_t stream_type);

// Reassembles PSI sections of one PID from its packets. Feed every packet of the PID in order;
// each section that completes is passed to on_section (the span is valid during the call only).
class SectionAssembler {
public:
    template <class F>
    void push(const PacketView& v, F&& on_section) {
        auto off = v.payload_offset();
        if (!off) return;
        const uint8_t* pl = v.p + *off;
        size_t n = kPacketSize - *off;
        if (!v.payload_unit_start()) {
            if (active_) append(pl, n, on_section);
            return;
        }
        size_t pointer = pl[0];
        ++pl;
        --n;
        if (pointer > n) {  // malformed: drop whatever was in progress
            active_ = false;
            return;
        }
        if (active_) append(pl, pointer, on_section);
        active_ = false;
        pl += pointer;
        n -= pointer;
        // Several sections may start in one packet; 0xff is stuffing after the last one.
        while (n > 0 && pl[0] != 0xff) {
            buf_.clear();
            active_ = true;
            size_t used = append(pl, n, on_section);
            if (active_ || abandoned_ || used == 0) break;
            pl += used;
            n -= used;
        }
    }

private:
    // Appends up to the end of the current section; returns bytes consumed.
    template <class F>
    size_t append(const uint8_t* d, size_t n, F& on_section) {
        size_t used = 0;
        abandoned_ = false;
        while (used < n) {
            size_t need = wanted();
            if (need == 0) {  // declared length is impossible: abandon this section
                active_ = false;
                abandoned_ = true;
                return used;
            }
            size_t take = std::min(n - used, need - buf_.size());
            buf_.insert(buf_.end(), d + used, d + used + take);
            used += take;
            if (buf_.size() >= 3 && buf_.size() == wanted()) {
                active_ = false;
                on_section(std::span<const uint8_t>(buf_.data(), buf_.size()));
                return used;
            }
        }
        return used;
    }
    // Total size of the section being built: 3 until the header is in, then 3 + section_length,
    // or 0 if that exceeds the PSI limit.
    size_t wanted() const {
        if (buf_.size() < 3) return 3;
        size_t total = 3 + (size_t(buf_[1] & 0x0f) << 8 | buf_[2]);
        return total <= kMaxPsiSection ? total : 0;
    }

    std::vector<uint8_t> buf_;
    bool active_ = false;
    bool abandoned_ = false;
};

}  // namespace of::mpegts
