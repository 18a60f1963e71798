#include "mpegts/index.h"

#include <algorithm>
#include <cstdio>

#include "mpegts/crc.h"
#include "mpegts/wire.h"

namespace of::mpegts {
namespace {

using i128 = __int128;

constexpr char kMagic[8] = {'O', 'F', 'T', 'S', 'I', 'D', 'X', '\0'};
constexpr size_t kHeaderBytes = 8 + 4 + 4 + 8;  // magic, version, flags, body length
constexpr size_t kFixedBodyBytes = 8 + 2 + 2 + 4 + 8 + 8 + 8 + 8 + 8;

constexpr struct {
    IndexError kind;
    int code;
    const char* name;
} kErrors[] = {
    {IndexError::kEmpty, ENODATA, "empty file"},
    {IndexError::kNotTransportStream, EMEDIUMTYPE, "not MPEG-TS"},
    {IndexError::kSyncLost, EILSEQ, "MPEG-TS sync lost"},
    {IndexError::kTruncated, EBADMSG, "truncated MPEG-TS"},
    {IndexError::kTooLarge, EFBIG, "asset too large"},
    {IndexError::kTransportErrors, EPROTO, "transport errors"},
    {IndexError::kNoPcr, ENOMSG, "no PCR"},
    {IndexError::kTooFewPcrs, EDOM, "too few PCRs"},
    {IndexError::kPcrOutOfRange, ERANGE, "PCR timing out of range"},
    {IndexError::kTooManyEntries, E2BIG, "index too large"},
    {IndexError::kCorruptIndex, EUCLEAN, "corrupt index"},
};

// Rounds towards negative infinity (C++ division truncates towards zero).
i128 floor_div(i128 num, i128 den) {
    i128 q = num / den;
    if ((num % den != 0) && ((num < 0) != (den < 0))) --q;
    return q;
}

Error corrupt(const std::string& what) { return make_index_error(IndexError::kCorruptIndex, what); }

std::string hex_pid(uint16_t pid) {
    char b[8];
    std::snprintf(b, sizeof b, "0x%04x", pid);
    return b;
}

}  // namespace

int error_code(IndexError e) {
    for (auto& x : kErrors)
        if (x.kind == e) return x.code;
    return EINVAL;
}

std::string_view to_string(IndexError e) {
    for (auto& x : kErrors)
        if (x.kind == e) return x.name;
    return "index error";
}

std::optional<IndexError> index_error_of(const Error& e) {
    for (auto& x : kErrors) {
        std::string prefix = std::string(x.name) + ": ";
        if (e.code == x.code && e.message.compare(0, prefix.size(), prefix) == 0) return x.kind;
    }
    return std::nullopt;
}

Error make_index_error(IndexError kind, const std::string& detail) {
    return Error{error_code(kind), std::string(to_string(kind)) + ": " + detail};
}

Result<Index> Index::make(uint64_t packet_count, uint16_t pcr_pid, uint16_t rap_pid,
                          std::vector<PcrPoint> pcrs, std::vector<uint64_t> raps, IndexStats stats) {
    auto bad = [](const std::string& m) { return make_index_error(IndexError::kPcrOutOfRange, m); };
    if (packet_count == 0 || packet_count > kMaxPackets)
        return corrupt("packet count " + std::to_string(packet_count) + " outside 1.." +
                       std::to_string(kMaxPackets));
    if (pcr_pid >= kNullPid || rap_pid >= kNullPid) return corrupt("PCR or RAP PID out of range");
    if (pcrs.size() < 2) return make_index_error(IndexError::kTooFewPcrs, "need at least 2 PCRs");
    if (pcrs.size() > packet_count) return corrupt("more PCRs than packets");
    if (pcrs[0].pcr < 0 || pcrs[0].pcr >= kPcrWrap) return corrupt("first PCR outside 0..2^33*300");
    for (size_t i = 1; i < pcrs.size(); ++i) {
        const auto& a = pcrs[i - 1];
        const auto& b = pcrs[i];
        if (b.packet <= a.packet) return corrupt("PCR packets not strictly increasing");
        if (b.pcr <= a.pcr) return corrupt("PCR values not strictly increasing");
        if (b.pcr - pcrs[0].pcr > kMaxPcrSpan) return bad("PCRs span more than 2^56 ticks");
        // At least 1 ns a packet (below 1.5 Tb/s) keeps the time map strictly increasing.
        if (i128(b.pcr - a.pcr) * 1000 < i128(b.packet - a.packet) * 27)
            return bad("PCRs at packets " + std::to_string(a.packet) + " and " +
                       std::to_string(b.packet) + " imply more than 1.5 Tb/s");
    }
    if (pcrs.back().packet >= packet_count) return corrupt("PCR packet beyond the asset");
    if (raps.size() > packet_count) return corrupt("more random-access points than packets");
    for (size_t i = 0; i < raps.size(); ++i) {
        if (raps[i] >= packet_count) return corrupt("random-access point beyond the asset");
        if (i > 0 && raps[i] <= raps[i - 1]) return corrupt("random-access points not ascending");
    }
    if (stats.transport_errors > packet_count || stats.cc_errors > packet_count ||
        stats.pcr_discontinuities >= pcrs.size())
        return corrupt("statistics larger than the asset");

    Index x;
    x.packet_count_ = packet_count;
    x.pcr_pid_ = pcr_pid;
    x.rap_pid_ = rap_pid;
    x.pcrs_ = std::move(pcrs);
    x.raps_ = std::move(raps);
    x.stats_ = stats;
    // The bounds above keep every intermediate in abs_time_ns within 2^107; the ends must also
    // fit the int64 nanoseconds the map returns.
    i128 lo = x.abs_time_ns(0);
    i128 hi = x.abs_time_ns(packet_count);
    if (lo < -kMaxTimeNs || hi > kMaxTimeNs || hi - lo > kMaxTimeNs)
        return bad("extrapolated asset time exceeds 2^62 ns");
    x.origin_ns_ = int64_t(lo);
    return x;
}

__int128 Index::abs_time_ns(uint64_t n) const {
    n = std::min(n, packet_count_);
    // Segment j spans pcrs_[j]..pcrs_[j+1]; before the first PCR use the first segment, after the
    // last use the last one.
    auto it = std::upper_bound(pcrs_.begin(), pcrs_.end(), n,
                               [](uint64_t v, const PcrPoint& p) { return v < p.packet; });
    size_t j = it == pcrs_.begin() ? 0 : size_t(it - pcrs_.begin()) - 1;
    j = std::min(j, pcrs_.size() - 2);
    const PcrPoint& a = pcrs_[j];
    const PcrPoint& b = pcrs_[j + 1];
    i128 len = i128(b.packet - a.packet);
    i128 num = (i128(a.pcr - pcrs_[0].pcr) * len + (i128(n) - i128(a.packet)) * (b.pcr - a.pcr)) * 1000;
    return floor_div(num, len * 27);
}

// make() bounded abs_time_ns over [0, packet_count] to +-2^62, so the difference fits int64.
int64_t Index::packet_time_ns(uint64_t n) const { return int64_t(abs_time_ns(n) - origin_ns_); }

uint64_t Index::packet_at_or_after(int64_t t_ns) const {
    if (t_ns <= 0) return 0;
    uint64_t lo = 0, hi = packet_count_;
    if (packet_time_ns(hi) < t_ns) return packet_count_;
    // Invariant: time(lo) < t_ns <= time(hi).
    while (hi - lo > 1) {
        uint64_t mid = lo + (hi - lo) / 2;
        if (packet_time_ns(mid) >= t_ns)
            hi = mid;
        else
            lo = mid;
    }
    return hi;
}

uint64_t Index::rap_at_or_before(uint64_t packet) const {
    auto it = std::upper_bound(raps_.begin(), raps_.end(), packet);
    return it == raps_.begin() ? 0 : *std::prev(it);
}

uint64_t Index::bitrate_bps() const {
    const auto& a = pcrs_.front();
    const auto& b = pcrs_.back();
    i128 bits = i128(b.packet - a.packet) * kPacketSize * 8;
    return uint64_t(bits * kPcrHz / (b.pcr - a.pcr));
}

std::vector<std::string> Index::warnings() const {
    std::vector<std::string> w;
    if (raps_.empty())
        w.push_back("no random-access points (random_access_indicator) on PID " + hex_pid(rap_pid_) +
                    ": a stream can start or be handed over only at packet 0");
    if (stats_.transport_errors)
        w.push_back(std::to_string(stats_.transport_errors) +
                    " packets with transport_error_indicator (tolerated by the configured limit)");
    if (stats_.cc_errors)
        w.push_back(std::to_string(stats_.cc_errors) + " continuity_counter errors in the source");
    if (stats_.pcr_discontinuities)
        w.push_back(std::to_string(stats_.pcr_discontinuities) +
                    " PCR discontinuities bridged at the preceding rate");
    int64_t max_gap = 0;
    for (size_t i = 1; i < pcrs_.size(); ++i) max_gap = std::max(max_gap, pcrs_[i].pcr - pcrs_[i - 1].pcr);
    if (max_gap > kPcrHz / 10)
        w.push_back("PCR interval up to " + std::to_string(max_gap / (kPcrHz / 1000)) +
                    " ms exceeds the 100 ms of ISO/IEC 13818-1");
    return w;
}

std::vector<uint8_t> Index::serialize() const {
    wire::Writer w;
    w.bytes(std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(kMagic), sizeof kMagic));
    w.u32(kIndexFormatVersion);
    w.u32(0);  // flags
    w.u64(0);  // body length, patched below
    size_t body = w.size();
    w.u64(packet_count_);
    w.u16(pcr_pid_);
    w.u16(rap_pid_);
    w.u32(0);  // reserved
    w.u64(stats_.transport_errors);
    w.u64(stats_.cc_errors);
    w.u64(stats_.pcr_discontinuities);
    w.u64(pcrs_.size());
    w.u64(raps_.size());
    for (const auto& p : pcrs_) {
        w.u64(p.packet);
        w.i64(p.pcr);
    }
    for (uint64_t r : raps_) w.u64(r);
    w.patch_u64(body - 8, w.size() - body);
    w.u32(crc32_file(w.data()));
    return std::move(w.data());
}

Result<Index> Index::deserialize(std::span<const uint8_t> in) {
    if (in.size() < kHeaderBytes + kFixedBodyBytes + 4)
        return corrupt(std::to_string(in.size()) + " bytes is shorter than any index");
    if (in.size() > kMaxIndexFileBytes) return corrupt("larger than the 1 GiB index limit");
    if (!std::equal(kMagic, kMagic + 8, in.begin())) return corrupt("not an oneframe index (bad magic)");
    wire::Reader r(in.subspan(8));
    uint32_t version = r.u32();
    uint32_t flags = r.u32();
    uint64_t body_len = r.u64();
    if (version != kIndexFormatVersion)
        return corrupt("format version " + std::to_string(version) + " (this build reads " +
                       std::to_string(kIndexFormatVersion) + ")");
    if (flags != 0) return corrupt("unknown flags");
    if (body_len != in.size() - kHeaderBytes - 4)
        return corrupt("length field says " + std::to_string(body_len) + " body bytes, file has " +
                       std::to_string(in.size() - kHeaderBytes - 4));
    uint32_t stored = uint32_t(in[in.size() - 4]) | uint32_t(in[in.size() - 3]) << 8 |
                      uint32_t(in[in.size() - 2]) << 16 | uint32_t(in[in.size() - 1]) << 24;
    if (crc32_file(in.first(in.size() - 4)) != stored) return corrupt("checksum mismatch");

    wire::Reader b(in.subspan(kHeaderBytes, body_len));
    uint64_t packet_count = b.u64();
    uint16_t pcr_pid = b.u16();
    uint16_t rap_pid = b.u16();
    uint32_t reserved = b.u32();
    IndexStats stats;
    stats.transport_errors = b.u64();
    stats.cc_errors = b.u64();
    stats.pcr_discontinuities = b.u64();
    uint64_t npcr = b.u64();
    uint64_t nrap = b.u64();
    if (!b.ok() || reserved != 0) return corrupt("bad fixed fields");
    // Exact size before allocating: the counts come from the file.
    if (npcr > b.remaining() / 16 || nrap > b.remaining() / 8 ||
        npcr * 16 + nrap * 8 != b.remaining())
        return corrupt("table counts (" + std::to_string(npcr) + " PCRs, " + std::to_string(nrap) +
                       " random-access points) do not match the body length");
    std::vector<PcrPoint> pcrs(npcr);
    for (auto& p : pcrs) {
        p.packet = b.u64();
        p.pcr = b.i64();
    }
    std::vector<uint64_t> raps(nrap);
    for (auto& x : raps) x = b.u64();
    auto idx = make(packet_count, pcr_pid, rap_pid, std::move(pcrs), std::move(raps), stats);
    if (!idx && index_error_of(idx.error()) != IndexError::kCorruptIndex)
        return corrupt(idx.error().message);
    return idx;
}

}  // namespace of::mpegts
