#include "failover/peer_protocol.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>

#include <algorithm>

namespace {

using namespace of::failover;

const std::vector<uint8_t> kKey(32, 0x5a);

Message msg(uint64_t seq, Body body, int64_t sent = 1'000'000'000'000) {
    return Message{0xabcdef, seq, sent, std::move(body)};
}

TEST(PeerProtocol, RoundTripsEveryType) {
    SessionRecord s;
    s.op = SessionOp::kPlay;
    s.session = 42;
    s.asset = "movie.ts";
    inet_pton(AF_INET, "10.77.0.101", &s.client_ip);
    s.client_port = 5000;
    s.ssrc = 0xdeadbeef;
    s.start_packet = 700;
    s.start_time_ns = 123456789;
    s.seq_base = 65535;
    s.rtp_ts_base = 99;
    Heartbeat hb{3, 2, 0, {{42, 707}, {43, 14}}};
    SyncReply sr{7, 55, {{"mpeg_stream_count_limit", "1000"}, {"asset", "movie.ts"}}};
    ConnReply cr;
    inet_pton(AF_INET, "10.77.0.101", &cr.client_ip);
    cr.client_port = 40312;
    cr.request_end = 301;
    cr.response_start = 512;
    cr.response = "RTSP/1.0 200 OK\r\nCSeq: 4\r\n\r\n";
    cr.records = {s, s};
    HandOver ho{0x1234, 5'000'000'000, 1, 2, {}};
    for (uint16_t i = 0; i < kMaxHandOverEntries; ++i) ho.entries.push_back({cr.client_ip, uint16_t(5000 + i), uint16_t(65530 + i)});
    std::vector<Body> bodies = {hb, HeartbeatAck{5, 9, 0xfeedbee5}, FailoverNotice{1, "oneframed died"}, StopOrder{77}, s,
                                SyncRequest{7}, sr, cr, ho, HandOverAck{0x1234, 1, 128}, HandOverCancel{0x1234}};
    uint64_t seq = 1;
    for (auto& b : bodies) {
        auto wire = encode(msg(seq, b), kKey);
        ASSERT_TRUE(wire.ok()) << wire.error().message;
        auto back = decode(*wire, kKey);
        ASSERT_TRUE(back.ok()) << back.error().message;
        EXPECT_EQ(back->seq, seq);
        EXPECT_EQ(back->epoch, 0xabcdefu);
        ASSERT_EQ(back->body.index(), b.index());
        ++seq;
    }
    auto back = decode(*encode(msg(1, s), kKey), kKey);
    auto& r = std::get<SessionRecord>(back->body);
    EXPECT_EQ(r.asset, "movie.ts");
    EXPECT_EQ(r.client_ip.s_addr, s.client_ip.s_addr);
    EXPECT_EQ(r.client_port, 5000);
    EXPECT_EQ(r.ssrc, 0xdeadbeefu);
    EXPECT_EQ(r.start_time_ns, 123456789);
    EXPECT_EQ(r.seq_base, 65535);
    auto cr2 = std::get<ConnReply>(decode(*encode(msg(1, cr), kKey), kKey)->body);
    EXPECT_EQ(cr2.client_ip.s_addr, cr.client_ip.s_addr);
    EXPECT_EQ(cr2.client_port, 40312);
    EXPECT_EQ(cr2.request_end, 301u);
    EXPECT_EQ(cr2.response_start, 512u);
    EXPECT_EQ(cr2.response, cr.response);
    ASSERT_EQ(cr2.records.size(), 2u);
    EXPECT_EQ(cr2.records[1].asset, "movie.ts");
    EXPECT_EQ(cr2.records[1].seq_base, 65535);
    auto hb2 = std::get<Heartbeat>(decode(*encode(msg(1, hb), kKey), kKey)->body);
    ASSERT_EQ(hb2.progress.size(), 2u);
    EXPECT_EQ(hb2.progress[1].next_packet, 14u);
    auto ho2 = std::get<HandOver>(decode(*encode(msg(1, ho), kKey), kKey)->body);
    EXPECT_EQ(ho2.id, 0x1234u);
    EXPECT_EQ(ho2.at_ns, 5'000'000'000);
    EXPECT_EQ(ho2.part, 1);
    EXPECT_EQ(ho2.parts, 2);
    ASSERT_EQ(ho2.entries.size(), kMaxHandOverEntries);
    EXPECT_EQ(ho2.entries[127].port, 5127);
    EXPECT_EQ(ho2.entries[127].seq, uint16_t(65530 + 127));  // across the wrap
    EXPECT_EQ(ho2.entries[0].client.s_addr, cr.client_ip.s_addr);
    auto hoa = std::get<HandOverAck>(decode(*encode(msg(1, HandOverAck{9, 3, 17}), kKey), kKey)->body);
    EXPECT_EQ(hoa.id, 9u);
    EXPECT_EQ(hoa.part, 3);
    EXPECT_EQ(hoa.accepted, 17);
    // Limits: one part too many flows, a part out of range, a flow without a port.
    ho.entries.push_back({});
    EXPECT_EQ(encode(msg(1, ho), kKey).error().code, EMSGSIZE);
    ho.entries.resize(1);
    ho.part = 2;
    EXPECT_EQ(decode(*encode(msg(1, ho), kKey), kKey).error().code, EBADMSG);
    ho.part = 0;
    ho.entries[0].port = 0;
    EXPECT_EQ(decode(*encode(msg(1, ho), kKey), kKey).error().code, EBADMSG);
    auto ack = std::get<HeartbeatAck>(decode(*encode(msg(1, HeartbeatAck{5, 9, 0xfeedbee5}), kKey), kKey)->body);
    EXPECT_EQ(ack.state, 5);
    EXPECT_EQ(ack.lease_until_ns, 9u);
    EXPECT_EQ(ack.fence_gen, 0xfeedbee5u);
}

TEST(PeerProtocol, FenceTokensNeedTheKeyAndChangeWithEpochAndGeneration) {
    auto t = fence_token(kKey, 7, 1);
    EXPECT_EQ(t, fence_token(kKey, 7, 1));  // the primary computes what the secondary announces
    EXPECT_NE(t, fence_token(kKey, 7, 2));  // each takeover generation has its own
    EXPECT_NE(t, fence_token(kKey, 8, 1));  // and each run of the daemon
    std::vector<uint8_t> other_key(32, 0x11);
    EXPECT_NE(t, fence_token(other_key, 7, 1));
    // Not a prefix of anything sent on the peer paths under the same key.
    auto wire = *encode(msg(1, HeartbeatAck{5, 9, 1}), kKey);
    EXPECT_FALSE(std::search(wire.begin(), wire.end(), t.begin(), t.end()) != wire.end());
}

TEST(PeerProtocol, ForgedOrDamagedMessagesAreRefused) {
    auto wire = *encode(msg(1, StopOrder{1}), kKey);
    std::vector<uint8_t> other_key(32, 0x11);
    EXPECT_EQ(decode(wire, other_key).error().code, EPERM);
    for (size_t i = 0; i < wire.size(); ++i) {  // any flipped bit anywhere
        auto bad = wire;
        bad[i] ^= 0x01;
        auto r = decode(bad, kKey);
        ASSERT_FALSE(r.ok()) << "byte " << i;
    }
    auto truncated = wire;
    truncated.pop_back();
    EXPECT_EQ(decode(truncated, kKey).error().code, EBADMSG);
    EXPECT_EQ(decode(std::vector<uint8_t>(10, 0), kKey).error().code, EBADMSG);
}

TEST(PeerProtocol, ReplayGuard) {
    ReplayGuard g;
    int64_t now = 1'000'000'000'000;
    EXPECT_EQ(g.check(msg(5, StopOrder{}, now), now), ReplayGuard::Verdict::kAccept);
    EXPECT_EQ(g.check(msg(5, StopOrder{}, now), now), ReplayGuard::Verdict::kReplay);
    EXPECT_EQ(g.check(msg(7, StopOrder{}, now), now), ReplayGuard::Verdict::kAccept);
    EXPECT_EQ(g.check(msg(6, StopOrder{}, now), now), ReplayGuard::Verdict::kAccept);  // late but new
    EXPECT_EQ(g.check(msg(6, StopOrder{}, now), now), ReplayGuard::Verdict::kReplay);
    EXPECT_EQ(g.check(msg(200, StopOrder{}, now), now), ReplayGuard::Verdict::kAccept);
    EXPECT_EQ(g.check(msg(100, StopOrder{}, now), now), ReplayGuard::Verdict::kStale);  // out of window
    EXPECT_EQ(g.check(msg(201, StopOrder{}, now + 3'000'000'000), now), ReplayGuard::Verdict::kClockSkew);
    // A new epoch (restart) is accepted only with a later send time.
    Message old_epoch{0x1111, 1, now - 1, StopOrder{}};
    EXPECT_EQ(g.check(old_epoch, now), ReplayGuard::Verdict::kStale);
    Message restarted{0x2222, 1, now + 1, StopOrder{}};
    EXPECT_EQ(g.check(restarted, now), ReplayGuard::Verdict::kAccept);
}

TEST(PeerProtocol, EachPathSignsWithItsOwnKey) {
    auto priv = path_key(kKey, PeerPath::kPrivate), lan = path_key(kKey, PeerPath::kLan);
    EXPECT_EQ(priv.size(), 32u);
    EXPECT_NE(priv, lan);
    EXPECT_NE(priv, kKey);
    EXPECT_EQ(priv, path_key(kKey, PeerPath::kPrivate));  // both servers derive the same
    // A message captured on the stream LAN does not verify on the private path, and back.
    auto on_lan = *encode(msg(1, StopOrder{1}), lan);
    EXPECT_TRUE(decode(on_lan, lan).ok());
    EXPECT_EQ(decode(on_lan, priv).error().code, EPERM);
    std::vector<uint8_t> other(32, 0x11);
    EXPECT_NE(path_key(other, PeerPath::kPrivate), priv);  // another pair's key, another path key
}

TEST(PeerProtocol, LimitsAndKeys) {
    Heartbeat big;
    big.progress.resize(kMaxProgressEntries + 1);
    EXPECT_EQ(encode(msg(1, big), kKey).error().code, EMSGSIZE);
    EXPECT_EQ(encode(msg(1, StopOrder{}), std::vector<uint8_t>(8, 1)).error().code, EINVAL);
    // A reply that does not fit one datagram, or carries too many records, is refused whole.
    ConnReply huge;
    huge.client_port = 1;
    huge.request_end = 1;
    huge.response.assign(1400, 'x');
    EXPECT_EQ(encode(msg(1, huge), kKey).error().code, EMSGSIZE);
    ConnReply many;
    many.client_port = 1;
    many.request_end = 1;
    many.records.resize(kMaxReplyRecords + 1);
    EXPECT_EQ(encode(msg(1, many), kKey).error().code, EMSGSIZE);
    ConnReply nothing;  // names no request: malformed on the way in
    auto w = encode(msg(1, nothing), kKey);
    ASSERT_TRUE(w);
    EXPECT_EQ(decode(*w, kKey).error().code, EBADMSG);
    EXPECT_TRUE(parse_key_hex("00112233445566778899aabbccddeeff\n").ok());
    EXPECT_FALSE(parse_key_hex("0011").ok());
    EXPECT_FALSE(parse_key_hex("zz112233445566778899aabbccddeeff").ok());
}

}  // namespace
