// Ingest indexer: validation errors, PCR PID choice, the time map (exact values, monotonicity,
// wrap, discontinuities), random-access points and index serialization.
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <iterator>
#include <set>
#include <string>

#include "mpegts/crc.h"
#include "mpegts/index.h"
#include "mpegts/indexer.h"
#include "mpegts/psi.h"
#include "ts_fixture.h"

namespace {

using namespace of::mpegts;
using oftest::Bytes;
using oftest::make_ts;
using oftest::PacketSpec;
using oftest::StreamSpec;
using oftest::TsWriter;

Bytes str_bytes(const std::string& s) { return Bytes(s.begin(), s.end()); }

// Expects refusal with this kind; returns the message for further checks.
std::string expect_refused(const of::Result<Index>& r, IndexError kind) {
    EXPECT_FALSE(r.ok());
    if (r.ok()) return "";
    EXPECT_EQ(r.error().code, error_code(kind)) << r.error().message;
    auto got = index_error_of(r.error());
    EXPECT_TRUE(got.has_value()) << r.error().message;
    if (got) {
        EXPECT_EQ(*got, kind) << r.error().message;
    }
    return r.error().message;
}

Index must_index(const Bytes& b, IndexLimits lim = {}) {
    auto r = index_buffer(b, lim);
    if (!r) ADD_FAILURE() << r.error().message;
    return std::move(r.value());
}

Index must_make(uint64_t packets, std::vector<PcrPoint> pcrs, std::vector<uint64_t> raps = {}) {
    auto r = Index::make(packets, 0x100, 0x100, std::move(pcrs), std::move(raps), {});
    if (!r) ADD_FAILURE() << r.error().message;
    return std::move(r.value());
}

TEST(MpegtsCrc, KnownVectors) {
    Bytes check = str_bytes("123456789");
    EXPECT_EQ(crc32_file(check), 0xCBF43926u);
    EXPECT_EQ(crc32_mpeg2(check), 0x0376E6E7u);
    // Incremental use of the file CRC equals one pass.
    EXPECT_EQ(crc32_file(std::span(check).subspan(4), crc32_file(std::span(check).first(4))), 0xCBF43926u);
}

TEST(MpegtsError, KindsHaveDistinctCodesAndAreRecognised) {
    std::set<int> codes;
    for (int k = 0; k <= int(IndexError::kCorruptIndex); ++k) {
        auto kind = IndexError(k);
        EXPECT_TRUE(codes.insert(error_code(kind)).second) << to_string(kind);
        auto e = make_index_error(kind, "detail");
        EXPECT_EQ(index_error_of(e), kind);
    }
    // Same errno from elsewhere (an I/O error) is not mistaken for a content refusal.
    EXPECT_FALSE(index_error_of(of::make_error(EFBIG, "write /x: File too large")).has_value());
}

TEST(MpegtsPsi, ParsesPatAndPmtAcrossPackets) {
    TsWriter w;
    w.psi(0, TsWriter::pat_section(7, 0x1234));
    // 400 descriptor bytes: the PMT spans three packets.
    w.psi(0x1234, TsWriter::pmt_section(7, 0x0101, {{0x03, 0x0101}, {0x1b, 0x0100}}, 400));
    ASSERT_EQ(w.packets(), 4u);
    SectionAssembler pat_asm, pmt_asm;
    std::optional<Pat> pat;
    std::optional<Pmt> pmt;
    for (uint64_t i = 0; i < w.packets(); ++i) {
        PacketView v{w.bytes().data() + i * 188};
        if (v.pid() == 0) pat_asm.push(v, [&](auto s) { pat = parse_pat(s); });
        if (v.pid() == 0x1234) pmt_asm.push(v, [&](auto s) { pmt = parse_pmt(s, 7); });
    }
    ASSERT_TRUE(pat);
    EXPECT_EQ(pat->program_number, 7);
    EXPECT_EQ(pat->pmt_pid, 0x1234);
    ASSERT_TRUE(pmt);
    EXPECT_EQ(pmt->pcr_pid, 0x0101);
    ASSERT_TRUE(pmt->video_pid);
    EXPECT_EQ(*pmt->video_pid, 0x0100);  // the H.264 stream, not the first (audio) one
}

TEST(MpegtsPsi, RejectsBadCrcAndWrongProgram) {
    Bytes pat = TsWriter::pat_section(1, 0x1000);
    EXPECT_TRUE(parse_pat(pat));
    pat[9] ^= 1;
    EXPECT_FALSE(parse_pat(pat));
    Bytes pmt = TsWriter::pmt_section(1, 0x100, {{0x02, 0x100}});
    EXPECT_TRUE(parse_pmt(pmt, 1));
    EXPECT_FALSE(parse_pmt(pmt, 2));
    EXPECT_FALSE(parse_pmt(std::span(pmt).first(pmt.size() - 1), 1));
}

TEST(MpegtsValidate, EmptyFile) {
    auto m = expect_refused(index_buffer({}), IndexError::kEmpty);
    EXPECT_NE(m.find("empty file"), std::string::npos) << m;
}

TEST(MpegtsValidate, NotTransportStream) {
    Bytes text = str_bytes(std::string(5000, 'x'));
    auto m = expect_refused(index_buffer(text), IndexError::kNotTransportStream);
    EXPECT_NE(m.find("not MPEG-TS: no sync byte 0x47 at offset 0"), std::string::npos) << m;

    // A GIF starts with 'G' (0x47): still not TS, caught at the next packet boundary.
    Bytes gif = str_bytes("GIF89a" + std::string(3000, '\0'));
    m = expect_refused(index_buffer(gif), IndexError::kNotTransportStream);
    EXPECT_NE(m.find("offset 188"), std::string::npos) << m;

    // A short non-TS file is "not MPEG-TS", not "truncated".
    m = expect_refused(index_buffer(str_bytes("hello\n")), IndexError::kNotTransportStream);
}

TEST(MpegtsValidate, NamesFormatsOftenMistakenForTs) {
    Bytes ts = make_ts({.packets = 40});
    Bytes m2ts;  // 192-byte packets: 4-byte timestamp before each TS packet
    for (size_t i = 0; i < ts.size(); i += 188) {
        m2ts.insert(m2ts.end(), {0, 0, 0, 0});
        m2ts.insert(m2ts.end(), ts.begin() + i, ts.begin() + i + 188);
    }
    auto m = expect_refused(index_buffer(m2ts), IndexError::kNotTransportStream);
    EXPECT_NE(m.find("192-byte M2TS"), std::string::npos) << m;

    Bytes p204;
    for (size_t i = 0; i < ts.size(); i += 188) {
        p204.insert(p204.end(), ts.begin() + i, ts.begin() + i + 188);
        p204.insert(p204.end(), 16, 0);
    }
    m = expect_refused(index_buffer(p204), IndexError::kNotTransportStream);
    EXPECT_NE(m.find("204-byte"), std::string::npos) << m;

    Bytes mp4 = str_bytes(std::string("\0\0\0\x20" "ftypisom", 12) + std::string(2000, '\0'));
    m = expect_refused(index_buffer(mp4), IndexError::kNotTransportStream);
    EXPECT_NE(m.find("MP4"), std::string::npos) << m;
}

TEST(MpegtsValidate, SyncLostNamesThePacket) {
    Bytes ts = make_ts({.packets = 1000});
    ts[500 * 188] = 0x00;
    auto m = expect_refused(index_buffer(ts), IndexError::kSyncLost);
    EXPECT_NE(m.find("packet 500 (offset 94000)"), std::string::npos) << m;
}

TEST(MpegtsValidate, Truncated) {
    Bytes ts = make_ts({.packets = 1000});
    ts.resize(ts.size() - 10);
    auto m = expect_refused(index_buffer(ts), IndexError::kTruncated);
    EXPECT_NE(m.find("187990 bytes is not a multiple of 188"), std::string::npos) << m;
    EXPECT_NE(m.find("has 178 bytes"), std::string::npos) << m;
}

TEST(MpegtsValidate, NoPcr) {
    Bytes ts = make_ts({.packets = 1000, .pcr_every = 1, .pcr_first = 5000});
    auto m = expect_refused(index_buffer(ts), IndexError::kNoPcr);
    EXPECT_NE(m.find("PID 0x0100, which the PMT names as PCR_PID"), std::string::npos) << m;

    ts = make_ts({.packets = 1000, .pcr_first = 5000, .psi = false});
    m = expect_refused(index_buffer(ts), IndexError::kNoPcr);
    EXPECT_NE(m.find("no PCR on any PID in 1000 packets"), std::string::npos) << m;
}

TEST(MpegtsValidate, PmtPcrPidWithoutPcrIsRefusedEvenIfAnotherPidHasOne) {
    // The PMT says PCR on 0x0101 (audio) but only the video PID carries PCRs: decoders follow
    // the PMT, so the asset is broken.
    TsWriter w;
    w.psi(0, TsWriter::pat_section(1, 0x1000));
    w.psi(0x1000, TsWriter::pmt_section(1, 0x0101, {{0x02, 0x100}, {0x03, 0x101}}));
    for (int i = 0; i < 50; ++i) w.packet({.pid = 0x100, .pcr = int64_t(i) * 10800});
    auto m = expect_refused(index_buffer(w.bytes()), IndexError::kNoPcr);
    EXPECT_NE(m.find("0x0101"), std::string::npos) << m;
}

TEST(MpegtsValidate, TooFewPcrs) {
    TsWriter w;
    for (int i = 0; i < 20; ++i) w.packet({.pid = 0x100, .pcr = i == 10 ? std::optional<int64_t>(5) : std::nullopt});
    auto m = expect_refused(index_buffer(w.bytes()), IndexError::kTooFewPcrs);
    EXPECT_NE(m.find("1 PCR on PID 0x0100"), std::string::npos) << m;

    // Three PCRs, each starting a new time base: no rate anywhere.
    TsWriter d;
    for (int i = 0; i < 30; ++i) {
        PacketSpec p{.pid = 0x100};
        if (i % 10 == 0) p.pcr = int64_t(1000 - i), p.di = i > 0;
        d.packet(p);
    }
    m = expect_refused(index_buffer(d.bytes()), IndexError::kTooFewPcrs);
    EXPECT_NE(m.find("no two in one continuous time base"), std::string::npos) << m;
}

TEST(MpegtsValidate, TransportErrorsRefusedByDefaultToleratedByLimit) {
    Bytes ts = make_ts({.packets = 2000});
    for (uint64_t n : {700u, 900u}) ts[n * 188 + 1] |= 0x80;
    auto m = expect_refused(index_buffer(ts), IndexError::kTransportErrors);
    EXPECT_NE(m.find("first at packet 700"), std::string::npos) << m;

    auto lim = IndexLimits{.max_transport_errors = 1};
    expect_refused(index_buffer(ts, lim), IndexError::kTransportErrors);
    lim.max_transport_errors = 2;
    Index ix = must_index(ts, lim);
    EXPECT_EQ(ix.stats().transport_errors, 2u);
    auto w = ix.warnings();
    ASSERT_FALSE(w.empty());
    EXPECT_NE(w[0].find("2 packets with transport_error_indicator"), std::string::npos);
}

TEST(MpegtsValidate, SizeAndTableLimits) {
    Bytes ts = make_ts({.packets = 1000});
    auto m = expect_refused(index_buffer(ts, {.max_bytes = 188 * 999}), IndexError::kTooLarge);
    EXPECT_NE(m.find("limit of 187812 bytes"), std::string::npos) << m;
    must_index(ts, {.max_bytes = 188 * 1000});

    expect_refused(index_buffer(ts, {.max_pcrs = 50}), IndexError::kTooManyEntries);
    expect_refused(index_buffer(ts, {.max_raps = 2}), IndexError::kTooManyEntries);
    must_index(ts, {.max_pcrs = 100, .max_raps = 4});
}

TEST(MpegtsValidate, AbsurdPcrRateIsOutOfRange) {
    TsWriter w;
    for (int i = 0; i < 300; ++i)
        w.packet({.pid = 0x100, .pcr = i % 100 == 0 ? std::optional<int64_t>(i / 100) : std::nullopt});
    expect_refused(index_buffer(w.bytes()), IndexError::kPcrOutOfRange);
}

TEST(MpegtsIndex, CbrStreamExactTimeMap) {
    // 3.76 Mb/s: exactly 10800 ticks (400 us) a packet; first PCR at packet 3 so packets 0..2 are
    // extrapolated, last PCR at 9993 so the tail is too.
    StreamSpec s{.packets = 10000, .bitrate = 3'760'000, .pcr_every = 10, .pcr_first = 3};
    Index ix = must_index(make_ts(s));
    EXPECT_EQ(ix.packet_count(), 10000u);
    EXPECT_EQ(ix.pcr_pid(), 0x100);
    EXPECT_EQ(ix.rap_pid(), 0x100);
    EXPECT_EQ(ix.pcrs().size(), 1000u);
    EXPECT_EQ(ix.pcrs()[0], (PcrPoint{3, 3 * 10800}));
    EXPECT_EQ(ix.bitrate_bps(), 3'760'000u);
    for (uint64_t n : {0u, 1u, 2u, 3u, 4u, 13u, 5000u, 9993u, 9999u, 10000u})
        EXPECT_EQ(ix.packet_time_ns(n), int64_t(n) * 400'000) << n;
    EXPECT_EQ(ix.duration_ns(), 4'000'000'000);
    EXPECT_EQ(ix.packet_time_ns(1'000'000), 4'000'000'000);  // clamped to the end
    EXPECT_EQ(ix.packet_at_or_after(0), 0u);
    EXPECT_EQ(ix.packet_at_or_after(-5), 0u);
    EXPECT_EQ(ix.packet_at_or_after(400'000), 1u);
    EXPECT_EQ(ix.packet_at_or_after(400'001), 2u);
    EXPECT_EQ(ix.packet_at_or_after(4'000'000'000), 10000u);
    EXPECT_EQ(ix.packet_at_or_after(4'000'000'001), 10000u);
    EXPECT_EQ(ix.stats(), IndexStats{});
    EXPECT_TRUE(ix.warnings().empty());
}

TEST(MpegtsIndex, HandComputedInterpolation) {
    // 10 ticks over 3 packets: packet n is floor(n * 10/3 ticks * 1000/27) ns = floor(n * 10000/81).
    Index a = must_make(7, {{0, 0}, {3, 10}, {6, 40}});
    EXPECT_EQ(a.packet_time_ns(1), 123);    // 123.45
    EXPECT_EQ(a.packet_time_ns(2), 246);    // 246.91
    EXPECT_EQ(a.packet_time_ns(3), 370);    // 370.37
    // Second segment: 30 ticks over 3 packets = 370.37 ns a packet.
    EXPECT_EQ(a.packet_time_ns(4), 740);    // (10 + 10) * 1000/27 = 740.74
    EXPECT_EQ(a.packet_time_ns(6), 1481);   // 40000/27 = 1481.48
    EXPECT_EQ(a.packet_time_ns(7), 1851);   // extrapolated: 50000/27 = 1851.85
    EXPECT_EQ(a.duration_ns(), 1851);

    // First PCR at packet 4: packet 0 is extrapolated back at the first segment's rate, and times
    // stay relative to packet 0.
    Index b = must_make(20, {{4, 1000}, {14, 28000}});  // 2700 ticks = 100 us a packet
    for (uint64_t n = 0; n <= 20; ++n) EXPECT_EQ(b.packet_time_ns(n), int64_t(n) * 100'000);
    EXPECT_EQ(b.bitrate_bps(), 15'040'000u);

    // Before the first PCR the map rounds towards minus infinity, not towards zero:
    // A(n) = floor((n - 2) * 10000 / 81), A(0) = floor(-246.9) = -247, so t(2) = 247.
    Index c = must_make(6, {{2, 0}, {5, 10}});
    std::vector<int64_t> want = {0, 123, 247, 370, 493, 617, 740};
    for (uint64_t n = 0; n <= 6; ++n) EXPECT_EQ(c.packet_time_ns(n), want[n]) << n;
}

TEST(MpegtsIndex, TimeMapStrictlyMonotonicAndInvertible) {
    // Irregular rate (3.75 Mb/s is 10828.8 ticks a packet), jittered PCRs, sparse PCRs.
    StreamSpec s{.packets = 30000, .bitrate = 3'750'000, .pcr_every = 37, .pcr_first = 11, .jitter = 300};
    Index ix = must_index(make_ts(s));
    int64_t prev = -1;
    for (uint64_t n = 0; n <= ix.packet_count(); ++n) {
        int64_t t = ix.packet_time_ns(n);
        ASSERT_GT(t, prev) << n;
        ASSERT_EQ(ix.packet_at_or_after(t), n) << n;
        ASSERT_EQ(ix.packet_at_or_after(prev + 1), n) << n;
        prev = t;
    }
    // Within 1 ppm and a PCR's jitter of the nominal rate.
    int64_t nominal = int64_t(__int128(30000) * 1504 * 1'000'000'000 / 3'750'000);
    EXPECT_NEAR(double(ix.duration_ns()), double(nominal), 20'000.0);
    EXPECT_NEAR(double(ix.bitrate_bps()), 3'750'000.0, 5.0);
}

TEST(MpegtsIndex, SameBytesSameValuesWhateverTheChunking) {
    Bytes ts = make_ts({.packets = 3000, .bitrate = 3'750'000, .null_every = 4, .jitter = 50});
    Index whole = must_index(ts);
    for (size_t chunk : {1u, 7u, 187u, 188u, 189u, 1000u, 1316u, 65536u}) {
        Indexer ix;
        for (size_t off = 0; off < ts.size(); off += chunk)
            ASSERT_TRUE(ix.feed(std::span(ts).subspan(off, std::min(chunk, ts.size() - off))).ok());
        auto r = ix.finish();
        ASSERT_TRUE(r.ok()) << r.error().message;
        EXPECT_EQ(*r, whole) << "chunk " << chunk;
        EXPECT_EQ(ix.bytes_fed(), ts.size());
    }
}

TEST(MpegtsIndex, PcrWrapIsUnwrapped) {
    // Same stream starting 1 s before the 33-bit wrap and at 0: identical time maps.
    StreamSpec near_wrap{.packets = 10000, .bitrate = 3'750'000, .pcr_start = kPcrWrap - kPcrHz};
    StreamSpec at_zero{.packets = 10000, .bitrate = 3'750'000, .pcr_start = 0};
    Index a = must_index(make_ts(near_wrap));
    Index b = must_index(make_ts(at_zero));
    EXPECT_EQ(a.stats().pcr_discontinuities, 0u);
    EXPECT_GT(a.pcrs().back().pcr, kPcrWrap);  // unwrapped, not reduced
    for (uint64_t n = 0; n <= 10000; n += 7) ASSERT_EQ(a.packet_time_ns(n), b.packet_time_ns(n)) << n;
    EXPECT_EQ(a.duration_ns(), b.duration_ns());
}

TEST(MpegtsIndex, DiscontinuitiesBridgedAtThePreviousRate) {
    // At 3.76 Mb/s the rate is a whole 10800 ticks a packet, so bridging at the previous rate
    // reproduces the continuous stream's time map exactly.
    StreamSpec cont{.packets = 10000, .bitrate = 3'760'000};
    Index ref = must_index(make_ts(cont));
    struct Case {
        const char* what;
        int64_t value;
        bool flag;
    } cases[] = {
        {"flagged jump", 123456789, true},
        {"flagged, same direction", spec_pcr(cont, 5000) + 5 * kPcrHz, true},
        {"unflagged backwards", 0, false},
        {"unflagged forward > 1 s", spec_pcr(cont, 5000) + 90 * kPcrHz, false},
        {"flagged, value 1 tick on", spec_pcr(cont, 4993) + 1, true},
    };
    for (const auto& c : cases) {
        StreamSpec s = cont;
        s.disc_at = 5000;
        s.disc_value = c.value;
        s.disc_flag = c.flag;
        Index ix = must_index(make_ts(s));
        EXPECT_EQ(ix.stats().pcr_discontinuities, 1u) << c.what;
        for (uint64_t n = 0; n <= 10000; ++n) ASSERT_EQ(ix.packet_time_ns(n), ref.packet_time_ns(n)) << c.what << " " << n;
        auto w = ix.warnings();
        ASSERT_EQ(w.size(), 1u) << c.what;
        EXPECT_NE(w[0].find("1 PCR discontinuities bridged"), std::string::npos);
    }
}

TEST(MpegtsIndex, DiscontinuityWithoutAPrecedingRateUsesTheNextOne) {
    // PCR 0 at packet 0, then a flagged new time base from packet 10 on: the first "run" has one
    // PCR, so the gap 0 -> 10 is bridged at the following run's rate (2700 ticks a packet).
    TsWriter w;
    for (int i = 0; i < 100; ++i) {
        PacketSpec p{.pid = 0x100};
        if (i == 0) p.pcr = 5'000'000;
        if (i >= 10 && i % 10 == 0) p.pcr = 77 + int64_t(i - 10) * 2700, p.di = i == 10;
        w.packet(p);
    }
    Index ix = must_index(w.bytes());
    EXPECT_EQ(ix.stats().pcr_discontinuities, 1u);
    for (uint64_t n = 0; n <= 100; ++n) EXPECT_EQ(ix.packet_time_ns(n), int64_t(n) * 100'000) << n;
}

TEST(MpegtsIndex, DiscontinuityFlagOnAnEarlierPacketAppliesToTheNextPcr) {
    TsWriter w;
    for (int i = 0; i < 100; ++i) {
        PacketSpec p{.pid = 0x100};
        int64_t base = i < 50 ? 0 : 999'999'999 - 50 * 2700;
        if (i % 10 == 0) p.pcr = base + int64_t(i) * 2700;
        if (i == 45) p.di = true;  // no PCR in this packet
        w.packet(p);
    }
    Index ix = must_index(w.bytes());
    EXPECT_EQ(ix.stats().pcr_discontinuities, 1u);
    EXPECT_EQ(ix.packet_time_ns(100), 10'000'000);
}

TEST(MpegtsIndex, PcrPidFromPmtEvenWhenAnotherPidCarriesPcrFirst) {
    TsWriter w;
    w.psi(0, TsWriter::pat_section(1, 0x1000));
    w.psi(0x1000, TsWriter::pmt_section(1, 0x100, {{0x02, 0x100}, {0x03, 0x101}}));
    for (int i = 0; i < 200; ++i) {
        // The audio PID carries (bogus) PCRs from the start; the PMT names the video PID.
        if (i % 10 == 0) w.packet({.pid = 0x101, .pcr = int64_t(i) * 999, .rai = true});
        if (i % 10 == 5) w.packet({.pid = 0x100, .pcr = int64_t(i) * 2700, .rai = i % 50 == 5});
        else w.packet({.pid = 0x100});
    }
    Index ix = must_index(w.bytes());
    EXPECT_EQ(ix.pcr_pid(), 0x100);
    EXPECT_EQ(ix.rap_pid(), 0x100);
    EXPECT_EQ(ix.raps().size(), 4u);  // only the video PID's random_access_indicator counts
}

TEST(MpegtsIndex, LatePmtStillDecides) {
    // PCRs on two PIDs begin before the PAT/PMT; the PMT arrives later and picks 0x101.
    TsWriter w;
    for (int i = 0; i < 300; ++i) {
        if (i == 100) {
            w.psi(0, TsWriter::pat_section(1, 0x1000));
            w.psi(0x1000, TsWriter::pmt_section(1, 0x101, {{0x1b, 0x100}, {0x0f, 0x101}}));
        }
        if (i % 10 == 0) w.packet({.pid = 0x100, .pcr = 7 + int64_t(i) * 5000, .rai = i % 100 == 0});
        else if (i % 10 == 1) w.packet({.pid = 0x101, .pcr = int64_t(i) * 2700});
        else w.packet({.pid = 0x100});
    }
    Index ix = must_index(w.bytes());
    EXPECT_EQ(ix.pcr_pid(), 0x101);
    EXPECT_EQ(ix.rap_pid(), 0x100);  // the PMT's H.264 stream
    EXPECT_EQ(ix.pcrs().size(), 30u);
    EXPECT_EQ(ix.raps().size(), 3u);
}

TEST(MpegtsIndex, WithoutPsiTheFirstPidWithPcrIsUsed) {
    TsWriter w;
    for (int i = 0; i < 100; ++i) {
        if (i % 10 == 3) w.packet({.pid = 0x44, .pcr = int64_t(i) * 2700});
        else if (i % 10 == 6) w.packet({.pid = 0x45, .pcr = int64_t(i) * 999});
        else w.packet({.pid = 0x44, .rai = i == 20});
    }
    Index ix = must_index(w.bytes());
    EXPECT_EQ(ix.pcr_pid(), 0x44);
    EXPECT_EQ(ix.raps(), std::vector<uint64_t>{20});
}

TEST(MpegtsIndex, RandomAccessPoints) {
    StreamSpec s{.packets = 2000, .rap_every = 300, .rap_first = 7};
    Index ix = must_index(make_ts(s));
    ASSERT_EQ(ix.raps(), (std::vector<uint64_t>{7, 307, 607, 907, 1207, 1507, 1807}));
    EXPECT_EQ(ix.rap_at_or_before(0), 0u);
    EXPECT_EQ(ix.rap_at_or_before(6), 0u);
    EXPECT_EQ(ix.rap_at_or_before(7), 7u);
    EXPECT_EQ(ix.rap_at_or_before(306), 7u);
    EXPECT_EQ(ix.rap_at_or_before(307), 307u);
    EXPECT_EQ(ix.rap_at_or_before(UINT64_MAX), 1807u);

    Index none = must_index(make_ts({.packets = 2000, .rap_every = 0}));
    EXPECT_TRUE(none.raps().empty());
    EXPECT_EQ(none.rap_at_or_before(1500), 0u);
    auto w = none.warnings();
    ASSERT_EQ(w.size(), 1u);
    EXPECT_NE(w[0].find("no random-access points"), std::string::npos);
}

TEST(MpegtsIndex, CountsContinuityErrorsAndSparsePcrs) {
    Bytes ts = make_ts({.packets = 2000, .pcr_every = 300});  // 120 ms between PCRs
    // Drop packet 1002 (a video packet): its PID's counter jumps.
    ts.erase(ts.begin() + 1002 * 188, ts.begin() + 1003 * 188);
    Index ix = must_index(ts);
    EXPECT_EQ(ix.stats().cc_errors, 1u);
    auto w = ix.warnings();
    ASSERT_EQ(w.size(), 2u);
    EXPECT_NE(w[0].find("1 continuity_counter errors"), std::string::npos) << w[0];
    EXPECT_NE(w[1].find("PCR interval up to 120 ms"), std::string::npos) << w[1];
}

TEST(MpegtsIndex, MakeRejectsBrokenInvariants) {
    EXPECT_FALSE(Index::make(0, 0x100, 0x100, {{0, 0}, {1, 10000}}, {}, {}).ok());
    EXPECT_FALSE(Index::make(10, 0x100, 0x100, {{0, 0}}, {}, {}).ok());
    EXPECT_FALSE(Index::make(10, 0x100, 0x100, {{5, 0}, {5, 10000}}, {}, {}).ok());
    EXPECT_FALSE(Index::make(10, 0x100, 0x100, {{0, 10000}, {5, 10000}}, {}, {}).ok());
    EXPECT_FALSE(Index::make(10, 0x100, 0x100, {{0, 0}, {10, 100000}}, {}, {}).ok());
    EXPECT_FALSE(Index::make(10, 0x100, 0x100, {{0, -1}, {5, 100000}}, {}, {}).ok());
    EXPECT_FALSE(Index::make(10, 0x100, 0x100, {{0, 0}, {5, 100000}}, {3, 3}, {}).ok());
    EXPECT_FALSE(Index::make(10, 0x100, 0x100, {{0, 0}, {5, 100000}}, {10}, {}).ok());
    EXPECT_FALSE(Index::make(10, 0x1fff, 0x100, {{0, 0}, {5, 100000}}, {}, {}).ok());
    EXPECT_FALSE(Index::make(10, 0x100, 0x100, {{0, 0}, {5, kMaxPcrSpan + 1}}, {}, {}).ok());
    // Extrapolating a slow first segment back over many packets leaves the 2^62 ns range.
    EXPECT_FALSE(Index::make(kMaxPackets, 0x100, 0x100,
                             {{kMaxPackets - 2, 0}, {kMaxPackets - 1, kMaxPcrSpan}}, {}, {}).ok());
    EXPECT_TRUE(Index::make(10, 0x100, 0x100, {{0, 0}, {5, 100000}}, {2, 9}, {}).ok());
}

TEST(MpegtsSerialize, RoundTrip) {
    StreamSpec s{.packets = 5000, .bitrate = 3'750'000, .disc_at = 2500, .disc_value = 42, .jitter = 20};
    Bytes ts = make_ts(s);
    ts[3000 * 188 + 1] |= 0x80;
    Index ix = must_index(ts, {.max_transport_errors = 5});
    auto bytes = ix.serialize();
    EXPECT_EQ(bytes.size(), 24u + 56u + 16u * ix.pcrs().size() + 8u * ix.raps().size() + 4u);
    auto back = Index::deserialize(bytes);
    ASSERT_TRUE(back.ok()) << back.error().message;
    EXPECT_EQ(*back, ix);
    for (uint64_t n = 0; n <= ix.packet_count(); n += 13) ASSERT_EQ(back->packet_time_ns(n), ix.packet_time_ns(n));
}

TEST(MpegtsSerialize, CorruptionIsAClearErrorNeverACrash) {
    Index ix = must_index(make_ts({.packets = 600, .pcr_every = 50}));
    const auto good = ix.serialize();
    // Every truncation.
    for (size_t len = 0; len < good.size(); ++len) {
        auto r = Index::deserialize(std::span(good).first(len));
        ASSERT_FALSE(r.ok()) << len;
        ASSERT_EQ(r.error().code, EUCLEAN) << len;
    }
    // Every single-bit flip (the CRC catches each).
    for (size_t i = 0; i < good.size(); ++i) {
        for (int bit = 0; bit < 8; ++bit) {
            auto bad = good;
            bad[i] ^= uint8_t(1 << bit);
            auto r = Index::deserialize(bad);
            ASSERT_FALSE(r.ok()) << i << ":" << bit;
            ASSERT_EQ(index_error_of(r.error()), IndexError::kCorruptIndex) << r.error().message;
        }
    }
    // Appended bytes.
    auto longer = good;
    longer.push_back(0);
    EXPECT_FALSE(Index::deserialize(longer).ok());
}

// Re-checksums after an edit so the checks behind the CRC are reached.
Bytes with_crc(Bytes b) {
    uint32_t c = crc32_file(std::span(b).first(b.size() - 4));
    for (int i = 0; i < 4; ++i) b[b.size() - 4 + i] = uint8_t(c >> (8 * i));
    return b;
}

TEST(MpegtsSerialize, ChecksBehindTheChecksum) {
    Index ix = must_index(make_ts({.packets = 600, .pcr_every = 50}));
    const auto good = ix.serialize();
    auto msg = [](const Bytes& b) {
        auto r = Index::deserialize(b);
        EXPECT_FALSE(r.ok());
        return r.ok() ? std::string() : r.error().message;
    };
    auto b = good;
    b[8] = 2;  // version
    EXPECT_NE(msg(with_crc(b)).find("format version 2 (this build reads 1)"), std::string::npos);
    b = good;
    b[0] = 'X';
    EXPECT_NE(msg(with_crc(b)).find("bad magic"), std::string::npos);
    b = good;
    b[24 + 40] += 1;  // PCR count, now disagreeing with the body length
    EXPECT_NE(msg(with_crc(b)).find("do not match the body length"), std::string::npos);
    b = good;
    b[24 + 57] = 0xff;  // second byte of the first PCR's packet index: beyond the asset
    EXPECT_NE(msg(with_crc(b)).find("corrupt index"), std::string::npos);
}

std::string unit_tmpdir() {
    char tmpl[] = "/tmp/of-mpegts-test-XXXXXX";
    const char* d = mkdtemp(tmpl);
    return d ? d : "";
}

TEST(MpegtsRealAsset, IndexesAnFfmpegAsset) {
    if (system("command -v ffmpeg >/dev/null 2>&1") != 0) GTEST_SKIP() << "ffmpeg is not installed (apt-get install ffmpeg)";
    std::string dir = unit_tmpdir();
    ASSERT_FALSE(dir.empty());
    std::string path = dir + "/asset.ts";
    std::string cmd = std::string(OF_SOURCE_DIR) + "/tools/mkasset " + path + " --seconds 10 --quiet";
    ASSERT_EQ(system(cmd.c_str()), 0) << cmd;
    std::ifstream f(path, std::ios::binary);
    Bytes data((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
    auto t0 = std::chrono::steady_clock::now();
    Index ix = must_index(data);
    auto secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::printf("[ measure  ] indexed %zu bytes of ffmpeg TS in %.2f ms (%.0f MB/s)\n", data.size(),
                secs * 1e3, data.size() / secs / 1e6);
    EXPECT_EQ(ix.pcr_pid(), 0x100);
    EXPECT_EQ(ix.rap_pid(), 0x100);
    EXPECT_NEAR(double(ix.bitrate_bps()), 3'750'000.0, 3'750.0);  // CBR within 0.1%
    EXPECT_NEAR(double(ix.duration_ns()), 10e9, 0.1e9);
    // Every keyframe ffprobe sees is a random-access point (10 s at 29.97 fps, GOPs <= 15).
    FILE* probe = popen(("ffprobe -v error -select_streams v -show_entries packet=flags -of csv " + path +
                         " | grep -c K").c_str(), "r");
    ASSERT_NE(probe, nullptr);
    unsigned keyframes = 0;
    EXPECT_EQ(fscanf(probe, "%u", &keyframes), 1);
    pclose(probe);
    EXPECT_GE(keyframes, 20u);
    EXPECT_EQ(ix.raps().size(), keyframes);
    EXPECT_GT(ix.pcrs().size(), 400u);  // -pcr_period 20
    EXPECT_EQ(ix.stats().cc_errors, 0u);
    EXPECT_EQ(ix.stats().pcr_discontinuities, 0u);
    EXPECT_TRUE(ix.warnings().empty());
    int64_t prev = -1;
    for (uint64_t n = 0; n <= ix.packet_count(); ++n) {
        int64_t t = ix.packet_time_ns(n);
        ASSERT_GT(t, prev);
        prev = t;
    }
    std::string rm = "rm -rf " + dir;
    ASSERT_EQ(system(rm.c_str()), 0);
}

TEST(MpegtsMeasure, IndexerThroughput) {
    Bytes ts = make_ts({.packets = 200'000, .bitrate = 3'750'000, .pcr_every = 48, .null_every = 3});
    Indexer ix;
    auto t0 = std::chrono::steady_clock::now();
    for (size_t off = 0; off < ts.size(); off += 168448)
        ASSERT_TRUE(ix.feed(std::span(ts).subspan(off, std::min<size_t>(168448, ts.size() - off))).ok());
    auto r = ix.finish();
    auto secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    ASSERT_TRUE(r.ok()) << r.error().message;
    std::printf("[ measure  ] indexer: %zu bytes of synthetic TS in %.2f ms = %.0f MB/s\n", ts.size(),
                secs * 1e3, ts.size() / secs / 1e6);
}

}  // namespace
