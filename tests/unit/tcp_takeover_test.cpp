// The TCP takeover pieces: the frame parser, the hub view on synthetic segments, and, on the real
// kernel (a private network namespace, loopback), a connection revived with TCP_REPAIR from what a
// tap saw, carrying on under the same client socket.
#include <arpa/inet.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstring>
#include <deque>
#include <string>
#include <vector>

#include "common/clock.h"
#include "rtsp/framing.h"
#include "tcp_takeover/hub_view.h"
#include "tcp_takeover/repair.h"
#include "tcp_takeover/segment.h"
#include "packet_tap.h"
#include "test_netns.h"
#include "wait_until.h"

namespace of::tcp_takeover {
namespace {

in_addr ip(const char* s) {
    in_addr a{};
    inet_pton(AF_INET, s, &a);
    return a;
}

// ---- frames ----

void put16(std::vector<uint8_t>& f, size_t at, uint16_t v) {
    f[at] = uint8_t(v >> 8);
    f[at + 1] = uint8_t(v);
}
void put32(std::vector<uint8_t>& f, size_t at, uint32_t v) {
    for (int i = 0; i < 4; ++i) f[at + i] = uint8_t(v >> (24 - 8 * i));
}

// An Ethernet/IPv4/TCP frame with MSS, SACK-permitted, timestamps and window-scale options and a
// correct checksum.
std::vector<uint8_t> frame(const std::string& payload, uint8_t flags = kAck | kPsh) {
    const size_t eth = 14, iph = 20, tcph = 20 + 20;
    std::vector<uint8_t> f(eth + iph + tcph + payload.size());
    put16(f, 12, 0x0800);
    uint8_t* ipb = f.data() + eth;
    ipb[0] = 0x45;
    put16(f, eth + 2, uint16_t(iph + tcph + payload.size()));
    f[eth + 8] = 64;
    f[eth + 9] = 6;
    put32(f, eth + 12, 0x0a4d0065);  // 10.77.0.101
    put32(f, eth + 16, 0x0a4d0001);  // 10.77.0.1
    size_t t = eth + iph;
    put16(f, t, 40000);
    put16(f, t + 2, 554);
    put32(f, t + 4, 1000);
    put32(f, t + 8, 2000);
    f[t + 12] = uint8_t((tcph / 4) << 4);
    f[t + 13] = flags;
    put16(f, t + 14, 512);
    uint8_t opts[20] = {2, 4, 0x05, 0xb4, 4, 2, 8, 10, 0, 0, 0, 7, 0, 0, 0, 9, 1, 3, 3, 7};
    std::memcpy(f.data() + t + 20, opts, sizeof opts);
    std::memcpy(f.data() + t + tcph, payload.data(), payload.size());
    // checksum over the pseudo-header and the segment
    uint64_t sum = 0x0a4d + 0x0065 + 0x0a4d + 0x0001 + 6 + (tcph + payload.size());
    for (size_t i = t; i + 1 < f.size(); i += 2) sum += uint16_t(f[i] << 8 | f[i + 1]);
    if ((f.size() - t) % 2) sum += uint16_t(f.back() << 8);
    while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
    put16(f, t + 16, uint16_t(~sum));
    return f;
}

TEST(TcpSegment, ParsesHeaderOptionsAndPayload) {
    auto f = frame("OPTIONS");
    auto s = parse_frame(f, true);
    ASSERT_TRUE(s) << s.error().message;
    EXPECT_EQ(s->saddr.s_addr, ip("10.77.0.101").s_addr);
    EXPECT_EQ(s->dport, 554);
    EXPECT_EQ(s->seq, 1000u);
    EXPECT_EQ(s->ack, 2000u);
    EXPECT_EQ(s->window, 512);
    EXPECT_EQ(s->mss, 1460);
    EXPECT_EQ(s->wscale, 7);
    EXPECT_TRUE(s->sack_permitted);
    EXPECT_EQ(s->ts_val, 7u);
    EXPECT_EQ(s->ts_ecr, 9u);
    EXPECT_EQ(std::string(s->payload.begin(), s->payload.end()), "OPTIONS");
    EXPECT_EQ(s->seq_len(), 7u);
}

TEST(TcpSegment, RefusesBadFramesWithAReason) {
    auto good = frame("abc");
    auto bad_sum = good;
    bad_sum.back() ^= 1;
    EXPECT_EQ(parse_frame(bad_sum, true).error().code, EBADMSG);
    EXPECT_TRUE(parse_frame(bad_sum, false));  // not verifiable (made on this host): taken
    for (size_t cut : {size_t(0), size_t(13), size_t(20), size_t(40), good.size() - 1}) {
        auto t = good;
        t.resize(cut);
        auto r = parse_frame(t, false);
        EXPECT_FALSE(r) << "cut at " << cut;
    }
    auto frag = good;
    frag[14 + 6] = 0x20;  // more fragments
    EXPECT_EQ(parse_frame(frag, false).error().code, EBADMSG);
    auto doff = good;
    doff[14 + 20 + 12] = 0xf0;  // data offset 60 > segment
    doff.resize(14 + 20 + 50);
    put16(doff, 14 + 2, 70);
    EXPECT_EQ(parse_frame(doff, false).error().code, EBADMSG);
    auto udp = good;
    udp[14 + 9] = 17;
    EXPECT_EQ(parse_frame(udp, false).error().code, ENOENT);
    // A broken option list ends the options, not the frame.
    auto opt = good;
    opt[14 + 20 + 20 + 1] = 40;  // MSS option claims 40 bytes
    auto r = parse_frame(opt, false);
    ASSERT_TRUE(r);
    EXPECT_FALSE(r->mss);
}

// ---- the hub view on synthetic segments ----

const in_addr kServer = ip("10.77.0.1");
const in_addr kClient = ip("10.77.0.101");
constexpr uint16_t kPort = 554, kCport = 40000;
constexpr uint32_t kIsnC = 0xfffffff0u;  // wraps during the test
constexpr uint32_t kIsnS = 0x12345678u;

struct Wire {
    std::deque<std::string> keep;  // payload storage (stable addresses)
    uint32_t cseq = kIsnC + 1, sseq = kIsnS + 1;
    uint32_t cts = 100, sts = 5000;

    Segment c(const std::string& data, uint8_t flags = kAck | kPsh) {
        keep.push_back(data);
        Segment s;
        s.saddr = kClient;
        s.daddr = kServer;
        s.sport = kCport;
        s.dport = kPort;
        s.seq = cseq;
        s.ack = sseq;
        s.flags = flags;
        s.window = 1000;
        s.ts_val = ++cts;
        s.ts_ecr = sts;
        s.payload = {reinterpret_cast<const uint8_t*>(keep.back().data()), keep.back().size()};
        cseq += uint32_t(data.size());
        return s;
    }
    Segment s(const std::string& data, uint8_t flags = kAck | kPsh) {
        keep.push_back(data);
        Segment x;
        x.saddr = kServer;
        x.daddr = kClient;
        x.sport = kPort;
        x.dport = kCport;
        x.seq = sseq;
        x.ack = cseq;
        x.flags = flags;
        x.window = 2000;
        x.ts_val = ++sts;
        x.ts_ecr = cts;
        x.payload = {reinterpret_cast<const uint8_t*>(keep.back().data()), keep.back().size()};
        sseq += uint32_t(data.size());
        return x;
    }
    void handshake(HubView& v) {
        Segment syn;
        syn.saddr = kClient;
        syn.daddr = kServer;
        syn.sport = kCport;
        syn.dport = kPort;
        syn.seq = kIsnC;
        syn.flags = kSyn;
        syn.window = 64240;
        syn.mss = 1460;
        syn.wscale = 7;
        syn.sack_permitted = true;
        syn.ts_val = cts;
        v.add(syn, 1);
        Segment sa;
        sa.saddr = kServer;
        sa.daddr = kClient;
        sa.sport = kPort;
        sa.dport = kCport;
        sa.seq = kIsnS;
        sa.ack = kIsnC + 1;
        sa.flags = kSyn | kAck;
        sa.window = 65160;
        sa.mss = 1460;
        sa.wscale = 9;
        sa.sack_permitted = true;
        sa.ts_val = sts;
        v.add(sa, 2);
        v.add(c(""), 3);
    }
};

HubViewOptions rtsp_options() {
    HubViewOptions o;
    o.server = kServer;
    o.server_port = kPort;
    o.request_framer = [] { return rtsp::make_request_framer({}); };
    o.response_framer = [] { return rtsp::make_response_framer(); };
    return o;
}

const std::string kReq1 = "OPTIONS rtsp://10.77.0.1/a.ts RTSP/1.0\r\nCSeq: 1\r\n\r\n";
const std::string kAns1 = "RTSP/1.0 200 OK\r\nCSeq: 1\r\nPublic: OPTIONS\r\n\r\n";
const std::string kReq2 = "DESCRIBE rtsp://10.77.0.1/a.ts RTSP/1.0\r\nCSeq: 2\r\n\r\n";
const std::string kAns2 = "RTSP/1.0 200 OK\r\nCSeq: 2\r\nContent-Length: 5\r\n\r\nv=0\r\n";
const std::string kReq3 = "GET_PARAMETER rtsp://10.77.0.1/a.ts RTSP/1.0\r\nCSeq: 3\r\n\r\n";

TEST(HubView, AnsweredRequestsAreNotPendingAndStateFollowsTheWire) {
    HubView v(rtsp_options());
    Wire w;
    w.handshake(v);
    v.add(w.c(kReq1), 10);
    v.add(w.s(kAns1), 11);
    v.add(w.c(kReq2), 12);
    uint32_t acked = w.sseq;
    v.add(w.s(kAns2), 13);
    Segment r3 = w.c(kReq3);  // sent before answer 2 arrived: it acknowledges answer 1 only
    r3.ack = acked;
    v.add(r3, 14);  // the server died before answering it
    auto p = v.plan(20'000'000);
    ASSERT_EQ(p.revive.size(), 1u) << (p.lost.empty() ? "" : p.lost[0].second);
    const Revival& r = p.revive[0];
    EXPECT_EQ(r.pending, kReq3);
    EXPECT_EQ(r.in_offset, kReq1.size() + kReq2.size());
    EXPECT_EQ(r.rcv_nxt, w.cseq);
    EXPECT_EQ(r.snd_una, kIsnS + 1 + kAns1.size());  // the client acknowledged answer 1 only
    EXPECT_EQ(r.unacked, kAns2);
    EXPECT_EQ(r.out_offset, kAns1.size() + kAns2.size());
    EXPECT_TRUE(r.unsent.empty());
    EXPECT_EQ(r.mss, 1460);
    EXPECT_TRUE(r.wscale_ok);
    EXPECT_EQ(r.snd_wscale, 7);
    EXPECT_EQ(r.rcv_wscale, 9);
    EXPECT_EQ(r.snd_wnd, 1000u << 7);
    EXPECT_EQ(r.rcv_wnd, 2000u << 9);
    EXPECT_TRUE(r.sack_ok && r.timestamps);
    // 20 ms after the last server timestamp (seen at 13 ns): TSval goes on by 20 + 1 ticks.
    EXPECT_EQ(r.ts_val, w.sts + 19 + 1);
}

TEST(HubView, ARequestExecutedButNotAnsweredIsAnsweredFromTheReply) {
    HubView v(rtsp_options());
    Wire w;
    w.handshake(v);
    v.add(w.c(kReq1), 10);
    v.add(w.s(kAns1), 11);
    v.add(w.c(kReq2 + kReq3), 12);  // pipelined
    // The server executed request 2 and replied to its partner; half its answer reached the wire.
    v.add_reply({{kClient, kCport}, kReq1.size() + kReq2.size(), kAns1.size(), kAns2});
    v.add_reply({{kClient, kCport}, kReq1.size() + kReq2.size(), kAns1.size(), kAns2});  // second path
    v.add(w.s(kAns2.substr(0, 20)), 13);
    auto p = v.plan(20'000'000);
    ASSERT_EQ(p.revive.size(), 1u) << (p.lost.empty() ? "" : p.lost[0].second);
    const Revival& r = p.revive[0];
    EXPECT_EQ(r.replayed, 1u);
    EXPECT_EQ(r.unsent, kAns2.substr(20));
    EXPECT_EQ(r.pending, kReq3);  // executed by nobody yet
    EXPECT_EQ(r.in_offset, kReq1.size() + kReq2.size());
    EXPECT_EQ(r.out_offset, kAns1.size() + kAns2.size());
    EXPECT_EQ(v.counters().replies, 1u);
}

TEST(HubView, ACutAnswerWithoutItsReplyCannotBeRevived) {
    HubView v(rtsp_options());
    Wire w;
    w.handshake(v);
    v.add(w.c(kReq2), 10);
    v.add(w.s(kAns2.substr(0, 20)), 11);
    auto p = v.plan(20'000'000);
    ASSERT_EQ(p.lost.size(), 1u);
    EXPECT_NE(p.lost[0].second.find("cut short"), std::string::npos) << p.lost[0].second;
}

TEST(HubView, OutOfOrderClientBytesAreReassembled) {
    HubView v(rtsp_options());
    Wire w;
    w.handshake(v);
    Segment a = w.c(kReq1.substr(0, 10));
    Segment b = w.c(kReq1.substr(10));
    v.add(b, 10);
    v.add(a, 11);
    v.add(a, 12);  // a retransmission
    v.add(w.s(kAns1), 13);
    auto p = v.plan(20'000'000);
    ASSERT_EQ(p.revive.size(), 1u) << (p.lost.empty() ? "" : p.lost[0].second);
    EXPECT_TRUE(p.revive[0].pending.empty());
    EXPECT_EQ(p.revive[0].rcv_nxt, w.cseq);
}

TEST(HubView, AHoleTheServerAcknowledgedIsLost) {
    HubView v(rtsp_options());
    Wire w;
    w.handshake(v);
    (void)w.c(kReq1.substr(0, 10));  // never seen by us
    v.add(w.c(kReq1.substr(10)), 10);
    Segment ack = w.s("");
    v.add(ack, 11);  // the server acknowledged all of it
    auto p = v.plan(20'000'000);
    ASSERT_EQ(p.lost.size(), 1u);
    EXPECT_NE(p.lost[0].second.find("lacks"), std::string::npos) << p.lost[0].second;
}

TEST(HubView, ClosedConnectionsAndStrangersAreNotRevived) {
    HubView v(rtsp_options());
    Wire w;
    w.handshake(v);
    v.add(w.c("", kAck | kFin), 10);
    EXPECT_EQ(v.size(), 0u);
    EXPECT_EQ(v.counters().closed, 1u);
    // A segment of a connection opened before we watched: ignored, nothing to revive.
    Wire late;
    v.add(late.c(kReq1), 11);
    EXPECT_EQ(v.counters().ignored, 1u);
    auto p = v.plan(20'000'000);
    EXPECT_TRUE(p.revive.empty());
    EXPECT_TRUE(p.lost.empty());
}

TEST(HubView, BoundsHold) {
    auto o = rtsp_options();
    o.max_connections = 3;
    o.max_bytes = 1024;
    HubView v(o);
    for (uint16_t port = 1; port <= 5; ++port) {
        Segment syn;
        syn.saddr = kClient;
        syn.daddr = kServer;
        syn.sport = port;
        syn.dport = kPort;
        syn.seq = port * 1000u;
        syn.flags = kSyn;
        v.add(syn, port);
    }
    EXPECT_EQ(v.size(), 3u);
    EXPECT_EQ(v.counters().evicted, 2u);
    // A client that sends more than max_bytes without an answer: that connection is broken.
    HubView v2(o);
    Wire w;
    w.handshake(v2);
    std::string big(2000, 'x');
    v2.add(w.c(big), 10);
    auto p = v2.plan(20'000'000);
    ASSERT_EQ(p.lost.size(), 1u);
    // Garbage from the client: framing is lost for good, the server closes such a connection.
    HubView v3(rtsp_options());
    Wire w3;
    w3.handshake(v3);
    v3.add(w3.c("\rGARBAGE\r\n\r\n"), 10);
    EXPECT_EQ(v3.plan(20'000'000).lost.size(), 1u);
}

// ---- the real kernel: revive a connection from a tap on loopback ----

class Revive : public ::testing::Test {
protected:
    void SetUp() override {
        if (geteuid() != 0) GTEST_SKIP() << "needs root (TCP_REPAIR, packet sockets)";
        if (auto why = test::enter_private_netns(); !why.empty()) GTEST_SKIP() << "needs a private netns: " << why;
    }
};

// What the view holds, for failure messages.
std::string describe(const HubView& v, const test::PacketTap& t) {
    auto p = v.plan(monotonic_ns());
    const auto& c = v.counters();
    std::string out = "tap frames=" + std::to_string(t.frames()) + "; view segments=" + std::to_string(c.segments) +
                      " ignored=" + std::to_string(c.ignored) + " connections=" + std::to_string(c.connections) +
                      " closed=" + std::to_string(c.closed) + " revivable=" + std::to_string(p.revive.size());
    for (auto& [k, why] : p.lost) out += "; lost " + to_string(k) + ": " + why;
    for (auto& r : p.revive) out += "; pending=[" + r.pending + "] unsent=[" + r.unsent + "]";
    return out;
}

std::string read_some(int fd, size_t want, int timeout_ms = 2000) {
    std::string got;
    int64_t end = monotonic_ns() + int64_t(timeout_ms) * 1'000'000;
    while (got.size() < want && monotonic_ns() < end) {
        pollfd p{fd, POLLIN, 0};
        if (poll(&p, 1, 50) <= 0) continue;
        char b[4096];
        ssize_t n = recv(fd, b, sizeof b, MSG_DONTWAIT);
        if (n <= 0) break;
        got.append(b, size_t(n));
    }
    return got;
}

TEST_F(Revive, AConnectionGoesOnUnderTheSameClientSocket) {
    const in_addr lo = ip("127.0.0.1");
    sockaddr_in sa{};
    sa.sin_family = AF_INET;
    sa.sin_addr = lo;
    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int one = 1;
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    ASSERT_EQ(bind(lfd, reinterpret_cast<sockaddr*>(&sa), sizeof sa), 0);
    ASSERT_EQ(listen(lfd, 4), 0);
    socklen_t sl = sizeof sa;
    getsockname(lfd, reinterpret_cast<sockaddr*>(&sa), &sl);
    uint16_t port = ntohs(sa.sin_port);

    auto tap = test::PacketTap::open("lo", lo, port);
    ASSERT_TRUE(tap) << tap.error().message;
    HubViewOptions o = rtsp_options();
    o.server = lo;
    o.server_port = port;
    HubView view(o);
    auto pump = [&] { (void)tap->drain([&](const Segment& s, int64_t ns) { view.add(s, ns); }); };

    int cfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ASSERT_EQ(connect(cfd, reinterpret_cast<sockaddr*>(&sa), sizeof sa), 0);
    int sfd = accept(lfd, nullptr, nullptr);
    ASSERT_GE(sfd, 0);
    ASSERT_EQ(send(cfd, kReq1.data(), kReq1.size(), 0), ssize_t(kReq1.size()));
    EXPECT_EQ(read_some(sfd, kReq1.size()), kReq1);
    ASSERT_EQ(send(sfd, kAns1.data(), kAns1.size(), 0), ssize_t(kAns1.size()));
    EXPECT_EQ(read_some(cfd, kAns1.size()), kAns1);
    // A request the old server received (its kernel acknowledged it) but never answered.
    ASSERT_EQ(send(cfd, kReq3.data(), kReq3.size(), 0), ssize_t(kReq3.size()));
    ASSERT_TRUE(test::wait_until([&] {
        pump();
        auto p = view.plan(monotonic_ns());
        return p.revive.size() == 1 && p.revive[0].pending == kReq3;
    })) << describe(view, *tap);

    // The old server goes away without a word on the wire; the connection is revived here.
    close_silently(sfd);
    auto plan = view.plan(monotonic_ns());
    ASSERT_EQ(plan.revive.size(), 1u);
    auto fd = revive(plan.revive[0]);
    ASSERT_TRUE(fd) << fd.error().message;
    const std::string ans3 = "RTSP/1.0 200 OK\r\nCSeq: 3\r\n\r\n";
    ASSERT_EQ(send(*fd, ans3.data(), ans3.size(), MSG_NOSIGNAL), ssize_t(ans3.size()));
    EXPECT_EQ(read_some(cfd, ans3.size()), ans3);
    // And the other way: the client's next request reaches the revived socket.
    const std::string req4 = "TEARDOWN rtsp://x/a.ts RTSP/1.0\r\nCSeq: 4\r\n\r\n";
    ASSERT_EQ(send(cfd, req4.data(), req4.size(), 0), ssize_t(req4.size()));
    EXPECT_EQ(read_some(*fd, req4.size()), req4);
    tcp_info ti{};
    socklen_t tl = sizeof ti;
    ASSERT_EQ(getsockopt(cfd, SOL_TCP, TCP_INFO, &ti, &tl), 0);
    EXPECT_EQ(ti.tcpi_state, TCP_ESTABLISHED);
    close(*fd);
    close(cfd);
    close(lfd);
}

TEST_F(Revive, UnacknowledgedBytesAreRetransmittedAndUnsentOnesSent) {
    // The old server's last answer is in the revived socket's send queue as sent; the client
    // had it already, so the restore must not repeat it to the application.
    const in_addr lo = ip("127.0.0.1");
    sockaddr_in sa{};
    sa.sin_family = AF_INET;
    sa.sin_addr = lo;
    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ASSERT_EQ(bind(lfd, reinterpret_cast<sockaddr*>(&sa), sizeof sa), 0);
    ASSERT_EQ(listen(lfd, 4), 0);
    socklen_t sl = sizeof sa;
    getsockname(lfd, reinterpret_cast<sockaddr*>(&sa), &sl);
    auto tap = test::PacketTap::open("lo", lo, ntohs(sa.sin_port));
    ASSERT_TRUE(tap) << tap.error().message;
    HubViewOptions o = rtsp_options();
    o.server = lo;
    o.server_port = ntohs(sa.sin_port);
    HubView view(o);
    auto pump = [&] { (void)tap->drain([&](const Segment& s, int64_t ns) { view.add(s, ns); }); };
    int cfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ASSERT_EQ(connect(cfd, reinterpret_cast<sockaddr*>(&sa), sizeof sa), 0);
    int sfd = accept(lfd, nullptr, nullptr);
    ASSERT_GE(sfd, 0);
    ASSERT_EQ(send(cfd, kReq2.data(), kReq2.size(), 0), ssize_t(kReq2.size()));
    EXPECT_EQ(read_some(sfd, kReq2.size()), kReq2);
    // The server executed the request, replied to its partner, put half the answer on the wire.
    sockaddr_in ca{};
    socklen_t cl = sizeof ca;
    ASSERT_EQ(getsockname(cfd, reinterpret_cast<sockaddr*>(&ca), &cl), 0);
    pump();  // as the controller does: the hub first, so the reply finds its connection
    view.add_reply({{lo, ntohs(ca.sin_port)}, kReq2.size(), 0, kAns2});
    ASSERT_EQ(send(sfd, kAns2.data(), 20, 0), 20);
    EXPECT_EQ(read_some(cfd, 20), kAns2.substr(0, 20));
    ASSERT_TRUE(test::wait_until([&] {
        pump();
        auto p = view.plan(monotonic_ns());
        return p.revive.size() == 1 && p.revive[0].unsent == kAns2.substr(20);
    })) << describe(view, *tap);
    close_silently(sfd);
    auto plan = view.plan(monotonic_ns());
    ASSERT_EQ(plan.revive.size(), 1u);
    EXPECT_EQ(plan.revive[0].replayed, 1u);
    EXPECT_TRUE(plan.revive[0].pending.empty());
    auto fd = revive(plan.revive[0]);
    ASSERT_TRUE(fd) << fd.error().message;
    ASSERT_EQ(send(*fd, plan.revive[0].unsent.data(), plan.revive[0].unsent.size(), MSG_NOSIGNAL),
              ssize_t(plan.revive[0].unsent.size()));
    EXPECT_EQ(read_some(cfd, kAns2.size() - 20), kAns2.substr(20));
    close(*fd);
    close(cfd);
    close(lfd);
}

TEST_F(Revive, SilentCloseSendsNothing) {
    const in_addr lo = ip("127.0.0.1");
    sockaddr_in sa{};
    sa.sin_family = AF_INET;
    sa.sin_addr = lo;
    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ASSERT_EQ(bind(lfd, reinterpret_cast<sockaddr*>(&sa), sizeof sa), 0);
    ASSERT_EQ(listen(lfd, 4), 0);
    socklen_t sl = sizeof sa;
    getsockname(lfd, reinterpret_cast<sockaddr*>(&sa), &sl);
    int cfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ASSERT_EQ(connect(cfd, reinterpret_cast<sockaddr*>(&sa), sizeof sa), 0);
    int sfd = accept(lfd, nullptr, nullptr);
    ASSERT_GE(sfd, 0);
    ASSERT_EQ(send(cfd, "x", 1, 0), 1);  // unread data: a plain close() would reset
    close_silently(sfd);
    pollfd p{cfd, POLLIN | POLLRDHUP, 0};
    EXPECT_EQ(poll(&p, 1, 200), 0) << "the client saw the server's socket go (revents " << p.revents << ")";
    close(cfd);
    close(lfd);
}

}  // namespace
}  // namespace of::tcp_takeover
