#include "mpegts/crc.h"

#include <array>

namespace of::mpegts {
namespace {

constexpr std::array<uint32_t, 256> make_mpeg2_table() {
    std::array<uint32_t, 256> t{};
    for (uint32_t i = 0; i < 256; ++i) {
        uint32_t c = i << 24;
        for (int k = 0; k < 8; ++k) c = (c & 0x80000000u) ? (c << 1) ^ 0x04C11DB7u : c << 1;
        t[i] = c;
    }
    return t;
}

constexpr std::array<uint32_t, 256> make_file_table() {
    std::array<uint32_t, 256> t{};
    for (uint32_t i = 0; i < 256; ++i) {
        uint32_t c = i;
        for (int k = 0; k < 8; ++k) c = (c & 1) ? (c >> 1) ^ 0xEDB88320u : c >> 1;
        t[i] = c;
    }
    return t;
}

constexpr auto kMpeg2Table = make_mpeg2_table();
constexpr auto kFileTable = make_file_table();

}  // namespace

uint32_t crc32_mpeg2(std::span<const uint8_t> data) {
    uint32_t c = 0xFFFFFFFFu;
    for (uint8_t b : data) c = (c << 8) ^ kMpeg2Table[((c >> 24) ^ b) & 0xff];
    return c;
}

uint32_t crc32_file(std::span<const uint8_t> data, uint32_t crc) {
    uint32_t c = ~crc;
    for (uint8_t b : data) c = (c >> 8) ^ kFileTable[(c ^ b) & 0xff];
    return ~c;
}

}  // namespace of::mpegts
