// The two CRC-32 variants ingest needs: CRC-32/MPEG-2 guards PSI sections (PAT, PMT) in the stream,
// CRC-32 (ISO-HDLC, as zlib) guards the index and catalog files that oneframe writes.
#pragma once

#include <cstdint>
#include <span>

namespace of::mpegts {

// ISO/IEC 13818-1 Annex A: polynomial 0x04C11DB7, MSB first, init 0xFFFFFFFF, no final xor.
// A whole section including its CRC_32 field yields 0.
uint32_t crc32_mpeg2(std::span<const uint8_t> data);

// CRC-32/ISO-HDLC: reflected 0xEDB88320, init and final xor 0xFFFFFFFF ("123456789" -> 0xCBF43926).
uint32_t crc32_file(std::span<const uint8_t> data, uint32_t crc = 0);

}  // namespace of::mpegts
