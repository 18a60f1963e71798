#include "verify/analyzer.h"

#include <algorithm>
#include <bitset>
#include <cmath>
#include <cstdlib>

#include "mpegts/packet.h"
#include "verify/compare.h"
#include "verify/histogram.h"

namespace of::verify {

namespace mt = of::mpegts;

const char* mode_name(Mode m) {
    switch (m) {
        case Mode::Auto: return "auto";
        case Mode::Rtp: return "rtp";
        case Mode::Raw: return "raw";
    }
    return "?";
}

bool Report::has_errors() const {
    if (mode == Mode::Rtp &&
        (rtp.lost || rtp.duplicated || rtp.reordered || rtp.resyncs || rtp.strays || rtp.invalid ||
         rtp.ssrc_changes))
        return true;
    if (ts.cc_errors || ts.transport_errors || ts.sync_byte_errors || ts.bad_length) return true;
    if (compare.enabled && !compare.in_order_complete()) return true;
    return false;
}

namespace {

constexpr int64_t kNsPerSec = 1'000'000'000;
double ns_to_ms(double ns) { return ns / 1e6; }

// RTP sequence numbers, extended past 16 bits, after RFC 3550 appendix A.1: a jump of kMaxDropout
// or more is believed only when the next packet follows it (a new run: sender restart); packets up
// to kMaxMisorder behind the highest are late, and a bitmap of the last kWindow numbers tells a
// late packet (fills a hole) from a duplicate.
class SeqTracker {
public:
    static constexpr uint32_t kMaxDropout = 3000;
    static constexpr uint32_t kMaxMisorder = 1000;
    static constexpr uint32_t kWindow = 4096;
    static_assert(kMaxMisorder < kWindow && kMaxDropout < kWindow);

    void add(uint16_t seq, RtpStats& st) {
        if (!started_) {
            start_run(seq);
            st.first_seq = seq;
            return;
        }
        uint16_t udelta = uint16_t(seq - uint16_t(max_));
        if (udelta == 0) {
            ++st.duplicated;
        } else if (udelta < kMaxDropout) {
            for (uint64_t e = max_ + 1; e < max_ + udelta && e < max_ + 1 + kWindow; ++e) clear(e);
            if ((max_ & 0xffff) + udelta > 0xffff) ++cycles_;
            max_ += udelta;
            mark(max_);
            ++distinct_;
            bad_seq_.reset();
        } else if (udelta > 65536 - kMaxMisorder) {
            uint64_t back = 65536 - udelta;
            uint64_t e = max_ - back;
            if (e < base_) {
                // Earlier than the first packet of the run: the run starts earlier than we thought.
                for (uint64_t x = e + 1; x < base_; ++x) clear(x);
                base_ = e;
                mark(e);
                ++distinct_;
                ++st.reordered;
            } else if (seen(e)) {
                ++st.duplicated;
            } else {
                mark(e);
                ++distinct_;
                ++st.reordered;
            }
            bad_seq_.reset();
        } else if (bad_seq_ && seq == *bad_seq_) {
            // Two packets in sequence after a jump: a new run that includes the one before.
            --st.strays;
            ++st.resyncs;
            done_expected_ += max_ - base_ + 1;
            done_distinct_ += distinct_;
            start_run(uint16_t(seq - 1));
            max_ += 1;
            mark(max_);
            ++distinct_;
        } else {
            bad_seq_ = uint16_t(seq + 1);
            ++st.strays;
        }
    }

    void fill(RtpStats& st) const {
        if (!started_) return;
        st.expected = done_expected_ + (max_ - base_ + 1);
        uint64_t distinct = done_distinct_ + distinct_;
        st.lost = st.expected > distinct ? st.expected - distinct : 0;
        st.last_seq = uint16_t(max_);
        st.cycles = cycles_;
    }

private:
    // Extended numbers start well above zero so that a run can grow downwards (late first packet).
    static constexpr uint64_t kOrigin = uint64_t(1) << 32;

    void start_run(uint16_t seq) {
        base_ = max_ = kOrigin + seq;
        seen_.reset();
        mark(max_);
        distinct_ = 1;
        bad_seq_.reset();
        started_ = true;
    }
    void mark(uint64_t e) { seen_.set(e % kWindow); }
    void clear(uint64_t e) { seen_.reset(e % kWindow); }
    bool seen(uint64_t e) const { return seen_.test(e % kWindow); }

    bool started_ = false;
    uint64_t base_ = 0, max_ = 0, distinct_ = 0;
    uint64_t done_expected_ = 0, done_distinct_ = 0;
    uint32_t cycles_ = 0;
    std::optional<uint16_t> bad_seq_;
    std::bitset<kWindow> seen_;
};

// Arrival offsets against the PCR schedule of each datagram's first packet:
//     offset = arrival - (t0 + (pcr - k * packet_ticks - pcr0) / 27 MHz)
// where the PCR sits in packet k of the datagram and packet_ticks is the time of one packet at
// the rate between the last two PCRs. A datagram leaves (and arrives) as one piece, scheduled by
// its first packet; without the k term a PCR in packet 6 would count as 6 packet times early
// (2.4 ms at 3.75 Mb/s), which is packetization, not jitter. A datagram without a PCR is timed
// from the last PCR at that rate (every datagram is a sample, not only the one in seven that
// carries a PCR). Kept in a fixed reservoir (exact up to kCapacity samples, a uniform sample after
// that); the extremes are tracked exactly.
class PcrJitter {
public:
    static constexpr size_t kCapacity = 65536;
    static constexpr int64_t kRebaseNs = kNsPerSec;  // an offset step beyond this is a PCR jump

    // `packet` counts the stream's TS packets (the PCR packet's position in it); `k` is its place
    // in the datagram.
    void add(int64_t pcr, bool discontinuity, int64_t arrival, uint64_t packet, unsigned k, JitterStats& st) {
        if (!have_) {
            // The anchor: its own offset is unknown until the packet rate is (it only shifts
            // every offset by a constant, which the median removes), so it is not recorded.
            have_ = true;
            last_raw_ = pcr;
            unwrapped_ = pcr0_ = pcr;
            t0_ = arrival;
            last_packet_ = packet;
            return;
        }
        int64_t d = pcr - last_raw_;
        if (d < -mt::kPcrWrap / 2) d += mt::kPcrWrap;  // 33-bit base wrapped
        else if (d > mt::kPcrWrap / 2) d -= mt::kPcrWrap;
        last_raw_ = pcr;
        unwrapped_ += d;
        if (!discontinuity && d > 0 && packet > last_packet_)
            packet_ticks_ = double(d) / double(packet - last_packet_);
        last_packet_ = packet;
        int64_t ahead = ticks_to_ns(double(k) * packet_ticks_);  // PCR packet after datagram start
        int64_t off = arrival - (predicted() - ahead);
        if (discontinuity || d < 0 || std::llabs(off - last_off_) > kRebaseNs) {
            // A new time base: continue the schedule from here, as if this datagram arrived on
            // time relative to the previous one.
            ++st.pcr_discontinuities;
            pcr0_ = unwrapped_;
            t0_ = arrival - last_off_ + ahead;
            off = last_off_;
        }
        last_pcr_at_ = predicted();
        ++st.samples;
        record(off);
    }

    // A datagram without a PCR whose first packet is `packet` (counted as in add()).
    void add_between(uint64_t packet, int64_t arrival, JitterStats& st) {
        if (!have_ || packet_ticks_ <= 0 || packet <= last_packet_) return;  // rate not known yet
        int64_t due = last_pcr_at_ + ticks_to_ns(double(packet - last_packet_) * packet_ticks_);
        int64_t off = arrival - due;
        if (std::llabs(off - last_off_) > kRebaseNs) return;  // a jump: the next PCR re-anchors
        ++st.samples;
        record(off);
    }

    void fill(JitterStats& st) const {
        if (n_ == 0) return;
        std::vector<int64_t> v(res_);
        auto mid = v.begin() + ptrdiff_t(v.size() / 2);
        std::nth_element(v.begin(), mid, v.end());
        int64_t median = *mid;
        std::vector<int64_t> dev;
        dev.reserve(v.size());
        for (int64_t o : v) dev.push_back(std::llabs(o - median));
        std::sort(dev.begin(), dev.end());
        auto at = [&](double q) { return dev[size_t(q * double(dev.size() - 1) + 0.5)]; };
        st.p50_ms = ns_to_ms(double(at(0.50)));
        st.p99_ms = ns_to_ms(double(at(0.99)));
        st.max_ms = ns_to_ms(double(std::max(std::llabs(max_off_ - median), std::llabs(min_off_ - median))));
        st.sampled = n_ > kCapacity;
    }

private:
    int64_t predicted() const { return t0_ + (unwrapped_ - pcr0_) * 1000 / 27; }
    // 27 MHz ticks to ns, bounded (forged PCRs can make the rate absurd; a day is beyond any jitter).
    static int64_t ticks_to_ns(double ticks) {
        return int64_t(std::clamp(ticks * 1000.0 / 27.0, -86'400e9, 86'400e9));
    }
    void record(int64_t off) {
        last_off_ = off;
        if (n_ == 0 || off > max_off_) max_off_ = off;
        if (n_ == 0 || off < min_off_) min_off_ = off;
        ++n_;
        if (res_.size() < kCapacity) {
            res_.push_back(off);
            return;
        }
        rng_ ^= rng_ << 13;  // xorshift64: deterministic, so a report can be reproduced
        rng_ ^= rng_ >> 7;
        rng_ ^= rng_ << 17;
        uint64_t j = rng_ % n_;
        if (j < kCapacity) res_[j] = off;
    }

    bool have_ = false;
    int64_t last_raw_ = 0, unwrapped_ = 0, pcr0_ = 0, t0_ = 0, last_off_ = 0;
    uint64_t last_packet_ = 0;
    int64_t last_pcr_at_ = 0;  // when the last PCR's packet was due on the anchored schedule
    double packet_ticks_ = 0;  // 27 MHz ticks per TS packet at the latest PCR interval's rate
    int64_t min_off_ = 0, max_off_ = 0;
    uint64_t n_ = 0;
    uint64_t rng_ = 0x9e3779b97f4a7c15ull;
    std::vector<int64_t> res_;
};

struct PidState {
    uint64_t packets = 0, cc_errors = 0, duplicates = 0, discontinuities = 0;
    int8_t last_cc = -1;  // -1: no packet yet (or state reset)
    bool dup_seen = false;
    bool pcr = false;
};

// Parses the RTP fixed header, CSRCs, extension and padding. nullopt if not RTP v2 or inconsistent.
struct RtpHeader {
    uint16_t seq;
    uint32_t ssrc;
    uint8_t pt;
    size_t payload_off, payload_len;
};
std::optional<RtpHeader> parse_rtp(std::span<const uint8_t> d) {
    if (d.size() < 12 || (d[0] >> 6) != 2) return std::nullopt;
    size_t off = 12 + size_t(d[0] & 0x0f) * 4;
    if (off > d.size()) return std::nullopt;
    if (d[0] & 0x10) {
        if (off + 4 > d.size()) return std::nullopt;
        size_t words = size_t(d[off + 2]) << 8 | d[off + 3];
        off += 4 + words * 4;
        if (off > d.size()) return std::nullopt;
    }
    size_t end = d.size();
    if (d[0] & 0x20) {
        uint8_t pad = d[end - 1];
        if (pad == 0 || pad > end - off) return std::nullopt;
        end -= pad;
    }
    RtpHeader h;
    h.seq = uint16_t(d[2] << 8 | d[3]);
    h.ssrc = uint32_t(d[8]) << 24 | uint32_t(d[9]) << 16 | uint32_t(d[10]) << 8 | d[11];
    h.pt = d[1] & 0x7f;
    h.payload_off = off;
    h.payload_len = end - off;
    return h;
}

}  // namespace

struct Analyzer::Impl {
    Options opt;
    Mode mode;
    uint64_t datagrams = 0, bytes = 0;
    int64_t first_ns = 0, last_ns = 0;
    std::optional<uint16_t> last_seq;
    RtpStats rtp;
    bool have_ssrc = false;
    SeqTracker seq;
    TsStats ts;
    std::array<PidState, 8192> pids{};
    bool in_sync = true;
    int bad_run = 0, good_run = 0;
    LogHistogram intervals;
    std::vector<Gap> top;
    JitterStats jitter;
    std::optional<uint16_t> pcr_pid;
    PcrJitter pcr;
    std::optional<SourceCompare> compare;
    std::span<const uint8_t> last_payload;

    void ts_packet(const uint8_t* p, int64_t arrival, unsigned k, bool& pcr_taken);
    void gap(int64_t arrival, std::optional<uint16_t> seq);
};

Analyzer::Analyzer(Options opt) : impl_(std::make_unique<Impl>()) {
    opt.top_gaps = std::min<size_t>(opt.top_gaps, 64);
    impl_->opt = opt;
    impl_->mode = opt.mode;
    impl_->pcr_pid = opt.pcr_pid;
}
Analyzer::~Analyzer() = default;
Analyzer::Analyzer(Analyzer&&) noexcept = default;
Analyzer& Analyzer::operator=(Analyzer&&) noexcept = default;

Status Analyzer::set_source(std::span<const uint8_t> source) {
    if (source.size() < mt::kPacketSize)
        return make_error(EINVAL, "compare source holds no whole 188-byte TS packet");
    if (impl_->datagrams > 0) return make_error(EBUSY, "compare source set after datagrams were added");
    impl_->compare.emplace(source);
    return {};
}

std::span<const uint8_t> Analyzer::last_ts_payload() const { return impl_->last_payload; }
uint64_t Analyzer::datagrams() const { return impl_->datagrams; }

void Analyzer::Impl::gap(int64_t arrival, std::optional<uint16_t> seq) {
    if (datagrams > 0) {
        int64_t d = std::max<int64_t>(0, arrival - last_ns);  // a clock step back is not a gap
        intervals.add(uint64_t(d));
        if (opt.top_gaps > 0 && (top.size() < opt.top_gaps || double(d) / 1e6 > top.back().ms)) {
            Gap g;
            g.ms = double(d) / 1e6;
            g.at_ns = arrival;
            g.prev_ns = last_ns;
            g.index = datagrams;
            g.seq = seq;
            g.prev_seq = last_seq;
            auto it = std::upper_bound(top.begin(), top.end(), g,
                                       [](const Gap& a, const Gap& b) { return a.ms > b.ms; });
            top.insert(it, g);
            if (top.size() > opt.top_gaps) top.pop_back();
        }
    } else {
        first_ns = arrival;
    }
    last_ns = arrival;
    last_seq = seq;
}

void Analyzer::Impl::ts_packet(const uint8_t* p, int64_t arrival, unsigned k, bool& pcr_taken) {
    ++ts.packets;
    if (compare) compare->add(p);
    mt::PacketView v{p};
    // TR 101 290 1.1/1.2: sync is lost after two bad sync bytes in a row, regained after five good.
    if (!v.sync()) {
        ++ts.sync_byte_errors;
        good_run = 0;
        if (++bad_run >= 2 && in_sync) {
            in_sync = false;
            ++ts.sync_losses;
        }
        return;  // nothing else in this header can be trusted
    }
    bad_run = 0;
    if (!in_sync && ++good_run >= 5) in_sync = true;
    if (v.transport_error()) {
        ++ts.transport_errors;  // header bits are suspect: leave continuity state alone
        return;
    }
    uint16_t pid = v.pid();
    if (pid == mt::kNullPid) {
        ++ts.null_packets;
        return;
    }
    PidState& s = pids[pid];
    ++s.packets;
    uint8_t cc = v.continuity_counter();
    bool disc = v.discontinuity();
    if (disc) ++s.discontinuities;
    // TR 101 290 1.4: the counter steps by one per packet with payload; it may repeat once (a
    // duplicate packet); packets without payload do not step it; a packet flagged with the
    // discontinuity_indicator may carry any value.
    if (disc || s.last_cc < 0) {
        s.last_cc = int8_t(cc);
        s.dup_seen = false;
    } else if (v.has_payload()) {
        if (cc == uint8_t(s.last_cc)) {
            if (s.dup_seen) {
                ++s.cc_errors;  // a third copy
                ++ts.cc_errors;
            } else {
                s.dup_seen = true;
                ++s.duplicates;
            }
        } else {
            if (cc != ((s.last_cc + 1) & 0x0f)) {
                ++s.cc_errors;
                ++ts.cc_errors;
            }
            s.last_cc = int8_t(cc);
            s.dup_seen = false;
        }
    }
    if (auto pcrv = v.pcr()) {
        s.pcr = true;
        if (!pcr_pid) {
            pcr_pid = pid;
            jitter.pcr_pid = pid;
        }
        if (pid == *pcr_pid && !pcr_taken) {
            pcr_taken = true;  // one sample per datagram: the datagram's arrival is the event
            pcr.add(*pcrv, disc, arrival, ts.packets - 1, k, jitter);
        }
    }
}

void Analyzer::add(std::span<const uint8_t> d, int64_t arrival_ns) {
    Impl& m = *impl_;
    m.last_payload = {};
    if (m.mode == Mode::Auto && !d.empty()) {
        if (d[0] == mt::kSyncByte) m.mode = Mode::Raw;
        else if ((d[0] >> 6) == 2) m.mode = Mode::Rtp;
    }
    std::optional<uint16_t> seq;
    std::span<const uint8_t> payload = d;
    bool payload_ok = true;
    if (m.mode == Mode::Rtp) {
        auto h = parse_rtp(d);
        if (!h) {
            ++m.rtp.invalid;
            payload_ok = false;
        } else {
            ++m.rtp.packets;
            if (!m.have_ssrc) {
                m.have_ssrc = true;
                m.rtp.ssrc = h->ssrc;
                m.rtp.payload_type = h->pt;
            } else if (h->ssrc != m.rtp.ssrc) {
                ++m.rtp.ssrc_changes;
                m.rtp.ssrc = h->ssrc;
            }
            seq = h->seq;
            m.seq.add(h->seq, m.rtp);
            payload = d.subspan(h->payload_off, h->payload_len);
        }
    } else if (m.mode == Mode::Auto) {
        payload_ok = false;  // neither TS nor RTP: count it, analyse nothing
    }
    m.gap(arrival_ns, seq);
    ++m.datagrams;
    m.bytes += d.size();
    if (!payload_ok) return;
    if (payload.size() % mt::kPacketSize != 0) ++m.ts.bad_length;
    size_t n = payload.size() / mt::kPacketSize;
    bool pcr_taken = false;
    const uint64_t first_packet = m.ts.packets;
    for (size_t i = 0; i < n; ++i)
        m.ts_packet(payload.data() + i * mt::kPacketSize, arrival_ns, unsigned(i), pcr_taken);
    if (!pcr_taken && n > 0) m.pcr.add_between(first_packet, arrival_ns, m.jitter);
    m.last_payload = payload.first(n * mt::kPacketSize);
}

Report Analyzer::report() const {
    const Impl& m = *impl_;
    Report r;
    r.mode = m.mode;
    r.datagrams = m.datagrams;
    r.bytes = m.bytes;
    r.ts_packets = m.ts.packets;
    r.first_ns = m.first_ns;
    r.last_ns = m.last_ns;
    r.rtp = m.rtp;
    m.seq.fill(r.rtp);
    r.ts = m.ts;
    for (size_t pid = 0; pid < m.pids.size(); ++pid) {
        const PidState& s = m.pids[pid];
        if (s.packets == 0) continue;
        r.ts.pids.push_back(PidStats{uint16_t(pid), s.packets, s.cc_errors, s.duplicates,
                                     s.discontinuities, s.pcr});
    }
    r.top_gaps = m.top;
    if (!m.top.empty()) r.largest_gap = m.top.front();
    r.median_interval_ms = ns_to_ms(double(m.intervals.quantile(0.5)));
    r.p99_interval_ms = ns_to_ms(double(m.intervals.quantile(0.99)));
    r.jitter = m.jitter;
    m.pcr.fill(r.jitter);
    if (m.compare) r.compare = m.compare->stats();
    return r;
}

}  // namespace of::verify
