// Synthetic MPEG-TS for unit tests, so they do not depend on ffmpeg: PAT/PMT (optionally spanning
// packets), a PCR PID with chosen spacing and rate, random-access points, the 33-bit wrap,
// time-base discontinuities, null packets and damaged packets.
#pragma once

#include <array>
#include <cstdint>
#include <cstring>
#include <optional>
#include <utility>
#include <vector>

#include "mpegts/crc.h"
#include "mpegts/packet.h"

namespace oftest {

using Bytes = std::vector<uint8_t>;

struct PacketSpec {
    uint16_t pid = 0x100;
    std::optional<int64_t> pcr;  // 27 MHz, reduced modulo the wrap when written
    bool rai = false;            // random_access_indicator
    bool di = false;             // discontinuity_indicator
    bool tei = false;            // transport_error_indicator
    bool payload = true;
    uint8_t fill = 0xaa;
};

class TsWriter {
public:
    TsWriter() { cc_.fill(0); }

    void packet(const PacketSpec& s) {
        uint8_t p[188];
        std::memset(p, s.fill, sizeof p);
        p[0] = 0x47;
        p[1] = uint8_t((s.tei ? 0x80 : 0) | (s.pid >> 8 & 0x1f));
        p[2] = uint8_t(s.pid);
        bool af = s.pcr || s.rai || s.di || !s.payload;
        uint8_t cc = cc_[s.pid];
        if (s.payload) cc_[s.pid] = (cc + 1) & 0x0f;
        p[3] = uint8_t((af ? 0x20 : 0) | (s.payload ? 0x10 : 0) | cc);
        if (af) {
            // Adaptation field: flags, optional PCR, stuffing; with no payload it fills the packet.
            size_t len = s.payload ? (s.pcr ? 7 : 1) : 183;
            p[4] = uint8_t(len);
            p[5] = uint8_t((s.di ? 0x80 : 0) | (s.rai ? 0x40 : 0) | (s.pcr ? 0x10 : 0));
            if (s.pcr) write_pcr(p + 6, *s.pcr);
            size_t used = 1 + (s.pcr ? 6 : 0);
            std::memset(p + 5 + used, 0xff, len - used);
        }
        out_.insert(out_.end(), p, p + 188);
    }

    void null_packet() {
        uint8_t p[188];
        std::memset(p, 0xff, sizeof p);
        p[0] = 0x47;
        p[1] = 0x1f;
        p[2] = 0xff;
        p[3] = 0x10;
        out_.insert(out_.end(), p, p + 188);
    }

    // A PSI section carried from the start of a packet (pointer_field 0), split across as many
    // packets as it needs.
    void psi(uint16_t pid, const Bytes& section) {
        size_t off = 0;
        bool first = true;
        while (off < section.size()) {
            uint8_t p[188];
            std::memset(p, 0xff, sizeof p);
            p[0] = 0x47;
            p[1] = uint8_t((first ? 0x40 : 0) | (pid >> 8 & 0x1f));
            p[2] = uint8_t(pid);
            p[3] = uint8_t(0x10 | cc_[pid]);
            cc_[pid] = (cc_[pid] + 1) & 0x0f;
            size_t at = 4;
            if (first) p[at++] = 0;  // pointer_field
            size_t take = std::min(section.size() - off, sizeof p - at);
            std::memcpy(p + at, section.data() + off, take);
            off += take;
            first = false;
            out_.insert(out_.end(), p, p + 188);
        }
    }

    static Bytes pat_section(uint16_t program, uint16_t pmt_pid) {
        Bytes s = {0x00, 0xb0, 0x00, 0x00, 0x01, 0xc1, 0x00, 0x00,
                   uint8_t(program >> 8), uint8_t(program), uint8_t(0xe0 | pmt_pid >> 8), uint8_t(pmt_pid)};
        return finish_section(std::move(s));
    }

    // es: (stream_type, pid) pairs; descriptor_bytes of program_info padding make it span packets.
    static Bytes pmt_section(uint16_t program, uint16_t pcr_pid,
                             const std::vector<std::pair<uint8_t, uint16_t>>& es,
                             size_t descriptor_bytes = 0) {
        Bytes s = {0x02, 0xb0, 0x00, uint8_t(program >> 8), uint8_t(program), 0xc1, 0x00, 0x00,
                   uint8_t(0xe0 | pcr_pid >> 8), uint8_t(pcr_pid),
                   uint8_t(0xf0 | descriptor_bytes >> 8), uint8_t(descriptor_bytes)};
        for (size_t i = 0; i < descriptor_bytes; ++i) s.push_back(0x55);
        for (auto [type, pid] : es) {
            Bytes e = {type, uint8_t(0xe0 | pid >> 8), uint8_t(pid), 0xf0, 0x00};
            s.insert(s.end(), e.begin(), e.end());
        }
        return finish_section(std::move(s));
    }

    Bytes& bytes() { return out_; }
    uint64_t packets() const { return out_.size() / 188; }

private:
    static void write_pcr(uint8_t* f, int64_t pcr) {
        pcr %= of::mpegts::kPcrWrap;
        if (pcr < 0) pcr += of::mpegts::kPcrWrap;
        int64_t base = pcr / 300, ext = pcr % 300;
        f[0] = uint8_t(base >> 25);
        f[1] = uint8_t(base >> 17);
        f[2] = uint8_t(base >> 9);
        f[3] = uint8_t(base >> 1);
        f[4] = uint8_t((base & 1) << 7 | 0x7e | (ext >> 8));
        f[5] = uint8_t(ext);
    }
    // Fills in section_length and appends CRC_32.
    static Bytes finish_section(Bytes s) {
        size_t len = s.size() - 3 + 4;
        s[1] = uint8_t((s[1] & 0xf0) | (len >> 8 & 0x0f));
        s[2] = uint8_t(len);
        uint32_t crc = of::mpegts::crc32_mpeg2(s);
        for (int i = 3; i >= 0; --i) s.push_back(uint8_t(crc >> (8 * i)));
        return s;
    }

    Bytes out_;
    std::array<uint8_t, 8192> cc_;
};

// A whole stream: video PID carrying PCR and random-access points, an audio PID, PAT/PMT every 500
// packets, optional null packets, a time base at a chosen constant rate.
struct StreamSpec {
    uint64_t packets = 10000;
    uint64_t bitrate = 3'760'000;  // 1504 * 27e6 / 3.76e6 = 10800 ticks (400 us) a packet
    uint64_t pcr_every = 10;
    uint64_t pcr_first = 3;
    int64_t pcr_start = 0;  // PCR value at packet 0 (it may be near the wrap)
    uint64_t rap_every = 300;
    uint64_t rap_first = 3;
    bool psi = true;
    uint16_t video_pid = 0x100, audio_pid = 0x101, pmt_pid = 0x1000, pcr_pid = 0x100;
    uint64_t null_every = 0;
    // From packet disc_at on, the time base restarts at disc_value (flagged if disc_flag).
    std::optional<uint64_t> disc_at;
    int64_t disc_value = 0;
    bool disc_flag = true;
    int64_t jitter = 0;  // PCRs off the ideal by a deterministic amount in [-jitter, jitter]
};

// PCR value (before the modulo) the stream spec gives packet n.
inline int64_t spec_pcr(const StreamSpec& s, uint64_t n) {
    auto ticks = [&](uint64_t k) {
        return int64_t((__int128(k) * 188 * 8 * of::mpegts::kPcrHz) / s.bitrate);
    };
    int64_t v = (s.disc_at && n >= *s.disc_at) ? s.disc_value + ticks(n - *s.disc_at) : s.pcr_start + ticks(n);
    if (s.jitter) v += int64_t((n * 2654435761u) % uint64_t(2 * s.jitter + 1)) - s.jitter;
    return v;
}

inline Bytes make_ts(const StreamSpec& s) {
    TsWriter w;
    w.bytes().reserve(s.packets * 188);
    bool disc_pending = s.disc_at.has_value() && s.disc_flag;
    for (uint64_t n = 0; n < s.packets; ++n) {
        bool is_pcr = n >= s.pcr_first && (n - s.pcr_first) % s.pcr_every == 0;
        bool is_rap = s.rap_every && n >= s.rap_first && (n - s.rap_first) % s.rap_every == 0;
        if (is_pcr || is_rap) {
            PacketSpec p;
            p.pid = is_pcr ? s.pcr_pid : s.video_pid;
            if (is_pcr) {
                p.pcr = spec_pcr(s, n);
                if (disc_pending && n >= *s.disc_at) {
                    p.di = true;
                    disc_pending = false;
                }
            }
            p.rai = is_rap && p.pid == s.video_pid;  // a RAP on a separate PCR PID is dropped
            w.packet(p);
        } else if (s.psi && n % 500 == 0) {
            w.psi(0, TsWriter::pat_section(1, s.pmt_pid));
        } else if (s.psi && n % 500 == 1) {
            w.psi(s.pmt_pid, TsWriter::pmt_section(1, s.pcr_pid, {{0x02, s.video_pid}, {0x03, s.audio_pid}}));
        } else if (s.null_every && n % s.null_every == 0) {
            w.null_packet();
        } else if (n % 8 == 5) {
            w.packet({.pid = s.audio_pid});
        } else {
            w.packet({.pid = s.video_pid});
        }
    }
    return std::move(w.bytes());
}

}  // namespace oftest
