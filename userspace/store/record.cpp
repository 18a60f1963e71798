#include "store/record.h"

#include <algorithm>
#include <set>

#include "mpegts/crc.h"
#include "mpegts/wire.h"

namespace of::store {
namespace {

constexpr char kMagic[8] = {'O', 'F', 'A', 'S', 'S', 'E', 'T', '\0'};
constexpr size_t kHeaderBytes = 8 + 4 + 4 + 8;

Error corrupt(const std::string& what) {
    return mpegts::make_index_error(mpegts::IndexError::kCorruptIndex, "catalog record: " + what);
}

}  // namespace

Status validate_asset_name(std::string_view name) {
    if (name.empty() || name.size() > kMaxNameLength)
        return make_error(EINVAL, "asset name must be 1 to 64 characters, got " +
                                      std::to_string(name.size()));
    if (name[0] == '.') return make_error(EINVAL, "asset name must not start with '.'");
    for (char c : name) {
        bool ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                  c == '.' || c == '_' || c == '-';
        if (!ok) return make_error(EINVAL, "asset name may contain only A-Z a-z 0-9 . _ -");
    }
    return {};
}

Status validate_extent_size(uint64_t es) {
    if (es == 0 || es % mpegts::kDatagramSize != 0 || es > kMaxExtentSize)
        return make_error(EINVAL, "extent size " + std::to_string(es) +
                                      " must be a positive multiple of 1316 up to " +
                                      std::to_string(kMaxExtentSize));
    return {};
}

std::vector<uint8_t> encode_record(const AssetRecord& r) {
    mpegts::wire::Writer w;
    w.bytes(std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(kMagic), sizeof kMagic));
    w.u32(kRecordFormatVersion);
    w.u32(0);
    w.u64(0);
    size_t body = w.size();
    w.str16(r.name);
    w.u64(r.index.bytes());
    w.u64(r.extent_size);
    w.u32(uint32_t(r.disks.size()));
    for (const auto& d : r.disks) w.str16(d);
    w.str16(r.sha256);
    auto idx = r.index.serialize();
    w.u64(idx.size());
    w.bytes(idx);
    w.patch_u64(body - 8, w.size() - body);
    w.u32(mpegts::crc32_file(w.data()));
    return std::move(w.data());
}

Result<AssetRecord> decode_record(std::span<const uint8_t> in) {
    if (in.size() < kHeaderBytes + 4) return corrupt(std::to_string(in.size()) + " bytes is too short");
    if (in.size() > kMaxRecordBytes) return corrupt("larger than the record size limit");
    if (!std::equal(kMagic, kMagic + 8, in.begin())) return corrupt("bad magic");
    mpegts::wire::Reader h(in.subspan(8, kHeaderBytes - 8));
    uint32_t version = h.u32();
    uint32_t flags = h.u32();
    uint64_t body_len = h.u64();
    if (version != 1 && version != kRecordFormatVersion)
        return corrupt("format version " + std::to_string(version) + " (this build reads 1 to " +
                       std::to_string(kRecordFormatVersion) + ")");
    if (flags != 0) return corrupt("unknown flags");
    if (body_len != in.size() - kHeaderBytes - 4) return corrupt("length field does not match the file");
    uint32_t stored = uint32_t(in[in.size() - 4]) | uint32_t(in[in.size() - 3]) << 8 |
                      uint32_t(in[in.size() - 2]) << 16 | uint32_t(in[in.size() - 1]) << 24;
    if (mpegts::crc32_file(in.first(in.size() - 4)) != stored) return corrupt("checksum mismatch");

    mpegts::wire::Reader b(in.subspan(kHeaderBytes, body_len));
    std::string name = b.str16();
    uint64_t asset_bytes = b.u64();
    uint64_t extent_size = b.u64();
    uint32_t ndisks = b.u32();
    if (!b.ok()) return corrupt("short body");
    if (auto s = validate_asset_name(name); !s) return corrupt(s.error().message);
    if (auto s = validate_extent_size(extent_size); !s) return corrupt(s.error().message);
    if (ndisks == 0 || ndisks > kMaxDisks) return corrupt(std::to_string(ndisks) + " disks");
    std::vector<std::string> disks;
    std::set<std::string> seen;
    for (uint32_t i = 0; i < ndisks; ++i) {
        std::string d = b.str16();
        if (!b.ok()) return corrupt("short disk list");
        if (d.empty() || d[0] != '/' || d.size() > kMaxDiskPath || d.find('\0') != std::string::npos)
            return corrupt("disk path is not an absolute path");
        if (!seen.insert(d).second) return corrupt("disk " + d + " listed twice");
        disks.push_back(std::move(d));
    }
    std::string sha256;
    if (version >= 2) {
        sha256 = b.str16();
        bool hex = std::all_of(sha256.begin(), sha256.end(), [](char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); });
        if (!b.ok() || !((sha256.size() == 64 && hex) || sha256.empty())) return corrupt("bad content digest");
    }
    uint64_t idx_len = b.u64();
    if (!b.ok() || idx_len != b.remaining()) return corrupt("index length does not match the file");
    auto index = mpegts::Index::deserialize(b.bytes(idx_len));
    if (!index) return index.error();
    if (index->bytes() != asset_bytes) return corrupt("asset size disagrees with its index");
    return AssetRecord{std::move(name), extent_size, std::move(disks), std::move(*index), std::move(sha256)};
}

}  // namespace of::store
