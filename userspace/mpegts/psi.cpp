#include "mpegts/psi.h"

#include "mpegts/crc.h"

namespace of::mpegts {
namespace {

// Common long-form section checks; returns section_length or 0 when unusable.
size_t check_long_section(std::span<const uint8_t> s, uint8_t table_id) {
    if (s.size() < 12 || s[0] != table_id || !(s[1] & 0x80)) return 0;
    size_t len = size_t(s[1] & 0x0f) << 8 | s[2];
    if (len + 3 != s.size() || len < 9) return 0;
    if (!(s[5] & 0x01)) return 0;  // current_next_indicator: a table not yet applicable
    if (crc32_mpeg2(s) != 0) return 0;
    return len;
}

}  // namespace

bool is_video_stream_type(uint8_t t) {
    switch (t) {
        case 0x01:  // MPEG-1 video
        case 0x02:  // MPEG-2 video
        case 0x10:  // MPEG-4 part 2
        case 0x1b:  // H.264
        case 0x20:  // H.264 MVC sub-bitstream
        case 0x24:  // HEVC
        case 0x33:  // VVC
        case 0x42:  // AVS
        case 0xea:  // VC-1
            return true;
        default:
            return false;
    }
}

std::optional<Pat> parse_pat(std::span<const uint8_t> s) {
    if (check_long_section(s, 0x00) == 0) return std::nullopt;
    // Program loop: from byte 8 to the CRC, 4 bytes an entry.
    for (size_t i = 8; i + 4 <= s.size() - 4; i += 4) {
        uint16_t program = uint16_t(s[i] << 8 | s[i + 1]);
        uint16_t pid = uint16_t((s[i + 2] & 0x1f) << 8 | s[i + 3]);
        if (program != 0) return Pat{program, pid};  // program 0 names the network PID
    }
    return std::nullopt;
}

std::optional<Pmt> parse_pmt(std::span<const uint8_t> s, uint16_t program_number) {
    if (check_long_section(s, 0x02) == 0) return std::nullopt;
    Pmt pmt;
    pmt.program_number = uint16_t(s[3] << 8 | s[4]);
    if (pmt.program_number != program_number) return std::nullopt;
    pmt.pcr_pid = uint16_t((s[8] & 0x1f) << 8 | s[9]);
    size_t info_len = size_t(s[10] & 0x0f) << 8 | s[11];
    size_t end = s.size() - 4;
    size_t i = 12 + info_len;
    if (i > end) return std::nullopt;
    while (i < end) {
        if (end - i < 5) return std::nullopt;
        uint8_t type = s[i];
        uint16_t pid = uint16_t((s[i + 1] & 0x1f) << 8 | s[i + 2]);
        size_t es_len = size_t(s[i + 3] & 0x0f) << 8 | s[i + 4];
        i += 5;
        if (es_len > end - i) return std::nullopt;
        i += es_len;
        if (!pmt.video_pid && is_video_stream_type(type)) pmt.video_pid = pid;
    }
    return pmt;
}

}  // namespace of::mpegts
