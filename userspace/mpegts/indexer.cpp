#include "mpegts/indexer.h"

#include <algorithm>
#include <cstdio>
#include <cstring>

namespace of::mpegts {
namespace {

using i128 = __int128;

constexpr int64_t kMaxPcrStep = kPcrHz;  // a forward PCR step above 1 s is a discontinuity
constexpr uint64_t kSyncGracePackets = 8;  // sync lost this early means the file is not TS

std::string hex(uint16_t pid) {
    char b[8];
    std::snprintf(b, sizeof b, "0x%04x", pid);
    return b;
}

std::string n(uint64_t v) { return std::to_string(v); }

// A hint for an operator who fed something else: the formats mistaken for TS most often.
std::string format_hint(const std::vector<uint8_t>& b) {
    auto at = [&](size_t i, uint8_t v) { return i < b.size() && b[i] == v; };
    auto starts = [&](const char* s, size_t off) {
        size_t len = std::strlen(s);
        return b.size() >= off + len && std::memcmp(b.data() + off, s, len) == 0;
    };
    if (at(4, 0x47) && at(196, 0x47) && at(388, 0x47))
        return " (looks like 192-byte M2TS/BDAV packets: remux to 188-byte MPEG-TS)";
    if (at(0, 0x47) && at(204, 0x47) && at(408, 0x47))
        return " (looks like 204-byte packets with parity: strip them to 188 bytes)";
    if (starts("ftyp", 4)) return " (looks like an MP4/QuickTime file)";
    if (starts("\x1a\x45\xdf\xa3", 0)) return " (looks like a Matroska/WebM file)";
    if (starts("RIFF", 0)) return " (looks like a RIFF file: AVI or WAV)";
    if (starts("\x00\x00\x01\xba", 0)) return " (looks like an MPEG program stream: remux to TS)";
    return "";
}

}  // namespace

Result<std::vector<PcrPoint>> bridge_pcrs(const std::vector<RawPcr>& raw, uint16_t pid,
                                          uint64_t* discontinuities) {
    if (raw.size() < 2)
        return make_index_error(IndexError::kTooFewPcrs,
                                n(raw.size()) + " PCR on PID " + hex(pid) + ", a rate needs 2");
    // Split into runs of continuous PCRs; unwrapped[i] is relative to its run's first raw value.
    std::vector<int64_t> unwrapped(raw.size());
    std::vector<size_t> run_start{0};
    unwrapped[0] = raw[0].value;
    for (size_t i = 1; i < raw.size(); ++i) {
        int64_t step = (raw[i].value - raw[i - 1].value) % kPcrWrap;
        if (step < 0) step += kPcrWrap;
        if (raw[i].discontinuity || step == 0 || step > kMaxPcrStep) {
            run_start.push_back(i);
            unwrapped[i] = raw[i].value;
        } else {
            unwrapped[i] = unwrapped[i - 1] + step;  // <= count * 1 s: no overflow
        }
    }
    size_t runs = run_start.size();
    auto run_end = [&](size_t r) { return r + 1 < runs ? run_start[r + 1] - 1 : raw.size() - 1; };
    auto has_rate = [&](size_t r) { return run_end(r) > run_start[r]; };
    bool any = false;
    for (size_t r = 0; r < runs; ++r) any = any || has_rate(r);
    if (!any)
        return make_index_error(IndexError::kTooFewPcrs,
                                n(raw.size()) + " PCRs on PID " + hex(pid) +
                                    " but no two in one continuous time base");

    std::vector<PcrPoint> out(raw.size());
    for (size_t i = 0; i <= run_end(0); ++i) out[i] = {raw[i].packet, unwrapped[i]};
    for (size_t r = 1; r < runs; ++r) {
        // The rate to bridge with: nearest run before with two PCRs, else nearest after.
        size_t src = r;
        for (size_t k = r; k-- > 0;)
            if (has_rate(k)) {
                src = k;
                break;
            }
        if (src == r)
            for (size_t k = r + 1; k < runs; ++k)
                if (has_rate(k)) {
                    src = k;
                    break;
                }
        i128 dv = unwrapped[run_end(src)] - unwrapped[run_start[src]];
        i128 dp = i128(raw[run_end(src)].packet - raw[run_start[src]].packet);
        size_t prev = run_start[r] - 1;
        i128 gap = i128(raw[run_start[r]].packet - raw[prev].packet);
        // Round up: never slower than the source rate, and always at least one tick.
        i128 step = (gap * dv + dp - 1) / dp;
        i128 base = i128(out[prev].pcr) + step;
        i128 last = base + (unwrapped[run_end(r)] - unwrapped[run_start[r]]);
        if (step > kMaxPcrSpan || last - out[0].pcr > kMaxPcrSpan)
            return make_index_error(IndexError::kPcrOutOfRange,
                                    "bridging the discontinuity at packet " +
                                        n(raw[run_start[r]].packet) + " spans more than 2^56 ticks");
        for (size_t i = run_start[r]; i <= run_end(r); ++i)
            out[i] = {raw[i].packet, int64_t(base + (unwrapped[i] - unwrapped[run_start[r]]))};
    }
    if (discontinuities) *discontinuities = runs - 1;
    return out;
}

Indexer::Indexer(IndexLimits limits) : limits_(limits) {
    limits_.max_bytes = std::min(limits_.max_bytes, kMaxPackets * kPacketSize);
    last_cc_.fill(-1);
    prefix_.reserve(kPrefixBytes);
}

Error Indexer::fail(Error e) {
    failed_ = e;
    return e;
}

Error Indexer::sync_error(uint64_t packet) const {
    uint64_t off = packet * kPacketSize;
    if (packet < kSyncGracePackets)
        return make_index_error(IndexError::kNotTransportStream,
                                "no sync byte 0x47 at offset " + n(off) + format_hint(prefix_));
    return make_index_error(IndexError::kSyncLost, "no sync byte 0x47 at packet " + n(packet) +
                                                       " (offset " + n(off) + ")");
}

Status Indexer::feed(std::span<const uint8_t> data) {
    if (failed_) return *failed_;
    if (finished_) return make_error(EINVAL, "indexer: feed after finish");
    if (data.size() > limits_.max_bytes - bytes_)
        return fail(make_index_error(IndexError::kTooLarge,
                                     "more than the limit of " + n(limits_.max_bytes) + " bytes"));
    bytes_ += data.size();
    const uint8_t* d = data.data();
    size_t len = data.size();
    if (!prefix_done_) {
        size_t take = std::min(len, kPrefixBytes - prefix_.size());
        prefix_.insert(prefix_.end(), d, d + take);
        d += take;
        len -= take;
        if (prefix_.size() < kPrefixBytes) return {};
        prefix_done_ = true;
        if (auto s = consume(prefix_.data(), prefix_.size()); !s) return s;
    }
    return consume(d, len);
}

Status Indexer::consume(const uint8_t* d, size_t len) {
    if (partial_len_ > 0) {
        size_t take = std::min(len, kPacketSize - partial_len_);
        std::memcpy(partial_.data() + partial_len_, d, take);
        partial_len_ += take;
        d += take;
        len -= take;
        if (partial_len_ < kPacketSize) {
            // Report lost sync as soon as the first byte of the packet is in.
            if (partial_[0] != kSyncByte) return fail(sync_error(packets_));
            return {};
        }
        partial_len_ = 0;
        if (auto s = on_packet(partial_.data()); !s) return s;
    }
    while (len >= kPacketSize) {
        if (auto s = on_packet(d); !s) return s;
        d += kPacketSize;
        len -= kPacketSize;
    }
    if (len > 0) {
        if (d[0] != kSyncByte) return fail(sync_error(packets_));
        std::memcpy(partial_.data(), d, len);
        partial_len_ = len;
    }
    return {};
}

bool Indexer::followed(uint16_t pid) const {
    if (!narrowed_) return true;
    return pid == pmt_->pcr_pid || (pmt_->video_pid && pid == *pmt_->video_pid);
}

void Indexer::on_pmt(const Pmt& pmt) {
    pmt_ = pmt;
    if (pmt.pcr_pid == kNullPid) return;  // no PCR_PID named: keep following every PID
    narrowed_ = true;
    for (auto it = tracks_.begin(); it != tracks_.end();) {
        if (followed(it->first)) {
            ++it;
            continue;
        }
        pcr_entries_ -= it->second.pcrs.size();
        rap_entries_ -= it->second.raps.size();
        it = tracks_.erase(it);
    }
}

Status Indexer::on_packet(const uint8_t* p) {
    uint64_t index = packets_++;
    if (p[0] != kSyncByte) return fail(sync_error(index));
    PacketView v{p};
    if (v.transport_error()) {
        // The header itself may be damaged: count the packet, trust nothing in it.
        if (stats_.transport_errors++ == 0) first_tei_packet_ = index;
        if (stats_.transport_errors > limits_.max_transport_errors)
            return fail(make_index_error(
                IndexError::kTransportErrors,
                n(stats_.transport_errors) + " packet(s) with transport_error_indicator, first at packet " +
                    n(first_tei_packet_) + "; the limit is " + n(limits_.max_transport_errors)));
        return {};
    }
    uint16_t pid = v.pid();
    if (pid == kNullPid) return {};

    if (v.has_payload()) {
        int8_t last = last_cc_[pid];
        uint8_t cc = v.continuity_counter();
        // A repeated counter is a permitted duplicate; a flagged discontinuity resets the count.
        if (last >= 0 && !v.discontinuity() && cc != last && cc != ((last + 1) & 0x0f))
            ++stats_.cc_errors;
        last_cc_[pid] = int8_t(cc);
    }

    if (!pmt_) {
        if (pid == kPatPid) {
            pat_asm_.push(v, [&](std::span<const uint8_t> s) {
                if (!pat_) pat_ = parse_pat(s);
            });
        } else if (pat_ && pid == pat_->pmt_pid) {
            std::optional<Pmt> found;
            pmt_asm_.push(v, [&](std::span<const uint8_t> s) {
                if (!found) found = parse_pmt(s, pat_->program_number);
            });
            if (found) on_pmt(*found);
        }
    }

    uint8_t flags = v.adaptation_flags();
    if (!(flags & 0xd0)) return {};  // neither discontinuity, random access nor PCR
    if (!followed(pid)) return {};
    auto it = tracks_.find(pid);
    if (it == tracks_.end()) {
        if (tracks_.size() >= kMaxTracks) return {};
        it = tracks_.emplace(pid, Track{}).first;
    }
    Track& t = it->second;
    if (v.discontinuity()) t.pending_discontinuity = true;
    if (auto pcr = v.pcr()) {
        // An extension of 300 or more is outside ISO/IEC 13818-1: the PCR is unusable.
        if ((p[11] | (p[10] & 1) << 8) < 300) {
            if (++pcr_entries_ > limits_.max_pcrs)
                return fail(make_index_error(IndexError::kTooManyEntries,
                                             "more than " + n(limits_.max_pcrs) + " PCRs"));
            t.pcrs.push_back({index, *pcr, t.pending_discontinuity});
            t.pending_discontinuity = false;
        }
    }
    if (v.random_access()) {
        if (++rap_entries_ > limits_.max_raps)
            return fail(make_index_error(IndexError::kTooManyEntries,
                                         "more than " + n(limits_.max_raps) + " random-access points"));
        t.raps.push_back(index);
    }
    return {};
}

Result<Index> Indexer::finish() {
    if (failed_) return *failed_;
    if (finished_) return make_error(EINVAL, "indexer: finish called twice");
    finished_ = true;
    if (!prefix_done_) {
        prefix_done_ = true;
        if (auto s = consume(prefix_.data(), prefix_.size()); !s) return s.error();
    }
    if (bytes_ == 0) return fail(make_index_error(IndexError::kEmpty, "the file has no bytes"));
    if (partial_len_ > 0)
        return fail(make_index_error(
            IndexError::kTruncated, n(bytes_) + " bytes is not a multiple of 188: the last packet, at offset " +
                                        n(packets_ * kPacketSize) + ", has " + n(partial_len_) + " bytes"));

    // The PCR PID: the PMT's PCR_PID, else the first PID that carried a PCR.
    uint16_t pcr_pid = kNullPid;
    if (narrowed_) {
        pcr_pid = pmt_->pcr_pid;
        auto it = tracks_.find(pcr_pid);
        if (it == tracks_.end() || it->second.pcrs.empty())
            return fail(make_index_error(IndexError::kNoPcr, "no PCR on PID " + hex(pcr_pid) +
                                                                 ", which the PMT names as PCR_PID"));
    } else {
        uint64_t first = UINT64_MAX;
        for (auto& [pid, t] : tracks_)
            if (!t.pcrs.empty() && t.pcrs.front().packet < first) {
                first = t.pcrs.front().packet;
                pcr_pid = pid;
            }
        if (pcr_pid == kNullPid)
            return fail(make_index_error(IndexError::kNoPcr, "no PCR on any PID in " + n(packets_) +
                                                                 " packets"));
    }
    uint16_t rap_pid = (pmt_ && pmt_->video_pid) ? *pmt_->video_pid : pcr_pid;

    IndexStats stats = stats_;
    auto points = bridge_pcrs(tracks_[pcr_pid].pcrs, pcr_pid, &stats.pcr_discontinuities);
    if (!points) return fail(points.error());
    std::vector<uint64_t> raps;
    if (auto it = tracks_.find(rap_pid); it != tracks_.end()) raps = std::move(it->second.raps);
    auto idx = Index::make(packets_, pcr_pid, rap_pid, std::move(*points), std::move(raps), stats);
    if (!idx) return fail(idx.error());
    return idx;
}

Result<Index> index_buffer(std::span<const uint8_t> data, IndexLimits limits) {
    Indexer ix(limits);
    if (auto s = ix.feed(data); !s) return s.error();
    return ix.finish();
}

}  // namespace of::mpegts
