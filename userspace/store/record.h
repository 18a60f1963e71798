// The catalog record of one asset, CATALOG/NAME.idx: its name, how it is striped (extent size, the
// disk directories in stripe order) and its MPEG-TS index. Versioned, length-checked and
// checksummed like the index it embeds; see docs/ingest.md.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.h"
#include "mpegts/index.h"

namespace of::store {

constexpr uint64_t kDefaultExtentSize = mpegts::kDatagramSize * 128;  // 168,448 bytes
constexpr uint64_t kMaxExtentSize = mpegts::kDatagramSize * 65536;    // 86 MB
constexpr size_t kMaxDisks = 256;
constexpr size_t kMaxNameLength = 64;
constexpr size_t kMaxDiskPath = 4095;
// 2 added the source's SHA-256; records of version 1 still load (their digest is unknown).
constexpr uint32_t kRecordFormatVersion = 2;
constexpr size_t kMaxRecordBytes = mpegts::kMaxIndexFileBytes + (size_t(4) << 20);

// Asset names: [A-Za-z0-9._-]{1,64}, not starting with '.', so a name is always one plain file
// name component and never collides with the store's own temporary files (which start with '.').
Status validate_asset_name(std::string_view name);
// Extent sizes: a positive multiple of 1316 (7 packets, one datagram) up to kMaxExtentSize, so no
// datagram straddles two extents.
Status validate_extent_size(uint64_t extent_size);

struct AssetRecord {
    std::string name;
    uint64_t extent_size = 0;
    std::vector<std::string> disks;  // absolute, canonical, distinct; extent i is on disks[i % n]
    mpegts::Index index;
    std::string sha256;  // the source file's SHA-256, 64 lowercase hex digits; empty: unknown (version 1)
};

std::vector<uint8_t> encode_record(const AssetRecord& r);
// Every field is checked; failures are of::mpegts::IndexError::kCorruptIndex (EUCLEAN).
Result<AssetRecord> decode_record(std::span<const uint8_t> bytes);

}  // namespace of::store
