// Tests of of_verify: the analysis (RTP sequence, TR 101 290 continuity, gaps, PCR jitter, source
// compare), the report, the RTSP client pieces, and whole runs against a scripted RTSP responder
// and real UDP on loopback.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "common/clock.h"
#include "mpegts/packet.h"
#include "verify/analyzer.h"
#include "verify/histogram.h"
#include "verify/receiver.h"
#include "verify/report.h"
#include "verify/rtsp_client.h"
#include "verify/session.h"

namespace {

using namespace of::verify;
using Bytes = std::vector<uint8_t>;
constexpr int64_t kMsNs = 1'000'000;
constexpr int64_t kT0 = 1'700'000'000'000'000'000;  // a CLOCK_REALTIME-like origin

// ---- stream builders ----

struct Pkt {
    uint16_t pid = 0x100;
    uint8_t cc = 0;
    bool payload = true;
    bool adaptation = false;
    bool discontinuity = false;
    std::optional<int64_t> pcr;
    bool tei = false;
    uint8_t fill = 0;  // payload byte, to make packets distinct
};

Bytes ts_packet(const Pkt& k) {
    Bytes p(188, 0xff);
    p[0] = 0x47;
    p[1] = uint8_t((k.tei ? 0x80 : 0) | ((k.pid >> 8) & 0x1f));
    p[2] = uint8_t(k.pid & 0xff);
    bool adapt = k.adaptation || k.discontinuity || k.pcr || !k.payload;
    p[3] = uint8_t((adapt ? 0x20 : 0) | (k.payload ? 0x10 : 0) | (k.cc & 0x0f));
    size_t off = 4;
    if (adapt) {
        uint8_t len = k.payload ? (k.pcr ? 7 : 1) : 183;
        p[4] = len;
        p[5] = uint8_t((k.discontinuity ? 0x80 : 0) | (k.pcr ? 0x10 : 0));
        if (k.pcr) {
            int64_t base = *k.pcr / 300, ext = *k.pcr % 300;
            p[6] = uint8_t(base >> 25);
            p[7] = uint8_t(base >> 17);
            p[8] = uint8_t(base >> 9);
            p[9] = uint8_t(base >> 1);
            p[10] = uint8_t((base & 1) << 7 | 0x7e | (ext >> 8));
            p[11] = uint8_t(ext & 0xff);
        }
        off = 5 + len;
    }
    for (size_t i = off; i < 188; ++i) p[i] = uint8_t(k.fill + i);
    return p;
}

Bytes rtp(uint16_t seq, const Bytes& payload, uint32_t ssrc = 0x11223344, uint8_t version = 2) {
    Bytes d(12 + payload.size());  // sized up front: gcc 12 -O2 misreads insert() at end()
    d[0] = uint8_t(version << 6);
    d[1] = 33;
    d[2] = uint8_t(seq >> 8);
    d[3] = uint8_t(seq);
    d[8] = uint8_t(ssrc >> 24);
    d[9] = uint8_t(ssrc >> 16);
    d[10] = uint8_t(ssrc >> 8);
    d[11] = uint8_t(ssrc);
    std::copy(payload.begin(), payload.end(), d.begin() + 12);
    return d;
}

// A continuous single-PID stream: 7 packets a datagram, CC stepping, distinct payloads.
struct Stream {
    uint16_t pid = 0x100;
    uint8_t cc = 0;
    uint32_t n = 0;
    // The PCR, if any, goes into packet `pcr_at` (0..6) of the datagram.
    Bytes next_datagram(std::optional<int64_t> pcr = std::nullopt, int pcr_at = 0) {
        Bytes d;
        for (int i = 0; i < 7; ++i) {
            Pkt k;
            k.pid = pid;
            k.cc = cc++;
            k.fill = uint8_t(n++);
            if (i == pcr_at) k.pcr = pcr;
            auto p = ts_packet(k);
            d.insert(d.end(), p.begin(), p.end());
        }
        return d;
    }
};


// ---- histogram ----

TEST(VerifyHistogram, ExactBelowSubBucketsAndBoundedErrorAbove) {
    LogHistogram h;
    for (uint64_t v = 1; v <= 100; ++v) h.add(v);
    EXPECT_EQ(h.quantile(0.5), 50u);
    EXPECT_EQ(h.max(), 100u);
    LogHistogram g;
    for (int i = 0; i < 99; ++i) g.add(1'000'000);  // 1 ms
    g.add(40'000'000);                               // one 40 ms
    EXPECT_NEAR(double(g.quantile(0.5)), 1e6, 1e6 / 128);
    EXPECT_NEAR(double(g.quantile(1.0)), 40e6, 40e6 / 128);
    for (uint64_t v : {uint64_t(127), uint64_t(128), uint64_t(1) << 40, ~uint64_t(0)}) {
        size_t i = LogHistogram::index(v);
        EXPECT_LE(LogHistogram::lower(i), v);
        EXPECT_GE(LogHistogram::upper(i), v);
    }
}

// ---- RTP sequence ----

Report run_seqs(const std::vector<uint16_t>& seqs, uint32_t ssrc_change_at = UINT32_MAX) {
    Analyzer a({.mode = Mode::Rtp});
    Stream s;
    int64_t t = kT0;
    for (size_t i = 0; i < seqs.size(); ++i) {
        a.add(rtp(seqs[i], s.next_datagram(), i >= ssrc_change_at ? 0x55 : 0x11223344), t);
        t += kMsNs;
    }
    return a.report();
}

std::vector<uint16_t> range(uint32_t from, uint32_t count) {
    std::vector<uint16_t> v;
    for (uint32_t i = 0; i < count; ++i) v.push_back(uint16_t(from + i));
    return v;
}

TEST(VerifyRtp, CleanRun) {
    auto r = run_seqs(range(1000, 500));
    EXPECT_EQ(r.mode, Mode::Rtp);
    EXPECT_EQ(r.rtp.packets, 500u);
    EXPECT_EQ(r.rtp.expected, 500u);
    EXPECT_EQ(r.rtp.lost, 0u);
    EXPECT_EQ(r.rtp.duplicated, 0u);
    EXPECT_EQ(r.rtp.reordered, 0u);
    EXPECT_EQ(r.rtp.first_seq, 1000);
    EXPECT_EQ(r.rtp.last_seq, 1499);
    EXPECT_EQ(r.rtp.payload_type, 33);
    EXPECT_FALSE(r.has_errors());
}

TEST(VerifyRtp, Loss) {
    auto s = range(0, 100);
    s.erase(s.begin() + 10, s.begin() + 12);  // 10 and 11
    s.erase(s.begin() + 50);                  // 52
    auto r = run_seqs(s);
    EXPECT_EQ(r.rtp.expected, 100u);
    EXPECT_EQ(r.rtp.lost, 3u);
    EXPECT_EQ(r.rtp.duplicated, 0u);
    EXPECT_EQ(r.rtp.reordered, 0u);
    EXPECT_TRUE(r.has_errors());
}

TEST(VerifyRtp, Duplicates) {
    auto s = range(0, 20);
    s.insert(s.begin() + 5, 4);   // immediate repeat of the highest
    s.insert(s.begin() + 12, 3);  // an old one again
    auto r = run_seqs(s);
    EXPECT_EQ(r.rtp.duplicated, 2u);
    EXPECT_EQ(r.rtp.lost, 0u);
    EXPECT_EQ(r.rtp.reordered, 0u);
}

TEST(VerifyRtp, Reordered) {
    auto r = run_seqs({1, 2, 4, 3, 5, 8, 6, 7, 9});
    EXPECT_EQ(r.rtp.reordered, 3u);  // 3, 6, 7 came after a higher number
    EXPECT_EQ(r.rtp.lost, 0u);
    EXPECT_EQ(r.rtp.duplicated, 0u);
    EXPECT_EQ(r.rtp.last_seq, 9);
}

TEST(VerifyRtp, LateFirstPacketExtendsTheRunDownwards) {
    auto r = run_seqs({11, 10, 12, 13});
    EXPECT_EQ(r.rtp.expected, 4u);
    EXPECT_EQ(r.rtp.lost, 0u);
    EXPECT_EQ(r.rtp.reordered, 1u);
}

TEST(VerifyRtp, WrapAt65535) {
    auto r = run_seqs(range(65530, 20));
    EXPECT_EQ(r.rtp.expected, 20u);
    EXPECT_EQ(r.rtp.lost, 0u);
    EXPECT_EQ(r.rtp.cycles, 1u);
    EXPECT_EQ(r.rtp.first_seq, 65530);
    EXPECT_EQ(r.rtp.last_seq, 13);

    auto s = range(65530, 20);
    s.erase(s.begin() + 5, s.begin() + 7);  // 65535 and 0
    auto r2 = run_seqs(s);
    EXPECT_EQ(r2.rtp.lost, 2u);
    EXPECT_EQ(r2.rtp.expected, 20u);
    // A reordered pair across the wrap, and a duplicate of 65535 after it.
    auto r3 = run_seqs({65533, 65534, 0, 65535, 1, 65535, 2});
    EXPECT_EQ(r3.rtp.reordered, 1u);
    EXPECT_EQ(r3.rtp.duplicated, 1u);
    EXPECT_EQ(r3.rtp.lost, 0u);
}

TEST(VerifyRtp, ManyWrapsOverALongRun) {
    auto r = run_seqs(range(100, 3 * 65536 + 10));
    EXPECT_EQ(r.rtp.cycles, 3u);
    EXPECT_EQ(r.rtp.lost, 0u);
    EXPECT_EQ(r.rtp.expected, uint64_t(3 * 65536 + 10));
}

TEST(VerifyRtp, JumpIsANewRunOnlyWhenConfirmed) {
    auto s = range(100, 100);
    auto more = range(30000, 50);
    s.insert(s.end(), more.begin(), more.end());
    auto r = run_seqs(s);
    EXPECT_EQ(r.rtp.resyncs, 1u);
    EXPECT_EQ(r.rtp.strays, 0u);
    EXPECT_EQ(r.rtp.expected, 150u);
    EXPECT_EQ(r.rtp.lost, 0u);
    EXPECT_EQ(r.rtp.last_seq, 30049);
    EXPECT_TRUE(r.has_errors());  // a sequence restart is a discontinuity for the viewer

    auto s2 = range(100, 10);
    s2.push_back(40000);  // one stray packet, then the run goes on
    auto tail = range(110, 10);
    s2.insert(s2.end(), tail.begin(), tail.end());
    auto r2 = run_seqs(s2);
    EXPECT_EQ(r2.rtp.strays, 1u);
    EXPECT_EQ(r2.rtp.resyncs, 0u);
    EXPECT_EQ(r2.rtp.lost, 0u);
    EXPECT_EQ(r2.rtp.expected, 20u);
}

TEST(VerifyRtp, SsrcChangeAndInvalidHeaders) {
    auto r = run_seqs(range(0, 10), 5);
    EXPECT_EQ(r.rtp.ssrc_changes, 1u);
    EXPECT_EQ(r.rtp.ssrc, 0x55u);

    Analyzer a({.mode = Mode::Rtp});
    Stream s;
    a.add(rtp(1, s.next_datagram()), kT0);
    a.add(rtp(2, s.next_datagram(), 0x11223344, 1), kT0 + kMsNs);  // version 1
    Bytes shortd(8, 0x80);
    a.add(shortd, kT0 + 2 * kMsNs);
    Bytes csrc = rtp(3, {});
    csrc[0] |= 0x0f;  // 15 CSRCs announced, none present
    a.add(csrc, kT0 + 3 * kMsNs);
    Bytes pad = rtp(4, s.next_datagram());
    pad[0] |= 0x20;
    pad.back() = 0;  // padding count 0 is invalid
    a.add(pad, kT0 + 4 * kMsNs);
    Bytes ext = rtp(5, {0, 0, 0, 1, 9, 9, 9, 9});  // extension of one word, then no TS
    ext[0] |= 0x10;
    a.add(ext, kT0 + 5 * kMsNs);
    auto rep = a.report();
    EXPECT_EQ(rep.rtp.invalid, 4u);
    EXPECT_EQ(rep.rtp.packets, 2u);
    EXPECT_EQ(rep.datagrams, 6u);
    EXPECT_EQ(rep.ts_packets, 7u);
}

TEST(VerifyRtp, HeaderExtensionAndPaddingAreSkipped) {
    Analyzer a({.mode = Mode::Rtp});
    Stream s;
    auto ts = s.next_datagram();
    Bytes d = rtp(7, {});
    d[0] |= 0x10 | 0x20;
    Bytes ext = {0xbe, 0xde, 0x00, 0x01, 1, 2, 3, 4};
    d.insert(d.end(), ext.begin(), ext.end());
    d.insert(d.end(), ts.begin(), ts.end());
    d.insert(d.end(), {0, 0, 3});  // three bytes of padding
    a.add(d, kT0);
    auto r = a.report();
    EXPECT_EQ(r.rtp.invalid, 0u);
    EXPECT_EQ(r.ts_packets, 7u);
    EXPECT_EQ(r.ts.bad_length, 0u);
    EXPECT_EQ(a.last_ts_payload().size(), 7u * 188);
}

// ---- TS continuity (TR 101 290 1.4) ----

Report run_packets(const std::vector<Pkt>& pkts) {
    Analyzer a({.mode = Mode::Raw});
    int64_t t = kT0;
    for (const auto& k : pkts) {
        a.add(ts_packet(k), t);
        t += kMsNs;
    }
    return a.report();
}

std::vector<Pkt> ccs(std::vector<int> v, uint16_t pid = 0x100) {
    std::vector<Pkt> out;
    for (int c : v) out.push_back(Pkt{.pid = pid, .cc = uint8_t(c)});
    return out;
}

TEST(VerifyTs, ContinuousCountersWrapWithoutError) {
    std::vector<int> v;
    for (int i = 0; i < 40; ++i) v.push_back((i + 3) % 16);
    auto r = run_packets(ccs(v));
    EXPECT_EQ(r.ts.cc_errors, 0u);
    ASSERT_EQ(r.ts.pids.size(), 1u);
    EXPECT_EQ(r.ts.pids[0].pid, 0x100);
    EXPECT_EQ(r.ts.pids[0].packets, 40u);
    EXPECT_FALSE(r.has_errors());
}

TEST(VerifyTs, GapIsOneError) {
    auto r = run_packets(ccs({0, 1, 2, 5, 6, 7}));
    EXPECT_EQ(r.ts.cc_errors, 1u);
    EXPECT_EQ(r.ts.pids[0].cc_errors, 1u);
    EXPECT_TRUE(r.has_errors());
}

TEST(VerifyTs, OneDuplicateAllowedNotTwo) {
    auto r = run_packets(ccs({0, 1, 1, 2, 3}));
    EXPECT_EQ(r.ts.cc_errors, 0u);
    EXPECT_EQ(r.ts.pids[0].duplicates, 1u);
    auto r2 = run_packets(ccs({0, 1, 1, 1, 2, 3}));
    EXPECT_EQ(r2.ts.cc_errors, 1u);
    // Duplicates again later are each allowed once.
    auto r3 = run_packets(ccs({0, 0, 1, 1, 2, 2}));
    EXPECT_EQ(r3.ts.cc_errors, 0u);
    EXPECT_EQ(r3.ts.pids[0].duplicates, 3u);
}

TEST(VerifyTs, PacketsWithoutPayloadDoNotStep) {
    auto v = ccs({4, 5});
    v.push_back(Pkt{.cc = 5, .payload = false});  // adaptation only, same counter
    v.push_back(Pkt{.cc = 6});
    v.push_back(Pkt{.cc = 6, .payload = false});
    v.push_back(Pkt{.cc = 7});
    auto r = run_packets(v);
    EXPECT_EQ(r.ts.cc_errors, 0u);
    EXPECT_EQ(r.ts.pids[0].duplicates, 0u);
}

TEST(VerifyTs, DiscontinuityIndicatorExcusesAJump) {
    auto v = ccs({0, 1, 2});
    v.push_back(Pkt{.cc = 9, .discontinuity = true});
    auto tail = ccs({10, 11});
    v.insert(v.end(), tail.begin(), tail.end());
    auto r = run_packets(v);
    EXPECT_EQ(r.ts.cc_errors, 0u);
    EXPECT_EQ(r.ts.pids[0].discontinuities, 1u);
    // The same jump without the flag is an error.
    auto r2 = run_packets(ccs({0, 1, 2, 9, 10, 11}));
    EXPECT_EQ(r2.ts.cc_errors, 1u);
}

TEST(VerifyTs, NullPidIgnoredAndPidsIndependent) {
    std::vector<Pkt> v;
    for (int i = 0; i < 10; ++i) {
        v.push_back(Pkt{.pid = 0x100, .cc = uint8_t(i)});
        v.push_back(Pkt{.pid = 0x1fff, .cc = uint8_t(i * 7)});  // garbage counters on the null PID
        v.push_back(Pkt{.pid = 0x101, .cc = uint8_t(15 - i)});  // counting down: errors
    }
    auto r = run_packets(v);
    EXPECT_EQ(r.ts.null_packets, 10u);
    ASSERT_EQ(r.ts.pids.size(), 2u);
    EXPECT_EQ(r.ts.pids[0].cc_errors, 0u);
    EXPECT_EQ(r.ts.pids[1].pid, 0x101);
    EXPECT_EQ(r.ts.pids[1].cc_errors, 9u);
    EXPECT_EQ(r.ts.packets, 30u);
}

TEST(VerifyTs, TransportErrorCountedAndLeavesCounterAlone) {
    auto v = ccs({0, 1});
    v.push_back(Pkt{.cc = 13, .tei = true});
    auto t = ccs({2, 3});
    v.insert(v.end(), t.begin(), t.end());
    auto r = run_packets(v);
    EXPECT_EQ(r.ts.transport_errors, 1u);
    EXPECT_EQ(r.ts.cc_errors, 0u);
    EXPECT_TRUE(r.has_errors());
}

TEST(VerifyTs, SyncLossNeedsTwoBadBytesAndFiveGoodToRecover) {
    Analyzer a({.mode = Mode::Raw});
    int64_t t = kT0;
    uint8_t cc = 0;
    auto good = [&] { a.add(ts_packet(Pkt{.cc = cc++}), t += kMsNs); };
    auto bad = [&] {
        auto p = ts_packet(Pkt{.cc = 0});
        p[0] = 0x46;
        a.add(p, t += kMsNs);
    };
    good(); bad(); good();  // one bad sync byte: an error, not a loss
    EXPECT_EQ(a.report().ts.sync_losses, 0u);
    bad(); bad(); bad();
    EXPECT_EQ(a.report().ts.sync_losses, 1u);
    for (int i = 0; i < 4; ++i) good();
    bad(); bad();  // still out of sync (only four good): no new loss
    EXPECT_EQ(a.report().ts.sync_losses, 1u);
    for (int i = 0; i < 5; ++i) good();
    bad(); bad();
    auto r = a.report();
    EXPECT_EQ(r.ts.sync_losses, 2u);
    EXPECT_EQ(r.ts.sync_byte_errors, 8u);
}

TEST(VerifyTs, DatagramNotAMultipleOf188) {
    Analyzer a({.mode = Mode::Raw});
    Stream s;
    auto d = s.next_datagram();
    d.resize(d.size() - 10);
    a.add(d, kT0);
    auto r = a.report();
    EXPECT_EQ(r.ts.bad_length, 1u);
    EXPECT_EQ(r.ts_packets, 6u);
    EXPECT_TRUE(r.has_errors());
}

TEST(VerifyTs, AutoModeDetection) {
    Stream s;
    Analyzer raw;
    raw.add(s.next_datagram(), kT0);
    EXPECT_EQ(raw.report().mode, Mode::Raw);
    Analyzer r;
    r.add(rtp(1, s.next_datagram()), kT0);
    EXPECT_EQ(r.report().mode, Mode::Rtp);
    Analyzer none;
    none.add(Bytes{0x00, 0x01}, kT0);
    EXPECT_EQ(none.report().mode, Mode::Auto);
    EXPECT_EQ(none.report().datagrams, 1u);
    EXPECT_EQ(none.report().ts_packets, 0u);
}

// ---- timing ----

TEST(VerifyTiming, LargestGapWithPositionAndMedianInterval) {
    Analyzer a({.mode = Mode::Rtp, .top_gaps = 3});
    Stream s;
    int64_t t = kT0;
    for (uint16_t seq = 0; seq < 200; ++seq) {
        if (seq == 120) t += 40 * kMsNs;  // the failover
        if (seq == 50) t += 7 * kMsNs;
        if (seq == 170) t += 3 * kMsNs;
        a.add(rtp(seq, s.next_datagram()), t);
        t += 2 * kMsNs;
    }
    auto r = a.report();
    ASSERT_TRUE(r.largest_gap);
    EXPECT_NEAR(r.largest_gap->ms, 42.0, 1e-9);
    EXPECT_EQ(r.largest_gap->index, 120u);
    EXPECT_EQ(*r.largest_gap->seq, 120);
    EXPECT_EQ(*r.largest_gap->prev_seq, 119);
    EXPECT_EQ(r.largest_gap->at_ns, kT0 + 120 * 2 * kMsNs + 7 * kMsNs + 40 * kMsNs);
    EXPECT_EQ(r.largest_gap->at_ns - r.largest_gap->prev_ns, 42 * kMsNs);
    ASSERT_EQ(r.top_gaps.size(), 3u);
    EXPECT_NEAR(r.top_gaps[1].ms, 9.0, 1e-9);
    EXPECT_EQ(r.top_gaps[1].index, 50u);
    EXPECT_NEAR(r.top_gaps[2].ms, 5.0, 1e-9);
    EXPECT_NEAR(r.median_interval_ms, 2.0, 2.0 / 128);
    EXPECT_NEAR(r.duration_s(), (199 * 2 + 50) / 1000.0, 1e-9);
}

TEST(VerifyTiming, ClockStepBackIsNotAGap) {
    Analyzer a({.mode = Mode::Raw});
    Stream s;
    a.add(s.next_datagram(), kT0);
    a.add(s.next_datagram(), kT0 - 5 * kMsNs);
    a.add(s.next_datagram(), kT0 - 4 * kMsNs);
    auto r = a.report();
    ASSERT_TRUE(r.largest_gap);
    EXPECT_NEAR(r.largest_gap->ms, 1.0, 1e-9);
}

// ---- jitter against the PCR schedule ----

// Datagrams every 10 ms of PCR time; arrival = schedule + 3 ms constant + the given deviation.
Report jitter_run(int n, int64_t pcr_start, const std::function<int64_t(int)>& dev_ns,
                  std::optional<int> discontinuity_at = std::nullopt) {
    Analyzer a({.mode = Mode::Raw});
    Stream s;
    int64_t pcr = pcr_start;
    int64_t t = kT0;
    for (int i = 0; i < n; ++i) {
        int64_t p = pcr % of::mpegts::kPcrWrap;
        Bytes d = s.next_datagram(p);
        if (discontinuity_at && i == *discontinuity_at) {
            // A new time base 10 s later, flagged.
            pcr += 10 * 27'000'000;
            p = pcr % of::mpegts::kPcrWrap;
            Pkt k{.pid = s.pid, .cc = uint8_t(s.cc - 7), .discontinuity = true, .pcr = p};
            auto first = ts_packet(k);
            std::copy(first.begin(), first.end(), d.begin());
        }
        a.add(d, t + 3 * kMsNs + dev_ns(i));
        pcr += 270'000;  // 10 ms
        t += 10 * kMsNs;
    }
    return a.report();
}

TEST(VerifyJitter, OnScheduleIsZero) {
    auto r = jitter_run(500, 1'000'000, [](int) { return 0; });
    ASSERT_TRUE(r.jitter.pcr_pid);
    EXPECT_EQ(*r.jitter.pcr_pid, 0x100);
    EXPECT_EQ(r.jitter.samples, 499u);  // the first PCR anchors the schedule
    EXPECT_NEAR(r.jitter.p99_ms, 0.0, 1e-3);
    EXPECT_NEAR(r.jitter.max_ms, 0.0, 1e-3);
    EXPECT_EQ(r.jitter.pcr_discontinuities, 0u);
    ASSERT_EQ(r.ts.pids.size(), 1u);
    EXPECT_TRUE(r.ts.pids[0].pcr);
}

TEST(VerifyJitter, KnownDeviations) {
    // 2% of datagrams 1.5 ms late, one 20 ms late (a hand-over), the rest on time.
    auto r = jitter_run(1000, 0, [](int i) -> int64_t {
        if (i == 700) return 20 * kMsNs;
        return i % 50 == 0 ? 1'500'000 : 0;
    });
    EXPECT_NEAR(r.jitter.p50_ms, 0.0, 1e-3);
    EXPECT_NEAR(r.jitter.p99_ms, 1.5, 1e-3);
    EXPECT_NEAR(r.jitter.max_ms, 20.0, 1e-3);
    EXPECT_FALSE(r.jitter.sampled);
}

TEST(VerifyJitter, PcrPlaceInTheDatagramIsNotJitter) {
    // A CBR stream of 1 ms packets (27,000 ticks), 7 to a datagram, each datagram arriving exactly
    // at its first packet's time; a PCR every 11 packets, so it wanders through places 0..6 of the
    // datagrams (as a mux's PCR period does). Against its own packet the PCR datagram is up to
    // 6 ms early; against the datagram's schedule it is on time. Datagram 400 (a PCR in packet 5)
    // arrives 2 ms late, datagram 401 (no PCR: timed from the last PCR) 3 ms late.
    Analyzer a({.mode = Mode::Raw});
    Stream s;
    constexpr int64_t kTicks = 27'000;
    for (int i = 0; i < 700; ++i) {
        int first = 7 * i;
        int at = (11 - first % 11) % 11;  // the next multiple of 11 from this datagram's start
        std::optional<int64_t> pcr;
        if (at < 7) pcr = int64_t(first + at) * kTicks;
        int64_t late = i == 400 ? 2 * kMsNs : i == 401 ? 3 * kMsNs : 0;
        a.add(s.next_datagram(pcr, at < 7 ? at : 0), kT0 + int64_t(first) * kMsNs + late);
    }
    auto r = a.report();
    EXPECT_GE(r.jitter.samples, 697u);  // every datagram from the second PCR on
    EXPECT_NEAR(r.jitter.p99_ms, 0.0, 1e-3);
    EXPECT_NEAR(r.jitter.max_ms, 3.0, 1e-3);
}

TEST(VerifyJitter, PcrWrapIsUnwrapped) {
    // Start 2 s before the 33-bit PCR base wraps (about 26.5 hours).
    auto r = jitter_run(600, of::mpegts::kPcrWrap - 2 * 27'000'000, [](int i) { return i % 2 ? 500'000 : 0; });
    EXPECT_EQ(r.jitter.pcr_discontinuities, 0u);
    EXPECT_NEAR(r.jitter.max_ms, 0.5, 1e-3);
}

TEST(VerifyJitter, FlaggedDiscontinuityReanchors) {
    auto r = jitter_run(300, 5'000'000, [](int) { return 0; }, 150);
    EXPECT_EQ(r.jitter.pcr_discontinuities, 1u);
    EXPECT_NEAR(r.jitter.max_ms, 0.0, 1e-3);
    EXPECT_EQ(r.ts.cc_errors, 0u);
}

TEST(VerifyJitter, ExplicitPcrPidAndLongRunsAreSampled) {
    Analyzer a({.mode = Mode::Raw, .pcr_pid = 0x200});
    Stream s;
    a.add(s.next_datagram(0), kT0);  // PCR on 0x100: not the chosen PID
    EXPECT_EQ(a.report().jitter.samples, 0u);
    Stream s2;
    s2.pid = 0x200;
    int64_t t = kT0;
    for (int i = 0; i < 70'000; ++i, t += kMsNs) a.add(s2.next_datagram(int64_t(i) * 27'000), t);
    auto r = a.report();
    EXPECT_EQ(r.jitter.samples, 69'999u);
    EXPECT_TRUE(r.jitter.sampled);
    EXPECT_NEAR(r.jitter.max_ms, 0.0, 1e-3);
}

// ---- compare against the source ----

// A source whose packets are all distinct, except null packets every 10th.
Bytes make_source(int n) {
    Bytes src;
    uint8_t cc = 0;
    for (int i = 0; i < n; ++i) {
        Pkt k{.pid = uint16_t(i % 10 == 9 ? 0x1fff : 0x100), .cc = uint8_t(i % 10 == 9 ? 0 : cc++), .fill = uint8_t(i * 31)};
        auto p = ts_packet(k);
        if (k.pid != 0x1fff) {
            p[100] = uint8_t(i >> 8);
            p[101] = uint8_t(i);
        } else {
            std::fill(p.begin() + 4, p.end(), 0xff);
        }
        src.insert(src.end(), p.begin(), p.end());
    }
    return src;
}

Bytes chunk(const Bytes& src, size_t first, size_t count) {
    return Bytes(src.begin() + ptrdiff_t(first * 188), src.begin() + ptrdiff_t((first + count) * 188));
}

TEST(VerifyCompare, EveryPacketInOrderFromWhereTheStreamStarts) {
    Bytes src = make_source(2000);
    Analyzer a({.mode = Mode::Raw});
    ASSERT_TRUE(a.set_source(src).ok());
    int64_t t = kT0;
    for (size_t i = 700; i + 7 <= 2000; i += 7) a.add(chunk(src, i, 7), t += kMsNs);
    auto c = a.report().compare;
    EXPECT_TRUE(c.enabled);
    EXPECT_TRUE(c.aligned);
    EXPECT_EQ(c.start_packet, 700u);
    EXPECT_EQ(c.matched, 1295u);
    EXPECT_EQ(c.end_packet, 1995u);
    EXPECT_EQ(c.missing + c.extra + c.mismatched, 0u);
    EXPECT_TRUE(c.in_order_complete());
    EXPECT_FALSE(c.first_error_packet);
}

TEST(VerifyCompare, MissingExtraMismatched) {
    Bytes src = make_source(3000);
    Analyzer a({.mode = Mode::Raw});
    ASSERT_TRUE(a.set_source(src).ok());
    int64_t t = kT0;
    for (size_t i = 0; i + 7 <= 2100; i += 7) {
        if (i == 700) continue;                                // one lost datagram: 7 missing
        if (i == 1400) a.add(chunk(src, i - 7, 7), t += kMsNs);  // a repeated datagram: 7 extra
        Bytes d = chunk(src, i, 7);
        if (i == 1799) d[188 * 3 + 150] ^= 0x01;  // one corrupted packet
        a.add(d, t += kMsNs);
    }
    auto c = a.report().compare;
    EXPECT_TRUE(c.aligned);
    EXPECT_EQ(c.start_packet, 0u);
    EXPECT_EQ(c.missing, 7u);
    EXPECT_EQ(c.extra, 7u);
    EXPECT_EQ(c.mismatched, 1u);
    ASSERT_TRUE(c.first_error_packet);
    EXPECT_EQ(*c.first_error_packet, 700u);  // received index of the packet after the hole
    EXPECT_EQ(c.end_packet, 2100u);
    EXPECT_FALSE(c.in_order_complete());
    EXPECT_TRUE(a.report().has_errors());
}

TEST(VerifyCompare, NullHeavySourceStaysAligned) {
    // Mostly identical null packets (as a muxer pads to a constant rate): a lost or repeated
    // datagram must not be explained by the nearest byte-equal null packet.
    Bytes src;
    uint8_t cc = 0;
    for (int i = 0; i < 6000; ++i) {
        bool null = (i * 7919) % 10 < 7;
        Pkt k{.pid = uint16_t(null ? 0x1fff : 0x100), .cc = uint8_t(null ? 0 : cc++), .fill = uint8_t(i)};
        auto p = ts_packet(k);
        if (null) std::fill(p.begin() + 4, p.end(), 0xff);
        else p[100] = uint8_t(i >> 8), p[101] = uint8_t(i);
        src.insert(src.end(), p.begin(), p.end());
    }
    Analyzer a({.mode = Mode::Raw});
    ASSERT_TRUE(a.set_source(src).ok());
    int64_t t = kT0;
    for (size_t i = 0; i + 7 <= 6000; i += 7) {
        if (i == 700 || i == 707 || i == 3500) continue;
        a.add(chunk(src, i, 7), t += kMsNs);
        if (i == 2100) a.add(chunk(src, i, 7), t += kMsNs);
    }
    auto c = a.report().compare;
    EXPECT_EQ(c.missing, 21u);
    EXPECT_EQ(c.extra, 7u);
    EXPECT_EQ(c.mismatched, 0u);
    EXPECT_EQ(c.matched, 5999u - 21u);
}

TEST(VerifyCompare, ReceivedTailPastTheSourceEndIsExtra) {
    Bytes src = make_source(100);
    Analyzer a({.mode = Mode::Raw});
    ASSERT_TRUE(a.set_source(src).ok());
    a.add(chunk(src, 86, 7), kT0);
    a.add(chunk(src, 93, 7), kT0 + kMsNs);
    Stream other;
    other.pid = 0x300;
    a.add(other.next_datagram(), kT0 + 2 * kMsNs);
    auto c = a.report().compare;
    EXPECT_EQ(c.matched, 14u);
    EXPECT_EQ(c.extra, 7u);
    EXPECT_EQ(c.end_packet, 100u);
}

TEST(VerifyCompare, NotInTheSource) {
    Bytes src = make_source(500);
    Analyzer a({.mode = Mode::Raw});
    ASSERT_TRUE(a.set_source(src).ok());
    Stream other;
    other.pid = 0x300;
    for (int i = 0; i < 20; ++i) a.add(other.next_datagram(), kT0 + i * kMsNs);
    auto c = a.report().compare;
    EXPECT_FALSE(c.aligned);
    EXPECT_EQ(c.mismatched, 140u);
    EXPECT_FALSE(c.in_order_complete());
}

TEST(VerifyCompare, ShortStreamStillAligns) {
    Bytes src = make_source(500);
    Analyzer a({.mode = Mode::Raw});
    ASSERT_TRUE(a.set_source(src).ok());
    a.add(chunk(src, 300, 3), kT0);
    auto c = a.report().compare;
    EXPECT_TRUE(c.aligned);
    EXPECT_EQ(c.start_packet, 300u);
    EXPECT_TRUE(c.in_order_complete());
    // The report is a snapshot: more packets keep counting.
    a.add(chunk(src, 303, 7), kT0 + kMsNs);
    EXPECT_EQ(a.report().compare.matched, 10u);
}

TEST(VerifyCompare, AlteredFirstPacketsAreSkippedForAlignment) {
    Bytes src = make_source(500);
    Analyzer a({.mode = Mode::Rtp});
    ASSERT_TRUE(a.set_source(src).ok());
    Bytes d = chunk(src, 200, 7);
    d[5] ^= 0x40;  // first packet altered (e.g. a flag set by the server at PLAY)
    a.add(rtp(1, d), kT0);
    a.add(rtp(2, chunk(src, 207, 7)), kT0 + kMsNs);
    auto c = a.report().compare;
    EXPECT_TRUE(c.aligned);
    EXPECT_EQ(c.start_packet, 201u);
    EXPECT_EQ(c.mismatched, 1u);
    EXPECT_EQ(c.matched, 13u);
}

TEST(VerifyCompare, SourceValidation) {
    Analyzer a;
    Bytes tiny(100);
    EXPECT_EQ(a.set_source(tiny).error().code, EINVAL);
    Stream s;
    a.add(s.next_datagram(), kT0);
    Bytes src = make_source(10);
    EXPECT_EQ(a.set_source(src).error().code, EBUSY);
}

// ---- report ----

TEST(VerifyReport, JsonCarriesTheNumbersAndParses) {
    Analyzer a({.mode = Mode::Rtp});
    Stream s;
    for (uint16_t q : {1, 2, 4, 4}) a.add(rtp(q, s.next_datagram(int64_t(q) * 27000)), kT0 + q * kMsNs);
    RunInfo info;
    info.url = "rtsp://10.77.0.1:554/a\"b";
    info.transport = "rtp";
    info.end_reason = "idle";
    std::string j = to_json(a.report(), info);
    EXPECT_NE(j.find("\"lost\":1"), std::string::npos) << j;
    EXPECT_NE(j.find("\"duplicated\":1"), std::string::npos) << j;
    EXPECT_NE(j.find("\"url\":\"rtsp://10.77.0.1:554/a\\\"b\""), std::string::npos) << j;
    EXPECT_NE(j.find("\"ok\":false"), std::string::npos) << j;
    if (access("/usr/bin/jq", X_OK) != 0) GTEST_SKIP() << "jq not installed: JSON syntax not checked";
    char path[] = "/tmp/of-verify-json-XXXXXX";
    int fd = mkstemp(path);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(write(fd, j.data(), j.size()), ssize_t(j.size()));
    close(fd);
    std::string cmd = std::string("jq -e '.rtp.lost == 1 and .timing.largest_gap.seq == 4 and (.ts.pids | length) == 1' ") +
                      path + " >/dev/null";
    EXPECT_EQ(std::system(cmd.c_str()), 0) << j;
    unlink(path);
    EXPECT_EQ(json_quote(std::string("a\x01\n", 3)), "\"a\\u0001\\n\"");
}

TEST(VerifyReport, TextNamesTheVerdict) {
    Analyzer a({.mode = Mode::Raw});
    Stream s;
    a.add(s.next_datagram(), kT0);
    a.add(s.next_datagram(), kT0 + kMsNs);
    RunInfo info;
    info.end_reason = "duration";
    std::string t = to_text(a.report(), info);
    EXPECT_NE(t.find("verdict    clean"), std::string::npos) << t;
    Analyzer empty;
    EXPECT_NE(to_text(empty.report(), info).find("NOTHING RECEIVED"), std::string::npos);
}

// ---- RTSP pieces ----

TEST(VerifyRtsp, ParseUrl) {
    auto u = parse_url("rtsp://10.77.0.1:8554/movie.ts");
    ASSERT_TRUE(u.ok());
    EXPECT_EQ(u->host, "10.77.0.1");
    EXPECT_EQ(u->port, 8554);
    EXPECT_EQ(u->path, "/movie.ts");
    auto d = parse_url("RTSP://server");
    ASSERT_TRUE(d.ok());
    EXPECT_EQ(d->port, 554);
    EXPECT_EQ(d->path, "/");
    for (const char* bad : {"http://x/", "rtsp://", "rtsp://:554/x", "rtsp://h:0/", "rtsp://h:70000/",
                            "rtsp://u:p@h/", "rtsp://[::1]/", "rtsp://h/a b", "rtsp://h_x/"})
        EXPECT_FALSE(parse_url(bad).ok()) << bad;
    EXPECT_FALSE(parse_url("rtsp://h/" + std::string(3000, 'a')).ok());
}

TEST(VerifyRtsp, ParseResponseWholeAndByteByByte) {
    std::string wire =
        "RTSP/1.0 200 OK\r\nCSeq: 3\r\nContent-Base: rtsp://h/a/\r\nContent-Type: application/sdp\r\n"
        "X-Folded: one\r\n two\r\nContent-Length: 10\r\n\r\n0123456789RTSP/1.0 454 Session Not Found\r\nCSeq: 4\r\n\r\n";
    size_t used = 0;
    auto m = parse_message(wire, used);
    ASSERT_TRUE(m.ok());
    ASSERT_TRUE(*m);
    EXPECT_EQ((*m)->status, 200);
    EXPECT_EQ((*m)->reason, "OK");
    EXPECT_EQ((*m)->cseq(), 3u);
    EXPECT_EQ((*m)->body, "0123456789");
    EXPECT_EQ(*(*m)->header("content-base"), "rtsp://h/a/");
    EXPECT_EQ(*(*m)->header("X-FOLDED"), "one two");
    auto second = parse_message(std::string_view(wire).substr(used), used);
    ASSERT_TRUE(second.ok() && *second);
    EXPECT_EQ((*second)->status, 454);
    EXPECT_EQ(status_text(**second), "454 Session Not Found");
    // Byte by byte: incomplete until the last byte of the body.
    size_t first_len = wire.find("RTSP/1.0 454");
    for (size_t n = 0; n < first_len; ++n) {
        auto p = parse_message(std::string_view(wire).substr(0, n), used);
        ASSERT_TRUE(p.ok()) << n;
        EXPECT_FALSE(*p) << n;
    }
    // Bare LF line ends.
    auto lf = parse_message("RTSP/1.0 200 OK\nCSeq: 1\n\n", used);
    ASSERT_TRUE(lf.ok() && *lf);
    EXPECT_EQ((*lf)->cseq(), 1u);
}

TEST(VerifyRtsp, ParseResponseLimitsAndGarbage) {
    size_t used;
    Limits lim;
    std::string many = "RTSP/1.0 200 OK\r\n";
    for (int i = 0; i < 65; ++i) many += "X-" + std::to_string(i) + ": v\r\n";
    EXPECT_EQ(parse_message(many + "\r\n", used, lim).error().code, EMSGSIZE);
    EXPECT_EQ(parse_message("RTSP/1.0 200 OK\r\nX: " + std::string(5000, 'a') + "\r\n\r\n", used).error().code, EMSGSIZE);
    EXPECT_EQ(parse_message(std::string(20000, 'a'), used).error().code, EMSGSIZE);  // no end of head
    EXPECT_EQ(parse_message("RTSP/1.0 200 OK\r\nContent-Length: 100000\r\n\r\n", used).error().code, EMSGSIZE);
    EXPECT_EQ(parse_message("RTSP/1.0 200 OK\r\nContent-Length: -1\r\n\r\n", used).error().code, EPROTO);
    EXPECT_EQ(parse_message("RTSP/1.0 2000 OK\r\n\r\n", used).error().code, EPROTO);
    EXPECT_EQ(parse_message("RTSP/2.0 200 OK\r\n\r\n", used).error().code, EPROTO);
    EXPECT_EQ(parse_message("HTTP/1.1 200 OK\r\n\r\n", used).error().code, EPROTO);
    EXPECT_EQ(parse_message("RTSP/1.0 200 OK\r\nno colon\r\n\r\n", used).error().code, EPROTO);
    EXPECT_EQ(parse_message("RTSP/1.0 200 OK\r\n continued\r\n\r\n", used).error().code, EPROTO);
    auto req = parse_message("ANNOUNCE rtsp://h/a RTSP/1.0\r\nCSeq: 9\r\n\r\n", used);
    ASSERT_TRUE(req.ok() && *req);
    EXPECT_TRUE((*req)->is_request);
    EXPECT_EQ((*req)->method, "ANNOUNCE");
}

TEST(VerifyRtsp, TransportSessionAndControl) {
    auto t = parse_transport("RTP/AVP;unicast;client_port=5000-5001;server_port=6970-6971;source=10.77.0.1;ssrc=1A2b3C4d, RTP/AVP/TCP");
    ASSERT_TRUE(t.ok()) << t.error().message;
    EXPECT_EQ(t->protocol, "RTP/AVP");
    EXPECT_TRUE(t->unicast);
    EXPECT_EQ(t->client_port->rtp, 5000);
    EXPECT_EQ(t->server_port->rtcp, 6971);
    EXPECT_EQ(*t->source, "10.77.0.1");
    EXPECT_EQ(*t->ssrc, 0x1a2b3c4du);
    auto raw = parse_transport("RAW/RAW/UDP;unicast;client_port=5000");
    ASSERT_TRUE(raw.ok());
    EXPECT_EQ(raw->client_port->rtcp, 5001);
    EXPECT_FALSE(parse_transport("").ok());
    EXPECT_FALSE(parse_transport("RTP/AVP;client_port=0-1").ok());
    EXPECT_FALSE(parse_transport("RTP/AVP;server_port=70000").ok());
    EXPECT_FALSE(parse_transport("RTP/AVP;ssrc=xyz").ok());

    auto s = parse_session("A1b2C3;timeout=60");
    ASSERT_TRUE(s.ok());
    EXPECT_EQ(s->id, "A1b2C3");
    EXPECT_EQ(s->timeout_s, 60);
    EXPECT_EQ(parse_session(" 77 ")->timeout_s, 60);
    EXPECT_EQ(parse_session("77; timeout = 8")->timeout_s, 8);
    EXPECT_FALSE(parse_session("").ok());
    EXPECT_FALSE(parse_session(";timeout=5").ok());
    EXPECT_FALSE(parse_session("x;timeout=0").ok());
    EXPECT_FALSE(parse_session("x;timeout=abc").ok());
    EXPECT_FALSE(parse_session(std::string(300, 'a')).ok());

    const std::string sdp = "v=0\r\no=- 0 0 IN IP4 0.0.0.0\r\ns=x\r\na=control:*\r\nm=video 0 RTP/AVP 33\r\na=control:trackID=0\r\n";
    std::string base = "rtsp://h/a/";
    EXPECT_EQ(setup_url("rtsp://h/a", &base, sdp), "rtsp://h/a/trackID=0");
    EXPECT_EQ(setup_url("rtsp://h/a", nullptr, sdp), "rtsp://h/a/trackID=0");
    EXPECT_EQ(setup_url("rtsp://h/a", nullptr, "m=video 0 udp 33\na=control:rtsp://other/x\n"), "rtsp://other/x");
    EXPECT_EQ(setup_url("rtsp://h/a", nullptr, "a=control:*\nm=video 0 udp 33\n"), "rtsp://h/a");
    EXPECT_EQ(setup_url("rtsp://h/a", nullptr, ""), "rtsp://h/a");
}

// ---- over real sockets ----

TEST(VerifyReceiver, TimestampsAndTruncation) {
    auto rx = UdpReceiver::open(0);
    ASSERT_TRUE(rx.ok()) << rx.error().message;
    int tx = socket(AF_INET, SOCK_DGRAM, 0);
    sockaddr_in to{};
    to.sin_family = AF_INET;
    to.sin_port = htons(rx->port());
    to.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int64_t before = of::realtime_ns();
    Bytes small(1316, 0x47), big(3000, 0x47);
    ASSERT_EQ(sendto(tx, small.data(), small.size(), 0, reinterpret_cast<sockaddr*>(&to), sizeof to), 1316);
    ASSERT_EQ(sendto(tx, big.data(), big.size(), 0, reinterpret_cast<sockaddr*>(&to), sizeof to), 3000);
    close(tx);
    std::vector<std::pair<size_t, int64_t>> got;
    int64_t deadline = of::monotonic_ns() + 5'000 * kMsNs;
    while (got.size() < 2 && of::monotonic_ns() < deadline) {
        pollfd p{rx->fd(), POLLIN, 0};
        poll(&p, 1, 100);
        auto n = rx->receive([&](std::span<const uint8_t> d, int64_t ts, const sockaddr_in&) { got.emplace_back(d.size(), ts); });
        ASSERT_TRUE(n.ok());
    }
    ASSERT_EQ(got.size(), 2u);
    EXPECT_EQ(got[0].first, 1316u);
    EXPECT_EQ(got[1].first, UdpReceiver::kMaxDatagram);
    EXPECT_EQ(rx->truncated(), 1u);
    EXPECT_GE(got[0].second, before - 1000 * kMsNs);
    EXPECT_LE(got[0].second, of::realtime_ns());
    EXPECT_LE(got[0].second, got[1].second);
    auto pair = UdpReceiver::open_pair(0);
    ASSERT_TRUE(pair.ok());
    EXPECT_EQ(pair->first.port() % 2, 0);
    EXPECT_EQ(pair->second.port(), pair->first.port() + 1);
    EXPECT_FALSE(UdpReceiver::open_pair(5001).ok());
}

// A scripted RTSP server on loopback: answers what the script says and, after PLAY, streams RTP or
// raw TS datagrams to the client_port of the SETUP. It records every request it saw.
class Responder {
public:
    struct Req {
        std::string method, uri;
        std::string raw;
        int connection;
    };
    int describe_status = 200;
    int get_parameter_status = 200;
    int session_timeout = 2;
    bool silent = false;              // never answer
    bool close_after_play = false;    // drop the TCP connection after PLAY
    bool reset_after_play = false;    // ... with an RST
    bool send_garbage = false;        // answer DESCRIBE with junk
    bool bad_control = false;         // an a=control with a space and a CR in it
    int datagrams = 120;
    int64_t interval_ns = 10 * kMsNs;
    std::vector<uint16_t> skip_seqs;  // RTP sequence numbers not sent

    Responder() {
        lfd_ = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        int one = 1;
        setsockopt(lfd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        sockaddr_in a{};
        a.sin_family = AF_INET;
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        bind(lfd_, reinterpret_cast<sockaddr*>(&a), sizeof a);
        listen(lfd_, 4);
        socklen_t len = sizeof a;
        getsockname(lfd_, reinterpret_cast<sockaddr*>(&a), &len);
        port_ = ntohs(a.sin_port);
    }
    ~Responder() {
        stop_ = true;
        if (th_.joinable()) th_.join();
        if (streamer_.joinable()) streamer_.join();
        close(lfd_);
    }
    void start() { th_ = std::thread([this] { serve(); }); }
    std::string url() const { return "rtsp://127.0.0.1:" + std::to_string(port_) + "/asset.ts"; }
    std::vector<Req> requests() {
        std::lock_guard<std::mutex> g(mu_);
        return reqs_;
    }
    std::vector<std::string> methods() {
        std::vector<std::string> m;
        for (auto& r : requests()) m.push_back(r.method);
        return m;
    }

private:
    static std::string header(const std::string& raw, const std::string& name) {
        std::string key = "\r\n" + name + ": ";
        size_t p = raw.find(key);
        if (p == std::string::npos) return "";
        p += key.size();
        return raw.substr(p, raw.find("\r\n", p) - p);
    }

    void serve() {
        int conn_no = 0;
        while (!stop_) {
            pollfd p{lfd_, POLLIN, 0};
            if (poll(&p, 1, 50) <= 0) continue;
            int c = accept(lfd_, nullptr, nullptr);
            if (c < 0) continue;
            ++conn_no;
            handle(c, conn_no);
            close(c);
        }
    }

    void handle(int c, int conn_no) {
        std::string buf;
        while (!stop_) {
            pollfd p{c, POLLIN, 0};
            if (poll(&p, 1, 50) <= 0) continue;
            char tmp[2048];
            ssize_t n = recv(c, tmp, sizeof tmp, 0);
            if (n <= 0) return;
            buf.append(tmp, size_t(n));
            size_t end;
            while ((end = buf.find("\r\n\r\n")) != std::string::npos) {
                std::string raw = buf.substr(0, end + 4);
                buf.erase(0, end + 4);
                Req r;
                r.raw = raw;
                r.connection = conn_no;
                r.method = raw.substr(0, raw.find(' '));
                size_t u = raw.find(' ') + 1;
                r.uri = raw.substr(u, raw.find(' ', u) - u);
                {
                    std::lock_guard<std::mutex> g(mu_);
                    reqs_.push_back(r);
                }
                if (silent) continue;
                std::string cseq = header(raw, "CSeq");
                std::string resp;
                if (r.method == "OPTIONS") {
                    resp = ok(cseq) + "Public: OPTIONS, DESCRIBE, SETUP, PLAY, GET_PARAMETER, TEARDOWN\r\n\r\n";
                } else if (r.method == "DESCRIBE") {
                    if (send_garbage) {
                        resp = "this is not RTSP\r\n\r\n";
                    } else if (describe_status != 200) {
                        // Without CSeq and with an HTML body, as VLC 3.0 answers an unknown path.
                        resp = "RTSP/1.0 " + std::to_string(describe_status) +
                               " Not found\r\nContent-Length: 12\r\nContent-Type: text/html\r\n\r\n<h1>404</h1>";
                    } else {
                        std::string sdp = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=asset\r\nt=0 0\r\na=control:*\r\n"
                                          "a=range:npt=0-60\r\nm=video 0 RTP/AVP 33\r\na=rtpmap:33 MP2T/90000\r\n"
                                          "a=control:trackID=0\r\n";
                        if (bad_control) sdp += "a=control:x y\rz\r\n";
                        resp = ok(cseq) + "Content-Base: " + url() + "/\r\nContent-Type: application/sdp\r\nContent-Length: " +
                               std::to_string(sdp.size()) + "\r\n\r\n" + sdp;
                    }
                } else if (r.method == "SETUP") {
                    std::string tr = header(raw, "Transport");
                    size_t cp = tr.find("client_port=");
                    client_port_ = uint16_t(std::stoi(tr.substr(cp + 12)));
                    raw_mode_ = tr.rfind("RAW/RAW/UDP", 0) == 0;
                    resp = ok(cseq) + "Session: 4F2A9C;timeout=" + std::to_string(session_timeout) + "\r\nTransport: " + tr +
                           ";server_port=6970-6971\r\n\r\n";
                } else if (r.method == "PLAY") {
                    resp = ok(cseq) + "Session: 4F2A9C\r\nRange: npt=0.000-\r\n\r\n";
                    if (!streamer_.joinable()) streamer_ = std::thread([this] { stream(); });
                } else if (r.method == "GET_PARAMETER") {
                    resp = get_parameter_status == 200 ? ok(cseq) + "Session: 4F2A9C\r\n\r\n"
                                                       : "RTSP/1.0 " + std::to_string(get_parameter_status) +
                                                             " Not Implemented\r\nCSeq: " + cseq + "\r\n\r\n";
                } else {
                    resp = ok(cseq) + "\r\n";
                }
                send(c, resp.data(), resp.size(), MSG_NOSIGNAL);
                if (r.method == "PLAY" && reset_after_play) {
                    linger l{1, 0};  // close() now resets
                    setsockopt(c, SOL_SOCKET, SO_LINGER, &l, sizeof l);
                    return;
                }
                if (r.method == "PLAY" && close_after_play) return;
            }
        }
    }
    static std::string ok(const std::string& cseq) { return "RTSP/1.0 200 OK\r\nCSeq: " + cseq + "\r\n"; }

    // Paced by absolute deadlines (clock_nanosleep), as a real server paces by PCR.
    void stream() {
        int s = socket(AF_INET, SOCK_DGRAM, 0);
        sockaddr_in to{};
        to.sin_family = AF_INET;
        to.sin_port = htons(client_port_);
        to.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        Stream ts;
        timespec next;
        clock_gettime(CLOCK_MONOTONIC, &next);
        for (int i = 0; i < datagrams && !stop_; ++i) {
            uint16_t seq = uint16_t(500 + i);
            Bytes d = ts.next_datagram(int64_t(i) * interval_ns * 27 / 1000);
            if (!raw_mode_) d = rtp(seq, d);
            if (std::find(skip_seqs.begin(), skip_seqs.end(), seq) == skip_seqs.end())
                sendto(s, d.data(), d.size(), 0, reinterpret_cast<sockaddr*>(&to), sizeof to);
            int64_t ns = next.tv_nsec + interval_ns;
            next.tv_sec += ns / 1'000'000'000;
            next.tv_nsec = ns % 1'000'000'000;
            clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &next, nullptr);
        }
        close(s);
    }

    int lfd_;
    uint16_t port_;
    std::atomic<bool> stop_{false};
    std::thread th_, streamer_;
    std::mutex mu_;
    std::vector<Req> reqs_;
    std::atomic<uint16_t> client_port_{0};
    std::atomic<bool> raw_mode_{false};
};

RunOptions quick(const std::string& url) {
    RunOptions o;
    o.url = *parse_url(url);
    o.duration_s = 20;
    o.idle_timeout_s = 0.6;
    o.first_timeout_s = 5;
    o.rtsp.response_timeout_ms = 2000;
    return o;
}

TEST(VerifySession, FullRtpSessionWithKeepaliveAndTeardown) {
    Responder srv;
    srv.datagrams = 150;  // 1.5 s: the 2 s session timeout asks for a keepalive each second
    for (uint16_t q = 520; q < 540; ++q) srv.skip_seqs.push_back(q);  // 200 ms: more than any load hiccup
    srv.start();
    RunOptions o = quick(srv.url());
    o.start_npt = 12.5;
    Analyzer an;
    std::vector<std::string> events;
    o.on_event = [&](std::string_view e) { events.emplace_back(e); };
    auto info = run(o, an);
    ASSERT_TRUE(info.ok()) << info.error().message;
    auto m = srv.methods();
    ASSERT_GE(m.size(), 6u);
    EXPECT_EQ(m[0], "OPTIONS");
    EXPECT_EQ(m[1], "DESCRIBE");
    EXPECT_EQ(m[2], "SETUP");
    EXPECT_EQ(m[3], "PLAY");
    EXPECT_EQ(m.back(), "TEARDOWN");
    EXPECT_GE(std::count(m.begin(), m.end(), "GET_PARAMETER"), 1);
    auto reqs = srv.requests();
    EXPECT_EQ(reqs[2].uri, srv.url() + "/trackID=0");
    EXPECT_NE(reqs[2].raw.find("Transport: RTP/AVP;unicast;client_port=" + std::to_string(info->port) + "-" +
                               std::to_string(info->port + 1)),
              std::string::npos)
        << reqs[2].raw;
    EXPECT_NE(reqs[3].raw.find("Session: 4F2A9C\r\n"), std::string::npos);
    EXPECT_NE(reqs[3].raw.find("Range: npt=12.500-\r\n"), std::string::npos) << reqs[3].raw;
    EXPECT_NE(reqs.back().raw.find("Session: 4F2A9C\r\n"), std::string::npos);
    EXPECT_EQ(reqs[1].raw.find("Session:"), std::string::npos);  // no session before SETUP
    EXPECT_TRUE(info->teardown_ok);
    EXPECT_GE(info->keepalives, 1u);
    EXPECT_EQ(info->keepalives_answered, info->keepalives);
    EXPECT_EQ(info->keepalive_failures, 0u);
    EXPECT_EQ(info->control_end, "teardown");
    EXPECT_TRUE(control_ok(*info));
    EXPECT_EQ(info->end_reason, "idle");
    auto r = an.report();
    EXPECT_EQ(r.mode, Mode::Rtp);
    EXPECT_EQ(r.datagrams, 130u);
    EXPECT_EQ(r.rtp.lost, 20u);
    EXPECT_EQ(r.rtp.first_seq, 500);
    EXPECT_EQ(r.ts.cc_errors, 1u);  // 140 TS packets missing in one place
    ASSERT_TRUE(r.largest_gap);
    EXPECT_EQ(*r.largest_gap->seq, 540);
    EXPECT_EQ(*r.largest_gap->prev_seq, 519);
    EXPECT_GT(r.largest_gap->ms, 150.0);
    EXPECT_FALSE(events.empty());
}

TEST(VerifySession, RawTransportAndPacketLimit) {
    Responder srv;
    srv.datagrams = 200;
    srv.interval_ns = 2 * kMsNs;
    srv.start();
    RunOptions o = quick(srv.url());
    o.transport = Transport::Raw;
    o.max_datagrams = 50;
    Bytes saved;
    o.on_payload = [&](std::span<const uint8_t> p) { saved.insert(saved.end(), p.begin(), p.end()); };
    Analyzer an;
    auto info = run(o, an);
    ASSERT_TRUE(info.ok()) << info.error().message;
    EXPECT_EQ(info->end_reason, "packets");
    auto reqs = srv.requests();
    ASSERT_GE(reqs.size(), 3u);
    EXPECT_NE(reqs[2].raw.find("Transport: RAW/RAW/UDP;unicast;client_port="), std::string::npos);
    auto r = an.report();
    EXPECT_EQ(r.mode, Mode::Raw);
    EXPECT_EQ(r.datagrams, 50u);
    EXPECT_EQ(saved.size(), 50u * 7 * 188);
    EXPECT_FALSE(r.has_errors());
}

TEST(VerifySession, AClosedControlConnectionFailsTheRunAsAPlayerWouldStop) {
    for (bool reset : {false, true}) {
        Responder srv;
        (reset ? srv.reset_after_play : srv.close_after_play) = true;
        srv.datagrams = 150;  // 1.5 s: a keepalive falls due (2 s session timeout)
        srv.start();
        Analyzer an;
        auto info = run(quick(srv.url()), an);
        ASSERT_TRUE(info.ok()) << info.error().message;
        EXPECT_EQ(info->control_end, reset ? "rst" : "fin");
        EXPECT_FALSE(control_ok(*info));
        EXPECT_FALSE(info->teardown_ok);
        EXPECT_EQ(info->control_reconnects, 0u);
        for (auto& r : srv.requests()) EXPECT_EQ(r.connection, 1) << r.method;  // never a second one
        EXPECT_EQ(an.report().datagrams, 150u);  // the stream itself was whole
        std::string json = to_json(an.report(), *info);
        EXPECT_NE(json.find("\"ok\":false"), std::string::npos) << json;
    }
}

TEST(VerifySession, ReconnectOpensAnotherConnectionAndSaysSo) {
    Responder srv;
    srv.close_after_play = true;
    srv.datagrams = 150;
    srv.start();
    Analyzer an;
    RunOptions o = quick(srv.url());
    o.reconnect = true;
    auto info = run(o, an);
    ASSERT_TRUE(info.ok()) << info.error().message;
    bool keepalive_on_new_conn = false;
    for (auto& r : srv.requests())
        if (r.method == "GET_PARAMETER" && r.connection == 2) keepalive_on_new_conn = true;
    EXPECT_TRUE(keepalive_on_new_conn);
    EXPECT_TRUE(info->teardown_ok);
    EXPECT_EQ(info->control_end, "fin, reconnected");
    EXPECT_EQ(info->control_reconnects, 1u);
    EXPECT_FALSE(control_ok(*info));
    EXPECT_EQ(an.report().datagrams, 150u);
}

TEST(VerifySession, GetParameterRefusedFallsBackToOptions) {
    Responder srv;
    srv.get_parameter_status = 501;
    srv.session_timeout = 1;  // keepalive every second... at least once a second (minimum)
    srv.datagrams = 260;
    srv.start();
    Analyzer an;
    auto info = run(quick(srv.url()), an);
    ASSERT_TRUE(info.ok()) << info.error().message;
    auto m = srv.methods();
    auto gp = std::find(m.begin(), m.end(), "GET_PARAMETER");
    ASSERT_NE(gp, m.end());
    EXPECT_NE(std::find(gp, m.end(), "OPTIONS"), m.end());
    EXPECT_EQ(info->keepalive_failures, 0u);
}

TEST(VerifySession, ClearErrors) {
    {
        Responder srv;
        srv.describe_status = 404;
        srv.start();
        Analyzer an;
        auto info = run(quick(srv.url()), an);
        ASSERT_FALSE(info.ok());
        EXPECT_EQ(info.error().code, ENOENT);
        EXPECT_NE(info.error().message.find("DESCRIBE refused: 404 Not found"), std::string::npos) << info.error().message;
    }
    {
        Responder srv;
        srv.silent = true;
        srv.start();
        RunOptions o = quick(srv.url());
        o.rtsp.response_timeout_ms = 300;
        Analyzer an;
        auto info = run(o, an);
        ASSERT_FALSE(info.ok());
        EXPECT_EQ(info.error().code, ETIMEDOUT);
        EXPECT_NE(info.error().message.find("OPTIONS"), std::string::npos) << info.error().message;
    }
    {
        Responder srv;
        srv.send_garbage = true;
        srv.start();
        Analyzer an;
        auto info = run(quick(srv.url()), an);
        ASSERT_FALSE(info.ok());
        EXPECT_EQ(info.error().code, EPROTO);
    }
    {
        Responder srv;
        srv.bad_control = true;
        srv.start();
        Analyzer an;
        auto info = run(quick(srv.url()), an);
        ASSERT_FALSE(info.ok());
        EXPECT_EQ(info.error().code, EPROTO);
        auto m = srv.methods();
        EXPECT_EQ(std::count(m.begin(), m.end(), "SETUP"), 0);  // nothing was sent with it
    }
    {
        // Nobody listens on port 1: refused at once.
        RunOptions o;
        o.url = *parse_url("rtsp://127.0.0.1:1/x");
        Analyzer an;
        auto info = run(o, an);
        ASSERT_FALSE(info.ok());
        EXPECT_EQ(info.error().code, ECONNREFUSED) << info.error().message;
    }
}

TEST(VerifySession, ListenModeReceivesFromAnySender) {
    RunOptions o;
    o.listen_port = 0;
    o.idle_timeout_s = 1.5;
    o.first_timeout_s = 5;
    Analyzer an;
    std::atomic<uint16_t> port{0};
    o.on_event = [&](std::string_view e) {
        if (e.rfind("listening on UDP port ", 0) == 0) port = uint16_t(std::stoi(std::string(e.substr(22))));
    };
    std::thread tx([&] {
        int64_t deadline = of::monotonic_ns() + 5'000 * kMsNs;
        while (port == 0 && of::monotonic_ns() < deadline) std::this_thread::yield();
        int s = socket(AF_INET, SOCK_DGRAM, 0);
        sockaddr_in to{};
        to.sin_family = AF_INET;
        to.sin_port = htons(port);
        to.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        Stream ts;
        for (int i = 0; i < 100; ++i) {
            Bytes d = ts.next_datagram();
            sendto(s, d.data(), d.size(), 0, reinterpret_cast<sockaddr*>(&to), sizeof to);
        }
        close(s);
    });
    auto info = run(o, an);
    tx.join();
    ASSERT_TRUE(info.ok()) << info.error().message;
    EXPECT_EQ(info->transport, "listen");
    EXPECT_EQ(info->end_reason, "idle");
    auto r = an.report();
    EXPECT_EQ(r.datagrams + info->socket_drops, 100u);
    EXPECT_EQ(r.mode, Mode::Raw);
}


// ---- the fo-verify program: exit codes and output ----

namespace program {

std::string fo_verify_path() {
    std::string p = std::string(OF_BINARY_DIR) + "/tools/fo-verify/fo-verify";
    if (access(p.c_str(), X_OK) == 0) return p;
    if (const char* b = std::getenv("OF_BUILD")) {  // tests/check builds the tools in the main build
        p = std::string(b) + "/tools/fo-verify/fo-verify";
        if (access(p.c_str(), X_OK) == 0) return p;
    }
    return "";
}

struct Ran {
    int rc;
    std::string out;
};
Ran run_cmd(const std::string& cmd) {
    Ran r{-1, ""};
    FILE* f = popen((cmd + " 2>/dev/null").c_str(), "r");
    if (!f) return r;
    char buf[4096];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, f)) > 0) r.out.append(buf, n);
    int st = pclose(f);
    r.rc = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
    return r;
}

// Sends `count` datagrams of a clean stream (skipping index `skip`) to a port once it is bound.
void send_stream(uint16_t port, int count, int skip) {
    int s = socket(AF_INET, SOCK_DGRAM, 0);
    sockaddr_in to{};
    to.sin_family = AF_INET;
    to.sin_port = htons(port);
    to.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    Stream ts;
    for (int i = 0; i < count; ++i) {
        Bytes d = rtp(uint16_t(i), ts.next_datagram());
        if (i != skip) sendto(s, d.data(), d.size(), 0, reinterpret_cast<sockaddr*>(&to), sizeof to);
    }
    close(s);
}

// A free UDP port: bind port 0, read it, close (fo-verify binds it right after).
uint16_t free_udp_port() {
    auto r = UdpReceiver::open(0);
    return r ? r->port() : 0;
}

// Whether some socket is bound to the UDP port (read from /proc/net/udp, without binding it).
bool udp_port_bound(uint16_t port) {
    FILE* f = std::fopen("/proc/net/udp", "r");
    if (!f) return false;
    char line[512], want[16];
    std::snprintf(want, sizeof want, ":%04X ", unsigned(port));
    bool found = false;
    while (!found && std::fgets(line, sizeof line, f)) {
        char* local = std::strchr(line, ':');  // after "sl:", the local address comes first
        if (local && std::strstr(local + 1, want) == std::strchr(local + 1, ':')) found = true;
    }
    std::fclose(f);
    return found;
}

}  // namespace program

TEST(VerifyProgram, UsageErrorsExitTwoAndHelpExitsZero) {
    std::string fv = program::fo_verify_path();
    if (fv.empty()) GTEST_SKIP() << "fo-verify is not built in this build directory (nor in $OF_BUILD)";
    EXPECT_EQ(program::run_cmd(fv + " --help").rc, 0);
    EXPECT_EQ(program::run_cmd(fv).rc, 2);                                    // neither URL nor --listen
    EXPECT_EQ(program::run_cmd(fv + " rtsp://h/a --listen 5000").rc, 2);     // both
    EXPECT_EQ(program::run_cmd(fv + " http://h/a").rc, 2);
    EXPECT_EQ(program::run_cmd(fv + " rtsp://h/a --transport tcp").rc, 2);
    EXPECT_EQ(program::run_cmd(fv + " --listen 70000").rc, 2);
    EXPECT_EQ(program::run_cmd(fv + " --listen 0 --compare /nonexistent.ts").rc, 2);
    auto refused = program::run_cmd(fv + " --json --timeout 500 rtsp://127.0.0.1:1/x");
    EXPECT_EQ(refused.rc, 2);
    EXPECT_EQ(refused.out, "{\"ok\":false,\"error\":\"connect to 127.0.0.1:1: Connection refused\"}\n");
}

TEST(VerifyProgram, FailOnLossExitCodes) {
    std::string fv = program::fo_verify_path();
    if (fv.empty()) GTEST_SKIP() << "fo-verify is not built in this build directory (nor in $OF_BUILD)";
    for (int skip : {-1, 40}) {
        uint16_t port = program::free_udp_port();
        ASSERT_NE(port, 0);
        std::thread tx([&] {
            int64_t deadline = of::monotonic_ns() + 10'000 * kMsNs;
            while (!program::udp_port_bound(port) && of::monotonic_ns() < deadline) std::this_thread::yield();
            program::send_stream(port, 100, skip);
        });
        auto r = program::run_cmd(fv + " --listen " + std::to_string(port) +
                                  " --json --fail-on-loss --idle-timeout 2 --wait-first 10");
        tx.join();
        if (skip < 0) {
            EXPECT_EQ(r.rc, 0) << r.out;
            EXPECT_NE(r.out.find("\"ok\":true"), std::string::npos) << r.out;
        } else {
            EXPECT_EQ(r.rc, 1) << r.out;
            EXPECT_NE(r.out.find("\"lost\":1,"), std::string::npos) << r.out;
        }
    }
}

}  // namespace
