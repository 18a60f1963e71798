// The streaming thread against real sockets (in a private network namespace) and a real file.
#include "streamer/stream_thread.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "common/clock.h"
#include "cbr_source.h"
#include "test_netns.h"
#include "wait_until.h"

namespace {

using namespace of;
using of::test::CbrFileSource;
using of::test::make_ts;

struct Received {
    std::vector<uint8_t> bytes;
    int64_t arrival_ns;
};

class StreamerTest : public ::testing::Test {
protected:
    void SetUp() override {
        if (auto why = test::enter_private_netns(); !why.empty()) GTEST_SKIP() << "needs a private netns: " << why;
        char tmpl[] = "/tmp/of-streamer-XXXXXX";
        int fd = mkstemp(tmpl);
        ASSERT_GE(fd, 0);
        path_ = tmpl;
        data_ = make_ts(kPackets);
        ASSERT_EQ(write(fd, data_.data(), data_.size()), ssize_t(data_.size()));
        close(fd);

        rx_ = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        int one = 1, big = 8 << 20;
        setsockopt(rx_, SOL_SOCKET, SO_TIMESTAMPNS, &one, sizeof one);
        setsockopt(rx_, SOL_SOCKET, SO_RCVBUFFORCE, &big, sizeof big);
        sockaddr_in a{};
        a.sin_family = AF_INET;
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        ASSERT_EQ(bind(rx_, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
        socklen_t len = sizeof dest_;
        getsockname(rx_, reinterpret_cast<sockaddr*>(&dest_), &len);
    }
    void TearDown() override {
        if (rx_ >= 0) close(rx_);
        if (!path_.empty()) unlink(path_.c_str());
    }

    // Receives until `count` datagrams arrived or `timeout_ms` of silence.
    std::vector<Received> receive(size_t count, int timeout_ms = 2000) {
        std::vector<Received> out;
        while (out.size() < count) {
            pollfd p{rx_, POLLIN, 0};
            if (poll(&p, 1, timeout_ms) <= 0) break;
            uint8_t buf[2048];
            char ctl[256];
            iovec iov{buf, sizeof buf};
            msghdr m{};
            m.msg_iov = &iov;
            m.msg_iovlen = 1;
            m.msg_control = ctl;
            m.msg_controllen = sizeof ctl;
            ssize_t n = recvmsg(rx_, &m, 0);
            if (n < 0) break;
            int64_t ts = 0;
            for (cmsghdr* c = CMSG_FIRSTHDR(&m); c; c = CMSG_NXTHDR(&m, c))
                if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_TIMESTAMPNS) {
                    timespec t;
                    std::memcpy(&t, CMSG_DATA(c), sizeof t);
                    ts = int64_t(t.tv_sec) * 1'000'000'000 + t.tv_nsec;
                }
            out.push_back({std::vector<uint8_t>(buf, buf + n), ts});
        }
        return out;
    }

    static constexpr uint64_t kPackets = 7 * 300 + 3;  // a short last datagram
    static constexpr uint64_t kBitrate = 20'000'000;
    static constexpr uint32_t kExtent = 1316 * 8;
    std::string path_;
    std::vector<uint8_t> data_;
    int rx_ = -1;
    sockaddr_in dest_{};
};

TEST_F(StreamerTest, SendsEveryPacketInOrderOnSchedule) {
    // Extents of 34 ms at this rate: the read-ahead has that long, which even a busy 2-core
    // test machine gives it, so a deadline miss here is a real fault of the read-ahead.
    constexpr uint32_t kBigExtent = 1316 * 64;
    auto src = std::make_shared<CbrFileSource>(path_, kPackets, kBitrate, kBigExtent);
    auto t = streamer::StreamThread::start({.max_sessions = 4, .extent_size = kBigExtent});
    ASSERT_TRUE(t.ok()) << t.error().message;
    auto slot = (*t)->add({src, dest_, true, 0x11223344});
    ASSERT_TRUE(slot.ok()) << slot.error().message;

    pacer::Segment seg{.start_packet = 0, .start_time_ns = realtime_ns() + 30'000'000, .seq_base = 65500,
                       .rtp_ts_base = 1000};
    ASSERT_TRUE((*t)->play(*slot, seg).ok());
    const uint64_t n = pacer::datagram_count(kPackets, 0);
    auto rx = receive(n);
    ASSERT_EQ(rx.size(), n);

    for (uint64_t j = 0; j < n; ++j) {
        const auto& d = rx[j].bytes;
        ASSERT_GE(d.size(), 12u);
        EXPECT_EQ(d[0], 0x80);
        EXPECT_EQ(d[1], 33);
        uint16_t seq = uint16_t(d[2] << 8 | d[3]);
        ASSERT_EQ(seq, uint16_t(65500 + j)) << "datagram " << j;
        uint32_t ts = uint32_t(d[4]) << 24 | uint32_t(d[5]) << 16 | uint32_t(d[6]) << 8 | d[7];
        EXPECT_EQ(ts, uint32_t(1000 + (j * 7 * 188 * 8) * 90000 / kBitrate)) << "datagram " << j;
        size_t len = std::min<size_t>(1316, data_.size() - j * 1316);
        ASSERT_EQ(d.size(), 12 + len);
        ASSERT_EQ(0, std::memcmp(d.data() + 12, data_.data() + j * 1316, len)) << "payload of datagram " << j;
    }
    // Paced, not burst: arrivals span (nearly) the scheduled span, and none precede its send time.
    int64_t span = src->packet_time_ns((n - 1) * 7);
    EXPECT_GE(rx.back().arrival_ns - rx.front().arrival_ns, span * 9 / 10);
    for (uint64_t j = 0; j < n; ++j)
        EXPECT_GE(rx[j].arrival_ns, pacer::send_time_ns(*src, seg, j)) << "datagram " << j << " early";

    auto c = (*t)->counters(*slot);
    EXPECT_EQ(c.state, streamer::SessionState::kFinished);
    EXPECT_EQ(c.datagrams, n);
    EXPECT_EQ(c.bytes, kPackets * 188);
    EXPECT_EQ(c.deadline_misses, 0u);
    EXPECT_EQ(c.send_errors, 0u);
    // Every datagram sent is in the lateness histogram once (counted when sendmmsg returns, which
    // can be just after the receiver saw the last one: wait for it, bounded).
    auto counted_now = [&] {
        uint64_t sum = 0;
        for (uint64_t b : (*t)->totals().lateness) sum += b;
        return sum;
    };
    EXPECT_TRUE(of::test::wait_until([&] { return counted_now() >= n; }, std::chrono::milliseconds(1000)));
    EXPECT_EQ(counted_now(), n);
    auto tot = (*t)->totals();
    EXPECT_GE(tot.lateness_max_ns, 0);
}

TEST(StreamerLateness, QuantilesAreBucketBounds) {
    std::array<uint64_t, streamer::kLatenessBuckets> h{};
    EXPECT_EQ(streamer::lateness_quantile_us(h, 0.99), 0);  // nothing counted
    h[0] = 98;  // <= 25 us
    h[5] = 1;   // <= 1 ms
    h[12] = 1;  // beyond 100 ms
    EXPECT_EQ(streamer::lateness_quantile_us(h, 0.50), 25);
    EXPECT_EQ(streamer::lateness_quantile_us(h, 0.99), 1000);
    EXPECT_EQ(streamer::lateness_quantile_us(h, 1.0), -1);
}

TEST_F(StreamerTest, PauseReturnsResumePointAndResumeContinues) {
    auto src = std::make_shared<CbrFileSource>(path_, kPackets, kBitrate, kExtent);
    auto t = streamer::StreamThread::start({.max_sessions = 2, .extent_size = kExtent});
    ASSERT_TRUE(t.ok()) << t.error().message;
    auto slot = (*t)->add({src, dest_, false, 0});  // raw MP2T
    ASSERT_TRUE(slot.ok());
    ASSERT_TRUE((*t)->play(*slot, {0, realtime_ns() + 10'000'000, 0, 0}).ok());
    auto first = receive(50);
    ASSERT_EQ(first.size(), 50u);
    auto at = (*t)->pause(*slot);
    ASSERT_TRUE(at.ok());
    ASSERT_EQ(*at % 7, 0u);
    auto between = receive(1000, 100);  // whatever was already in flight before the pause
    uint64_t sent_before = 50 + between.size();
    EXPECT_EQ(*at, sent_before * 7) << "pause position must be the first datagram not sent";

    ASSERT_TRUE((*t)->play(*slot, {*at, realtime_ns() + 5'000'000, 0, 0}).ok());
    uint64_t rest = pacer::datagram_count(kPackets, *at);
    auto second = receive(rest);
    ASSERT_EQ(second.size(), rest);
    for (uint64_t j = 0; j < rest; ++j) {
        size_t off = (*at + j * 7) * 188, len = std::min<size_t>(1316, data_.size() - off);
        ASSERT_EQ(second[j].bytes.size(), len);
        ASSERT_EQ(0, std::memcmp(second[j].bytes.data(), data_.data() + off, len)) << "datagram " << j;
    }
    EXPECT_EQ((*t)->counters(*slot).state, streamer::SessionState::kFinished);
    ASSERT_TRUE((*t)->remove(*slot).ok());
    EXPECT_FALSE((*t)->pause(*slot).ok());
}

// The send permit (a primary's lease): nothing leaves once it has run out, nothing is lost, and
// when it is renewed every due datagram goes out, in order, at once.
TEST_F(StreamerTest, SendPermitStopsShortOfTheLeaseAndLosesNothing) {
    auto src = std::make_shared<CbrFileSource>(path_, kPackets, kBitrate, kExtent);
    auto t = streamer::StreamThread::start({.max_sessions = 2, .extent_size = kExtent});
    ASSERT_TRUE(t.ok()) << t.error().message;
    auto slot = (*t)->add({src, dest_, true, 7});
    ASSERT_TRUE(slot.ok());
    int64_t start = realtime_ns() + 10'000'000;
    // The permit ends 60 ms into the stream (datagrams every 0.53 ms at 20 Mb/s).
    int64_t lease = start + 60'000'000;
    (*t)->set_send_permit(lease);
    ASSERT_TRUE((*t)->play(*slot, {0, start, 0, 0}).ok());
    auto before = receive(100000, 200);  // everything until 200 ms of silence
    ASSERT_FALSE(before.empty());
    for (auto& r : before)
        EXPECT_LT(r.arrival_ns, lease - streamer::StreamThread::kPermitMarginNs + 2'000'000)
            << "a datagram left after the permit ran out";
    EXPECT_LT(before.size(), pacer::datagram_count(kPackets, 0) / 2) << "the permit did not stop the thread";
    EXPECT_GE((*t)->totals().permit_waits, 1u);

    (*t)->set_send_permit(INT64_MAX);
    uint64_t n = pacer::datagram_count(kPackets, 0);
    auto after = receive(n - before.size());
    ASSERT_EQ(before.size() + after.size(), n) << "datagrams were lost across the wait";
    uint16_t expect = 0;
    for (auto* part : {&before, &after})
        for (auto& r : *part) {
            uint16_t seq = uint16_t(r.bytes[2] << 8 | r.bytes[3]);
            ASSERT_EQ(seq, expect) << "out of order after the permit was renewed";
            ++expect;
        }
    // The backlog left at once on renewal: the first datagram after it is late by about the wait
    // (200 ms of silence at least), and the thread's lateness figures say so.
    EXPECT_GE(after.front().arrival_ns, lease - streamer::StreamThread::kPermitMarginNs);
    // Counted once sendmmsg returns, which can be just after the receiver saw the datagram.
    of::test::wait_until([&] { return (*t)->totals().lateness_max_ns >= 100'000'000; },
                         std::chrono::milliseconds(1000));
    auto tot = (*t)->totals();
    EXPECT_GE(tot.lateness_max_ns, 100'000'000);
    EXPECT_GE(tot.lateness.back(), 1u) << "no datagram counted beyond 100 ms late";
    EXPECT_GE(tot.late_datagrams, 1u);
    EXPECT_EQ((*t)->counters(*slot).state, streamer::SessionState::kFinished);
}

TEST_F(StreamerTest, RefusesWhenFullAndBadSegments) {
    auto src = std::make_shared<CbrFileSource>(path_, kPackets, kBitrate, kExtent);
    auto t = streamer::StreamThread::start({.max_sessions = 1, .extent_size = kExtent});
    ASSERT_TRUE(t.ok());
    auto a = (*t)->add({src, dest_, true, 1});
    ASSERT_TRUE(a.ok());
    auto b = (*t)->add({src, dest_, true, 2});
    ASSERT_FALSE(b.ok());
    EXPECT_EQ(b.error().code, ENOSPC);
    auto bad = (*t)->play(*a, {3, realtime_ns(), 0, 0});
    ASSERT_FALSE(bad.ok());
    EXPECT_EQ(bad.error().code, EINVAL);
    auto big = std::make_shared<CbrFileSource>(path_, kPackets, kBitrate, kExtent * 2);
    ASSERT_TRUE((*t)->remove(*a).ok());
    EXPECT_EQ((*t)->add({big, dest_, true, 3}).error().code, EINVAL);
}

TEST_F(StreamerTest, ReadErrorFailsOnlyThatSession) {
    // A source whose extent points past the end of its file: the read comes back short.
    class Broken : public CbrFileSource {
    public:
        using CbrFileSource::CbrFileSource;
        streamer::ExtentLocation extent(uint64_t i) const override {
            auto e = CbrFileSource::extent(i);
            if (i == 2) e.offset += 1 << 30;
            return e;
        }
    };
    auto good = std::make_shared<CbrFileSource>(path_, kPackets, kBitrate, kExtent);
    auto bad = std::make_shared<Broken>(path_, kPackets, kBitrate, kExtent);
    int rx2 = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ASSERT_EQ(bind(rx2, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
    socklen_t len = sizeof a;
    getsockname(rx2, reinterpret_cast<sockaddr*>(&a), &len);

    auto t = streamer::StreamThread::start({.max_sessions = 2, .extent_size = kExtent});
    ASSERT_TRUE(t.ok());
    auto s1 = (*t)->add({good, dest_, false, 0});
    auto s2 = (*t)->add({bad, a, false, 0});
    ASSERT_TRUE(s1.ok() && s2.ok());
    int64_t start = realtime_ns() + 20'000'000;
    ASSERT_TRUE((*t)->play(*s1, {0, start, 0, 0}).ok());
    ASSERT_TRUE((*t)->play(*s2, {0, start, 0, 0}).ok());
    auto rx = receive(pacer::datagram_count(kPackets, 0));
    EXPECT_EQ(rx.size(), pacer::datagram_count(kPackets, 0)) << "the healthy session lost datagrams";
    auto c2 = (*t)->counters(*s2);
    EXPECT_EQ(c2.state, streamer::SessionState::kFailed);
    // Extent 2 fails while it is read ahead: the session stops somewhere in extent 1, never past it.
    EXPECT_GE(c2.datagrams, 9u);
    EXPECT_LE(c2.datagrams, 16u);
    EXPECT_EQ(c2.error, EIO);
    // The failover controller's view ([0095] disk failure): one failed read, its errno.
    EXPECT_EQ((*t)->read_failures(), std::make_pair(uint64_t(1), EIO));
    EXPECT_EQ((*t)->totals().read_failures, 1u);
    close(rx2);
}

}  // namespace

namespace {

TEST_F(StreamerTest, SendsRtcpByeAfterTheLastDatagram) {
    int rtcp = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ASSERT_EQ(bind(rtcp, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
    socklen_t len = sizeof a;
    getsockname(rtcp, reinterpret_cast<sockaddr*>(&a), &len);

    auto src = std::make_shared<CbrFileSource>(path_, 7 * 20, kBitrate, kExtent);
    auto t = streamer::StreamThread::start(
        {.max_sessions = 1, .extent_size = kExtent, .source_ip = {htonl(INADDR_LOOPBACK)}, .source_port = 47010});
    ASSERT_TRUE(t.ok()) << t.error().message;
    auto slot = (*t)->add({src, dest_, true, 0xa1b2c3d4, ntohs(a.sin_port)});
    ASSERT_TRUE(slot.ok());
    ASSERT_TRUE((*t)->play(*slot, {0, realtime_ns() + 5'000'000, 0, 0}).ok());
    ASSERT_EQ(receive(20).size(), 20u);
    pollfd p{rtcp, POLLIN, 0};
    ASSERT_EQ(poll(&p, 1, 2000), 1) << "no RTCP BYE";
    uint8_t buf[64];
    sockaddr_in from{};
    socklen_t fl = sizeof from;
    ssize_t n = recvfrom(rtcp, buf, sizeof buf, 0, reinterpret_cast<sockaddr*>(&from), &fl);
    ASSERT_EQ(n, 16);
    EXPECT_EQ(ntohs(from.sin_port), 47011) << "RTCP leaves from the RTP port + 1";
    EXPECT_EQ(buf[1], 201);  // compound packet starts with a receiver report
    EXPECT_EQ(buf[9], 203);  // then BYE
    EXPECT_EQ(buf[12], 0xa1);
    EXPECT_EQ(buf[15], 0xd4);
    close(rtcp);
}

}  // namespace

namespace {

TEST_F(StreamerTest, TotalsKeepRemovedSessions) {
    auto src = std::make_shared<CbrFileSource>(path_, 7 * 30, kBitrate, kExtent);
    auto t = streamer::StreamThread::start({.max_sessions = 1, .extent_size = kExtent});
    ASSERT_TRUE(t.ok());
    for (int round = 1; round <= 2; ++round) {
        auto slot = (*t)->add({src, dest_, false, 0});
        ASSERT_TRUE(slot.ok());
        ASSERT_TRUE((*t)->play(*slot, {0, realtime_ns() + 5'000'000, 0, 0}).ok());
        ASSERT_EQ(receive(30).size(), 30u);
        ASSERT_TRUE((*t)->remove(*slot).ok());
        EXPECT_EQ((*t)->totals().datagrams, 30u * round) << "totals went down after a removal";
    }
}

}  // namespace
