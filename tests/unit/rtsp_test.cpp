// RTSP protocol layer: the request parser and its limits, the header parsers, SDP, and the
// sd-event server over real TCP (in a network namespace of its own when the test may create
// one, else on loopback) with a backend double that records what the protocol layer asked of it.
// The end-to-end tests run the real ffmpeg (and VLC) against the server.
#include <arpa/inet.h>
#include <fcntl.h>
#include <poll.h>
#include <net/if.h>
#include <netinet/in.h>
#include <sched.h>
#include <signal.h>
#include <spawn.h>
#include <sys/ioctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <systemd/sd-event.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <regex>
#include <sstream>
#include <string>
#include <vector>

#include "rtsp/headers.h"
#include "rtsp/message.h"
#include "rtsp/sdp.h"
#include "rtsp/framing.h"
#include "rtsp/server.h"
#include "rtsp/status.h"

extern char** environ;

namespace {

using namespace of::rtsp;

// ------------------------------------------------------------------------------------------
// Parser

struct Parsed {
    std::vector<Request> requests;
    std::vector<ParseError> errors;
    ParseStatus last = ParseStatus::NeedMore;
};

// Feeds `bytes` in chunks of `chunk` bytes, draining the parser after each.
Parsed feed(std::string_view bytes, size_t chunk = SIZE_MAX, const ParserLimits& limits = {}) {
    RequestParser p(limits);
    Parsed out;
    size_t pos = 0;
    while (pos < bytes.size()) {
        size_t n = std::min(chunk, bytes.size() - pos);
        n = std::min(n, p.room());
        if (n == 0) break;
        EXPECT_TRUE(p.append(bytes.substr(pos, n)));
        pos += n;
        for (;;) {
            Request r;
            out.last = p.next(r);
            if (out.last == ParseStatus::Complete) {
                out.requests.push_back(std::move(r));
            } else if (out.last == ParseStatus::Error) {
                out.errors.push_back(p.error());
                if (p.error().fatal) return out;
            } else {
                break;
            }
        }
    }
    return out;
}

const std::string kOptions = "OPTIONS * RTSP/1.0\r\nCSeq: 1\r\n\r\n";

TEST(RtspParser, ParsesOneRequest) {
    auto p = feed("DESCRIBE rtsp://10.0.0.1/movie RTSP/1.0\r\nCSeq: 2\r\nAccept: application/sdp\r\n"
                  "User-Agent: Lavf59.27.100\r\n\r\n");
    ASSERT_EQ(p.requests.size(), 1u);
    const Request& r = p.requests[0];
    EXPECT_EQ(r.method, Method::Describe);
    EXPECT_EQ(r.uri, "rtsp://10.0.0.1/movie");
    EXPECT_EQ(r.cseq, 2u);
    ASSERT_NE(r.header("accept"), nullptr);
    EXPECT_EQ(*r.header("ACCEPT"), "application/sdp");
    EXPECT_EQ(r.header("Session"), nullptr);
    EXPECT_TRUE(p.errors.empty());
}

TEST(RtspParser, HeaderNamesAreCaseInsensitiveAndValuesTrimmed) {
    auto p = feed("SET_PARAMETER rtsp://h/a RTSP/1.0\r\ncseq:   7 \r\ncontent-LENGTH:\t4\r\nsession: abc\r\n\r\nx: y");
    ASSERT_EQ(p.requests.size(), 1u);
    EXPECT_EQ(p.requests[0].cseq, 7u);
    EXPECT_EQ(p.requests[0].body, "x: y");
    EXPECT_EQ(*p.requests[0].header("Session"), "abc");
}

TEST(RtspParser, EveryMethodIsKnown) {
    for (const char* m : {"OPTIONS", "DESCRIBE", "ANNOUNCE", "SETUP", "PLAY", "PAUSE", "TEARDOWN", "GET_PARAMETER",
                          "SET_PARAMETER", "REDIRECT", "RECORD"}) {
        auto p = feed(std::string(m) + " rtsp://h/a RTSP/1.0\r\nCSeq: 1\r\n\r\n");
        ASSERT_EQ(p.requests.size(), 1u) << m;
        EXPECT_EQ(to_string(p.requests[0].method), m);
    }
}

TEST(RtspParser, ByteByByteEqualsWhole) {
    std::string req = "SETUP rtsp://h/a/trackID=1 RTSP/1.0\r\nCSeq: 3\r\nTransport: RTP/AVP;unicast;client_port=5000-5001\r\n"
                      "Content-Length: 5\r\n\r\nhello";
    auto whole = feed(req);
    auto bytes = feed(req, 1);
    ASSERT_EQ(whole.requests.size(), 1u);
    ASSERT_EQ(bytes.requests.size(), 1u);
    EXPECT_EQ(bytes.requests[0].uri, whole.requests[0].uri);
    EXPECT_EQ(bytes.requests[0].body, "hello");
    EXPECT_EQ(bytes.requests[0].headers.size(), whole.requests[0].headers.size());
    // Every split point of two pipelined requests gives the same two requests.
    std::string two = req + kOptions;
    for (size_t chunk = 1; chunk <= two.size(); ++chunk) {
        auto p = feed(two, chunk);
        ASSERT_EQ(p.requests.size(), 2u) << "chunk " << chunk;
        EXPECT_EQ(p.requests[1].method, Method::Options);
        EXPECT_TRUE(p.errors.empty());
    }
}

TEST(RtspParser, PipelinedRequestsComeOutInOrder) {
    std::string s;
    for (int i = 1; i <= 5; ++i) s += "GET_PARAMETER rtsp://h/a RTSP/1.0\r\nCSeq: " + std::to_string(i) + "\r\n\r\n";
    auto p = feed(s);
    ASSERT_EQ(p.requests.size(), 5u);
    for (uint32_t i = 0; i < 5; ++i) EXPECT_EQ(p.requests[i].cseq, i + 1);
    EXPECT_EQ(p.last, ParseStatus::NeedMore);
}

TEST(RtspParser, BodyMayArriveLater) {
    RequestParser p;
    Request r;
    ASSERT_TRUE(p.append("SET_PARAMETER rtsp://h/a RTSP/1.0\r\nCSeq: 1\r\nContent-Length: 10\r\n\r\n01234"));
    EXPECT_EQ(p.next(r), ParseStatus::NeedMore);
    EXPECT_TRUE(p.mid_request());
    ASSERT_TRUE(p.append("56789OPTIONS"));
    ASSERT_EQ(p.next(r), ParseStatus::Complete);
    EXPECT_EQ(r.body, "0123456789");
    EXPECT_EQ(p.next(r), ParseStatus::NeedMore);
    EXPECT_EQ(p.buffered(), 7u);
}

TEST(RtspParser, LeadingEmptyLinesAndBareLfAreAccepted) {
    auto p = feed("\r\n\r\n\nOPTIONS * RTSP/1.0\nCSeq: 9\n\n");
    ASSERT_EQ(p.requests.size(), 1u);
    EXPECT_EQ(p.requests[0].cseq, 9u);
}

ParseError single_error(std::string_view bytes, const ParserLimits& limits = {}, size_t chunk = SIZE_MAX) {
    auto p = feed(bytes, chunk, limits);
    EXPECT_EQ(p.errors.size(), 1u) << bytes;
    return p.errors.empty() ? ParseError{0, "none", std::nullopt, false} : p.errors[0];
}

TEST(RtspParser, MissingOrBadCSeqIs400AndTheConnectionContinues) {
    auto p = feed("OPTIONS * RTSP/1.0\r\nUser-Agent: x\r\n\r\n" + kOptions);
    ASSERT_EQ(p.errors.size(), 1u);
    EXPECT_EQ(p.errors[0].status, 400);
    EXPECT_FALSE(p.errors[0].fatal);
    EXPECT_FALSE(p.errors[0].cseq);
    ASSERT_EQ(p.requests.size(), 1u);  // the next request still parses
    for (const char* bad : {"CSeq: abc", "CSeq: -1", "CSeq: 4294967296", "CSeq: 1 2", "CSeq:"}) {
        auto e = single_error("OPTIONS * RTSP/1.0\r\n" + std::string(bad) + "\r\n\r\n");
        EXPECT_EQ(e.status, 400) << bad;
        EXPECT_FALSE(e.fatal) << bad;
    }
    auto dup = single_error("OPTIONS * RTSP/1.0\r\nCSeq: 1\r\nCSeq: 2\r\n\r\n");
    EXPECT_EQ(dup.status, 400);
    EXPECT_FALSE(dup.cseq);
}

TEST(RtspParser, UnknownMethodIs501WithCSeq) {
    auto p = feed("PING rtsp://h/a RTSP/1.0\r\nCSeq: 4\r\nContent-Length: 3\r\n\r\nabc" + kOptions);
    ASSERT_EQ(p.errors.size(), 1u);
    EXPECT_EQ(p.errors[0].status, 501);
    EXPECT_FALSE(p.errors[0].fatal);
    EXPECT_EQ(p.errors[0].cseq, 4u);
    ASSERT_EQ(p.requests.size(), 1u);  // its body was skipped, the next request parses
    EXPECT_EQ(single_error("options * RTSP/1.0\r\nCSeq: 1\r\n\r\n").status, 501);  // methods are case-sensitive
}

TEST(RtspParser, OtherVersionsAre505NonRtspIs400) {
    auto e = single_error("OPTIONS * RTSP/2.0\r\nCSeq: 1\r\n\r\n");
    EXPECT_EQ(e.status, 505);
    EXPECT_FALSE(e.fatal);
    EXPECT_EQ(e.cseq, 1u);
    EXPECT_EQ(single_error("GET / HTTP/1.1\r\nHost: x\r\n\r\n").status, 400);
    EXPECT_EQ(single_error("OPTIONS * RTSP/1.x\r\nCSeq: 1\r\n\r\n").status, 400);
}

TEST(RtspParser, MalformedLinesAreFatal400) {
    const char* cases[] = {
        "OPTIONS  * RTSP/1.0\r\nCSeq: 1\r\n\r\n",              // two spaces
        "OPTIONS *\r\nCSeq: 1\r\n\r\n",                         // no version
        "OPTIONS * RTSP/1.0 x\r\nCSeq: 1\r\n\r\n",              // four words
        "OPT(ONS * RTSP/1.0\r\nCSeq: 1\r\n\r\n",                // method not a token
        "OPTIONS *\tRTSP/1.0\r\nCSeq: 1\r\n\r\n",               // tab in request line
        "OPTIONS rtsp://h/\xc3\xa9 RTSP/1.0\r\nCSeq: 1\r\n\r\n",  // non-ASCII URI
        "OPTIONS * RTSP/1.0\r\nCSeq: 1\r\nNoColon\r\n\r\n",
        "OPTIONS * RTSP/1.0\r\nCSeq: 1\r\nBad Name: x\r\n\r\n",
        "OPTIONS * RTSP/1.0\r\nCSeq : 1\r\n\r\n",
        "OPTIONS * RTSP/1.0\r\nCSeq: 1\r\nX: a\r\n folded\r\n\r\n",
        "OPTIONS * RTSP/1.0\r\nCSeq: 1\r\nX: a\rb\r\n\r\n",     // bare CR
        "OPTIONS * RTSP/1.0\r\nCSeq: 1\r\nX: a\x01\r\n\r\n",    // control byte
        "\rOPTIONS * RTSP/1.0\r\nCSeq: 1\r\n\r\n",              // bare CR before request
        "SET_PARAMETER * RTSP/1.0\r\nCSeq: 1\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx",
        "SET_PARAMETER * RTSP/1.0\r\nCSeq: 1\r\nContent-Length: -1\r\n\r\n",
        "SET_PARAMETER * RTSP/1.0\r\nCSeq: 1\r\nContent-Length: 1x\r\n\r\n",
        ": x\r\nCSeq: 1\r\n\r\n",
    };
    for (const char* c : cases) {
        auto e = single_error(c);
        EXPECT_EQ(e.status, 400) << c;
        EXPECT_TRUE(e.fatal) << c;
    }
    static const char kNul[] = "OPTIONS * RTSP/1.0\r\nCSeq: 1\r\nX: a\0b\r\n\r\n";
    std::string nul(kNul, sizeof kNul - 1);
    EXPECT_EQ(single_error(nul).status, 400);
    // A fatal error echoes a CSeq seen before the bad line.
    EXPECT_EQ(single_error("OPTIONS * RTSP/1.0\r\nCSeq: 12\r\nNoColon\r\n\r\n").cseq, 12u);
}

TEST(RtspParser, AfterAFatalErrorEverythingIsRefused) {
    RequestParser p;
    Request r;
    ASSERT_TRUE(p.append("BAD LINE\r\n\r\n"));
    ASSERT_EQ(p.next(r), ParseStatus::Error);
    EXPECT_TRUE(p.error().fatal);
    EXPECT_EQ(p.room(), 0u);
    EXPECT_FALSE(p.append(kOptions));
    EXPECT_EQ(p.next(r), ParseStatus::Error);
}

TEST(RtspParser, EveryLimitIsEnforced) {
    ParserLimits l;
    l.max_head_bytes = 512;
    l.max_line_bytes = 200;
    l.max_uri_bytes = 100;
    l.max_headers = 5;
    l.max_body_bytes = 64;

    // Head: many short header lines within the count limit but over the byte limit.
    ParserLimits many = l;
    many.max_headers = 1000;
    std::string head = "OPTIONS * RTSP/1.0\r\nCSeq: 1\r\n";
    while (head.size() < 600) head += "X-Pad: 0123456789012345678901234567890123456789\r\n";
    head += "\r\n";
    auto e = single_error(head, many);
    EXPECT_EQ(e.status, 413);
    EXPECT_TRUE(e.fatal);
    EXPECT_EQ(single_error(head, many, 1).status, 413);  // also when it trickles in

    // Line length, complete and incomplete.
    std::string long_line = "OPTIONS * RTSP/1.0\r\nCSeq: 1\r\nX: " + std::string(250, 'a') + "\r\n\r\n";
    EXPECT_EQ(single_error(long_line, l).status, 413);
    EXPECT_EQ(single_error("OPTIONS * RTSP/1.0\r\nX: " + std::string(250, 'a'), l).status, 413);

    // URI: within the line limit it is a framed, non-fatal 414; in an overlong line, fatal 414.
    auto u = single_error("DESCRIBE rtsp://h/" + std::string(120, 'a') + " RTSP/1.0\r\nCSeq: 5\r\n\r\n", l);
    EXPECT_EQ(u.status, 414);
    EXPECT_FALSE(u.fatal);
    EXPECT_EQ(u.cseq, 5u);
    auto u2 = single_error("DESCRIBE rtsp://h/" + std::string(300, 'a'), l);
    EXPECT_EQ(u2.status, 414);
    EXPECT_TRUE(u2.fatal);

    // Header count.
    std::string hdrs = "OPTIONS * RTSP/1.0\r\nCSeq: 1\r\n";
    for (int i = 0; i < 5; ++i) hdrs += "X: y\r\n";
    EXPECT_EQ(single_error(hdrs + "\r\n", l).status, 413);
    std::string ok = "OPTIONS * RTSP/1.0\r\nCSeq: 1\r\n";
    for (int i = 0; i < 4; ++i) ok += "X: y\r\n";
    EXPECT_EQ(feed(ok + "\r\n", SIZE_MAX, l).requests.size(), 1u);  // exactly at the limit

    // Body.
    auto b = single_error("SET_PARAMETER * RTSP/1.0\r\nCSeq: 1\r\nContent-Length: 65\r\n\r\n", l);
    EXPECT_EQ(b.status, 413);
    EXPECT_TRUE(b.fatal);
    EXPECT_EQ(single_error("SET_PARAMETER * RTSP/1.0\r\nCSeq: 1\r\nContent-Length: 99999999999999999999\r\n\r\n", l).status,
              413);
    EXPECT_EQ(feed("SET_PARAMETER * RTSP/1.0\r\nCSeq: 1\r\nContent-Length: 64\r\n\r\n" + std::string(64, 'b'), SIZE_MAX, l)
                  .requests.size(),
              1u);

    // The buffer itself: append never takes more than one request at the limits.
    RequestParser p(l);
    EXPECT_EQ(p.room(), l.max_head_bytes + l.max_body_bytes);
    EXPECT_FALSE(p.append(std::string(p.room() + 1, 'x')));
    EXPECT_EQ(p.buffered(), 0u);
}

TEST(RtspParser, GarbageNeverCompletes) {
    std::string junk;
    uint32_t x = 12345;
    for (int i = 0; i < 20000; ++i) {
        x = x * 1103515245 + 12345;
        junk.push_back(char(x >> 16));
    }
    auto p = feed(junk, 97);
    EXPECT_TRUE(p.requests.empty());
    ASSERT_FALSE(p.errors.empty());
    EXPECT_TRUE(p.errors.back().fatal);
}

TEST(RtspResponse, SerializesAndStripsInjectedLines) {
    Response r(454);
    r.header("Unsupported", "evil\r\nSet-Cookie: x");
    std::string s = r.serialize(7);
    EXPECT_EQ(s, "RTSP/1.0 454 Session Not Found\r\nCSeq: 7\r\nUnsupported: evilSet-Cookie: x\r\n\r\n");
    Response d(200);
    d.body("application/sdp", "v=0\r\n");
    EXPECT_EQ(d.serialize(std::nullopt),
              "RTSP/1.0 200 OK\r\nContent-Type: application/sdp\r\nContent-Length: 5\r\n\r\nv=0\r\n");
}

TEST(RtspStatus, ErrorCodesMapToStatuses) {
    auto st = [](int code) { return rtsp_status_for(of::make_error(code, "x")); };
    EXPECT_EQ(st(ENOENT), 404);
    EXPECT_EQ(st(ESRCH), 454);
    EXPECT_EQ(st(ENOSPC), 453);
    EXPECT_EQ(st(EDQUOT), 453);
    EXPECT_EQ(st(EINVAL), 400);
    EXPECT_EQ(st(ENOTSUP), 461);
    EXPECT_EQ(st(EBADFD), 455);
    EXPECT_EQ(st(ERANGE), 457);
    EXPECT_EQ(st(EPERM), 403);
    EXPECT_EQ(st(EIO), 500);
    EXPECT_EQ(reason_phrase(461), "Unsupported transport");
    EXPECT_EQ(reason_phrase(299), "Unknown");
}

// ------------------------------------------------------------------------------------------
// Header values

TEST(RtspTransport, RtpUnicast) {
    auto t = negotiate_transport("RTP/AVP;unicast;client_port=5000-5001");
    ASSERT_TRUE(t.ok()) << t.error().message;
    EXPECT_EQ(t->kind, TransportKind::RtpAvp);
    EXPECT_FALSE(t->lower_explicit);
    EXPECT_EQ(t->client_port_lo, 5000);
    EXPECT_EQ(t->client_port_hi, 5001);
    EXPECT_EQ(format_transport(*t, {6970, 6971, 0x1a2b3c4du}),
              "RTP/AVP;unicast;client_port=5000-5001;server_port=6970-6971;ssrc=1A2B3C4D");
    auto u = negotiate_transport("rtp/avp/udp; unicast; client_port=5002");
    ASSERT_TRUE(u.ok());
    EXPECT_TRUE(u->lower_explicit);
    EXPECT_EQ(u->client_port_hi, 5002);
    EXPECT_EQ(format_transport(*u, {}), "RTP/AVP/UDP;unicast;client_port=5002");
}

TEST(RtspTransport, RawAndCableMp2t) {
    auto raw = negotiate_transport("RAW/RAW/UDP;unicast;client_port=31000");
    ASSERT_TRUE(raw.ok());
    EXPECT_EQ(raw->kind, TransportKind::RawUdp);
    EXPECT_EQ(format_transport(*raw, {7000, 0, std::nullopt}), "RAW/RAW/UDP;unicast;client_port=31000;server_port=7000");
    auto cable = negotiate_transport("MP2T/H2221/UDP;unicast;destination=10.1.2.3;client_port=6000");
    ASSERT_TRUE(cable.ok());
    EXPECT_EQ(cable->kind, TransportKind::Mp2tUdp);
    EXPECT_EQ(cable->destination, "10.1.2.3");
    EXPECT_EQ(format_transport(*cable, {}), "MP2T/H2221/UDP;unicast;destination=10.1.2.3;client_port=6000");
    EXPECT_TRUE(negotiate_transport("RTP/AVP;unicast;client_port=5000-5001;mode=\"PLAY\"").ok());
}

TEST(RtspTransport, TcpMulticastRecordAreRefusedWith461) {
    for (const char* t : {"RTP/AVP/TCP;unicast;interleaved=0-1", "RTP/AVP;unicast;interleaved=0-1",
                          "RAW/RAW/TCP;unicast;client_port=5000", "RTP/AVP;multicast;client_port=5000-5001",
                          "RTP/AVP;unicast;client_port=5000-5001;mode=record", "RTP/SAVP;unicast;client_port=5000-5001",
                          "x-pn-tng/udp;client_port=5000", "RTP/AVP;unicast"}) {
        auto r = negotiate_transport(t);
        ASSERT_FALSE(r.ok()) << t;
        EXPECT_EQ(r.error().code, ENOTSUP) << t;
        EXPECT_EQ(rtsp_status_for(r.error()), 461) << t;
    }
}

TEST(RtspTransport, FirstAcceptableAlternativeWins) {
    auto t = negotiate_transport("RTP/AVP/TCP;unicast;interleaved=0-1,RAW/RAW/UDP;unicast;client_port=4000,"
                                 "RTP/AVP;unicast;client_port=4002-4003");
    ASSERT_TRUE(t.ok());
    EXPECT_EQ(t->kind, TransportKind::RawUdp);
    EXPECT_EQ(t->client_port_lo, 4000);
}

TEST(RtspTransport, MalformedIs400) {
    for (const char* t : {"", "RTP", "RTP/AVP/UDP/X;client_port=1", "RTP/AVP;client_port=0", "RTP/AVP;client_port=65536",
                          "RTP/AVP;client_port=abc", "RTP/AVP;client_port=5001-5000", "RTP/AVP;client_port=5000-5003",
                          "RTP/AVP;client_port=", "RTP/AVP;client_port=-5", "RTP/AVP;client_port=5000-",
                          "RTP/AVP;destination=a b;client_port=5000", "RTP/AVP;bad name=1;client_port=5000",
                          "RTP//AVP;client_port=5000", "RTP/AVP;client_port=5000,", "RTP/AVP;client_port=123456"}) {
        auto r = negotiate_transport(t);
        ASSERT_FALSE(r.ok()) << t;
        EXPECT_EQ(r.error().code, EINVAL) << t;
    }
    std::string many;
    for (int i = 0; i < 9; ++i) many += (i ? "," : "") + std::string("RTP/AVP;client_port=5000");
    EXPECT_EQ(negotiate_transport(many).error().code, EINVAL);
    std::string params = "RTP/AVP";
    for (int i = 0; i < 17; ++i) params += ";unicast";
    EXPECT_EQ(negotiate_transport(params + ";client_port=5000").error().code, EINVAL);
}

constexpr int64_t kSec = 1'000'000'000;

TEST(RtspRange, NptForms) {
    auto r = parse_range("npt=0-");
    ASSERT_TRUE(r.ok());
    EXPECT_EQ(r->start_ns, 0);
    EXPECT_FALSE(r->end_ns);
    r = parse_range("npt=10.5-20");
    ASSERT_TRUE(r.ok());
    EXPECT_EQ(r->start_ns, 10 * kSec + kSec / 2);
    EXPECT_EQ(r->end_ns, 20 * kSec);
    r = parse_range("npt=now-");
    ASSERT_TRUE(r.ok());
    EXPECT_FALSE(r->start_ns);
    r = parse_range("npt=-30");
    ASSERT_TRUE(r.ok());
    EXPECT_FALSE(r->start_ns);
    EXPECT_EQ(r->end_ns, 30 * kSec);
    r = parse_range("npt=01:02:03.25-1:02:04");
    ASSERT_TRUE(r.ok());
    EXPECT_EQ(r->start_ns, 3723 * kSec + kSec / 4);
    EXPECT_EQ(r->end_ns, 3724 * kSec);
    r = parse_range(" NPT = 12.-13.123456789 ");
    ASSERT_TRUE(r.ok());
    EXPECT_EQ(r->start_ns, 12 * kSec);
    EXPECT_EQ(r->end_ns, 13 * kSec + 123456789);
    r = parse_range("npt=999999999.999999999-");
    ASSERT_TRUE(r.ok());
    EXPECT_EQ(format_npt_range(10 * kSec + 1'500'000, 600 * kSec), "npt=10.001-600.000");
    EXPECT_EQ(format_npt_range(0, std::nullopt), "npt=0.000-");
}

TEST(RtspRange, BadRanges) {
    for (const char* s : {"", "npt", "npt=", "npt=-", "npt=abc-", "npt=1", "npt=1:60:00-", "npt=1:00:60-", "npt=1:2-",
                          "npt=0-now", "npt=1.1234567890-", "npt=1000000000-", "npt=+1-", "npt=1-2-3", "npt=1e3-",
                          "=0-", "n pt=0-"}) {
        auto r = parse_range(s);
        ASSERT_FALSE(r.ok()) << s;
        EXPECT_EQ(r.error().code, EINVAL) << s;
    }
    EXPECT_EQ(parse_range("smpte=10:07:00-").error().code, ENOTSUP);
    EXPECT_EQ(parse_range("clock=19961108T142300Z-").error().code, ENOTSUP);
    EXPECT_EQ(parse_range("npt=10-;time=19970123T143720Z").error().code, ENOTSUP);
    EXPECT_EQ(parse_range("npt=20-10").error().code, ERANGE);
}

TEST(RtspSession, HeaderForms) {
    auto s = parse_session("A1b2$-_.+;timeout=60");
    ASSERT_TRUE(s.ok());
    EXPECT_EQ(s->id, "A1b2$-_.+");
    EXPECT_EQ(s->timeout_s, 60u);
    s = parse_session(" 12345678 ");
    ASSERT_TRUE(s.ok());
    EXPECT_FALSE(s->timeout_s);
    for (const char* bad : {"", ";timeout=5", "a b", "a/b", "abc;timeout=x", "abc;timeout=", "abc;timeout=99999999999",
                            "abc;=1", "a;b;c;d;e;f"}) {
        EXPECT_FALSE(parse_session(bad).ok()) << bad;
    }
    EXPECT_TRUE(valid_session_id(std::string(64, 'a')));
    EXPECT_FALSE(valid_session_id(std::string(65, 'a')));
    EXPECT_EQ(format_session("abc", 60), "abc;timeout=60");
}

TEST(RtspUri, AssetAndControl) {
    auto u = parse_request_uri("rtsp://10.0.0.1:8554/movie.ts");
    ASSERT_TRUE(u.ok());
    EXPECT_EQ(u->host, "10.0.0.1");
    EXPECT_EQ(u->port, 8554);
    EXPECT_EQ(u->asset, "movie.ts");
    EXPECT_FALSE(u->track);
    EXPECT_FALSE(u->raw_udp);
    EXPECT_EQ(content_base(*u, "x"), "rtsp://10.0.0.1:8554/movie.ts/");

    struct Case { const char* uri; const char* asset; std::optional<uint32_t> track; bool raw; };
    for (const Case& c : {Case{"rtsp://h/a/trackID=1", "a", 1, false}, Case{"RTSP://h/a/track2", "a", 2, false},
                          Case{"rtsp://h/a/streamid=0", "a", 0, false}, Case{"rtsp://h/a/stream=3", "a", 3, false},
                          Case{"rtsp://h/a/", "a", std::nullopt, false}, Case{"rtsp://h/a?transport=raw", "a", std::nullopt, true},
                          Case{"rtsp://h/a/?transport=raw&x=1", "a", std::nullopt, true},
                          Case{"rtsp://h/a/trackID=1?transport=rtp", "a", 1, false}, Case{"/a", "a", std::nullopt, false},
                          Case{"rtsp://user:pw@h/%41sset", "Asset", std::nullopt, false},
                          Case{"rtsp://[::1]:554/A-b_c~d.ts", "A-b_c~d.ts", std::nullopt, false},
                          Case{"rtsp://h", "", std::nullopt, false}, Case{"rtsp://h/", "", std::nullopt, false}}) {
        auto r = parse_request_uri(c.uri);
        ASSERT_TRUE(r.ok()) << c.uri << ": " << r.error().message;
        EXPECT_EQ(r->asset, c.asset) << c.uri;
        EXPECT_EQ(r->track, c.track) << c.uri;
        EXPECT_EQ(r->raw_udp, c.raw) << c.uri;
    }
    auto star = parse_request_uri("*");
    ASSERT_TRUE(star.ok());
    EXPECT_TRUE(star->star);
    auto v6 = parse_request_uri("rtsp://[fe80::1]/x");
    ASSERT_TRUE(v6.ok());
    EXPECT_EQ(content_base(*v6, "y"), "rtsp://[fe80::1]/x/");
    auto rel = parse_request_uri("/x");
    EXPECT_EQ(content_base(*rel, "10.0.0.1:554"), "rtsp://10.0.0.1:554/x/");
}

TEST(RtspUri, NamesThatCannotBeAssetsAre404MalformedIs400) {
    for (const char* nf : {"rtsp://h/%2e%2e", "rtsp://h/..", "rtsp://h/.hidden", "rtsp://h/a%2Fb", "rtsp://h/a/b/c",
                           "rtsp://h/a/foo", "rtsp://h//a", "rtsp://h/a%00", "rtsp://h/a%20b", "rtsp://h/a/trackID=x"}) {
        auto r = parse_request_uri(nf);
        ASSERT_FALSE(r.ok()) << nf;
        EXPECT_EQ(r.error().code, ENOENT) << nf;
    }
    EXPECT_EQ(parse_request_uri("rtsp://h/" + std::string(129, 'a')).error().code, ENOENT);
    EXPECT_TRUE(parse_request_uri("rtsp://h/" + std::string(128, 'a')).ok());
    for (const char* bad : {"", "movie", "http://h/a", "rtsp://h:99999/a", "rtsp://h:0/a", "rtsp://h:x/a", "rtsp://h/a#f",
                            "rtsp://h/%zz", "rtsp://h/a%4", "rtsp://[::1/a", "rtsp://h_x/a", "rtsp://h/a b",
                            "rtsp://h/a?transport=tcp", "rtsp:///a", "rtsp://[]/a"}) {
        auto r = parse_request_uri(bad);
        ASSERT_FALSE(r.ok()) << bad;
        EXPECT_EQ(r.error().code, EINVAL) << bad;
    }
}

TEST(RtspSdp, RtpAndRawMediaLines) {
    SdpParams p;
    p.asset = "movie";
    p.origin_address = "10.0.0.1";
    p.session_id = 42;
    p.duration_ns = 5400 * kSec + 250'000'000;
    p.bitrate_bps = 3'750'000;
    std::string s = build_sdp(p);
    EXPECT_EQ(s.rfind("v=0\r\n", 0), 0u);
    for (const char* line : {"o=- 42 42 IN IP4 10.0.0.1\r\n", "s=movie\r\n", "c=IN IP4 0.0.0.0\r\n", "t=0 0\r\n",
                             "a=control:*\r\n", "a=range:npt=0-5400.250\r\n", "m=video 0 RTP/AVP 33\r\n", "b=AS:3750\r\n",
                             "a=rtpmap:33 MP2T/90000\r\n", "a=control:trackID=1\r\n"})
        EXPECT_NE(s.find(line), std::string::npos) << line << " in\n" << s;
    p.raw_udp = true;
    p.duration_ns = 0;
    p.bitrate_bps = 0;
    s = build_sdp(p);
    EXPECT_NE(s.find("m=video 0 udp 33\r\n"), std::string::npos);
    EXPECT_NE(s.find("a=range:npt=0-\r\n"), std::string::npos);
    EXPECT_EQ(s.find("b=AS"), std::string::npos);
}

// ------------------------------------------------------------------------------------------
// Server over TCP

// Moves the calling thread into a fresh network namespace with loopback up, and back on
// destruction: the servers, clients and child players of a test see no other traffic. Without
// the privilege for it the tests use the host's loopback with ephemeral ports.
class PrivateNetns {
public:
    PrivateNetns() {
        saved_ = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
        if (saved_ < 0 || unshare(CLONE_NEWNET) != 0) {
            why_ = std::string("no private network namespace (") + std::strerror(errno) + "), using host loopback";
            return;
        }
        entered_ = true;
        int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        ifreq ifr{};
        std::strncpy(ifr.ifr_name, "lo", IFNAMSIZ - 1);
        if (s >= 0 && ioctl(s, SIOCGIFFLAGS, &ifr) == 0) {
            ifr.ifr_flags |= IFF_UP;
            ioctl(s, SIOCSIFFLAGS, &ifr);
        }
        if (s >= 0) close(s);
    }
    ~PrivateNetns() {
        // The namespace disappears with its last socket once the thread has left it.
        if (entered_) setns(saved_, CLONE_NEWNET);
        if (saved_ >= 0) close(saved_);
    }
    const std::string& why_not() const { return why_; }

private:
    int saved_ = -1;
    bool entered_ = false;
    std::string why_;
};

// The backend double: records every call and keeps just enough state to produce the errors a
// streaming engine would (unknown asset, stream limit, unknown session, wrong state, range).
class RecordingBackend : public SessionBackend {
public:
    enum class State { Ready, Playing, Paused };
    struct Sess {
        std::string asset;
        Transport transport;
        sockaddr_in client{};
        State state = State::Ready;
    };

    std::vector<std::string> calls;
    std::map<std::string, AssetDescription> assets{{"movie", {600 * kSec, 3'750'000, 7}}};
    size_t stream_limit = 100;
    std::map<std::string, Sess> sessions;
    std::optional<SetupRequest> last_setup;
    std::optional<std::optional<Range>> last_range;
    int next_id = 1;

    size_t count(const std::string& prefix) const {
        size_t n = 0;
        for (const auto& c : calls) n += c.rfind(prefix, 0) == 0;
        return n;
    }

    of::Result<AssetDescription> describe(const std::string& asset) override {
        calls.push_back("DESCRIBE " + asset);
        auto it = assets.find(asset);
        if (it == assets.end()) return of::make_error(ENOENT, "no asset " + asset);
        return it->second;
    }
    of::Result<SetupReply> setup(const SetupRequest& req) override {
        calls.push_back("SETUP " + req.asset + " " + std::string(transport_name(req.transport.kind)) + " " +
                        std::to_string(ntohs(req.client_addr.sin_port)));
        last_setup = req;
        if (!assets.count(req.asset)) return of::make_error(ENOENT, "no asset");
        std::string id = req.session;
        if (id.empty()) {
            if (sessions.size() >= stream_limit) return of::make_error(ENOSPC, "MPEG_Stream_Count_Limit reached");
            id = "9f3c" + std::to_string(next_id++) + "a7e1";
        }
        sessions[id] = Sess{req.asset, req.transport, req.client_addr, State::Ready};
        SetupReply r;
        r.session = id;
        r.server_port_lo = server_port;
        r.server_port_hi = uint16_t(server_port + 1);
        r.ssrc = 0x11223344u;
        return r;
    }
    of::Result<PlayReply> play(const std::string& id, const std::optional<Range>& range) override {
        calls.push_back("PLAY " + id + (range && range->start_ns ? " " + format_npt_seconds(*range->start_ns) : ""));
        last_range = range;
        auto it = sessions.find(id);
        if (it == sessions.end()) return of::make_error(ESRCH, "no session");
        const int64_t duration = assets[it->second.asset].duration_ns;
        if (range && range->start_ns && *range->start_ns >= duration) return of::make_error(ERANGE, "past the end");
        it->second.state = State::Playing;
        PlayReply r;
        // Entered at the random-access point at or before the start (one every 2 s here).
        r.start_ns = range && range->start_ns ? *range->start_ns / (2 * kSec) * (2 * kSec) : 0;
        r.end_ns = duration;
        r.rtp_seq = 1000;
        r.rtp_time = 90000;
        on_play(id, it->second);
        return r;
    }
    of::Status pause(const std::string& id) override {
        calls.push_back("PAUSE " + id);
        auto it = sessions.find(id);
        if (it == sessions.end()) return of::make_error(ESRCH, "no session");
        if (it->second.state != State::Playing) return of::make_error(EBADFD, "not playing");
        it->second.state = State::Paused;
        return {};
    }
    of::Status teardown(const std::string& id) override {
        calls.push_back("TEARDOWN " + id);
        if (!sessions.erase(id)) return of::make_error(ESRCH, "no session");
        on_teardown(id);
        return {};
    }

protected:
    virtual void on_play(const std::string&, const Sess&) {}
    virtual void on_teardown(const std::string&) {}
    uint16_t server_port = 6970;
};

struct Reply {
    int status = 0;
    std::map<std::string, std::string> headers;  // lower-case names
    std::string body;
    std::string h(const std::string& name) const {
        auto it = headers.find(name);
        return it == headers.end() ? "" : it->second;
    }
};

std::string lower(std::string s) {
    for (char& c : s) c = char(std::tolower(static_cast<unsigned char>(c)));
    return s;
}

// A non-blocking client socket; the test thread runs the server's loop between its steps.
class TestClient {
public:
    explicit TestClient(uint16_t port, int rcvbuf = 0, const char* source = nullptr) {
        fd_ = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (rcvbuf) setsockopt(fd_, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);
        if (source) {  // another viewer: any 127/8 address is local on loopback
            sockaddr_in src{};
            src.sin_family = AF_INET;
            inet_pton(AF_INET, source, &src.sin_addr);
            bind(fd_, reinterpret_cast<sockaddr*>(&src), sizeof src);
        }
        sockaddr_in a{};
        a.sin_family = AF_INET;
        a.sin_port = htons(port);
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        // The kernel completes the handshake from the listen backlog; accepting comes later.
        connected_ = connect(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
        fcntl(fd_, F_SETFL, fcntl(fd_, F_GETFL) | O_NONBLOCK);
    }
    ~TestClient() { close(fd_); }
    bool connected() const { return connected_; }

    // Queues bytes; push() sends what the socket takes now.
    void send(std::string_view s) { out_.append(s); push(); }
    void push() {
        while (!out_.empty()) {
            ssize_t n = ::send(fd_, out_.data(), out_.size(), MSG_NOSIGNAL);
            if (n <= 0) break;
            out_.erase(0, size_t(n));
        }
    }
    size_t unsent() const { return out_.size(); }
    void read_available() {
        char buf[65536];
        for (;;) {
            ssize_t n = recv(fd_, buf, sizeof buf, 0);
            if (n > 0) {
                in_.append(buf, size_t(n));
                continue;
            }
            if (n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK)) eof_ = true;
            break;
        }
    }
    bool eof() const { return eof_; }
    // One complete reply from what was read, if there is one.
    std::optional<Reply> take_reply() {
        size_t end = in_.find("\r\n\r\n");
        if (end == std::string::npos) return std::nullopt;
        Reply r;
        std::istringstream head(in_.substr(0, end));
        std::string line;
        std::getline(head, line);
        if (line.rfind("RTSP/1.0 ", 0) != 0) return std::nullopt;
        r.status = std::atoi(line.c_str() + 9);
        while (std::getline(head, line)) {
            if (!line.empty() && line.back() == '\r') line.pop_back();
            size_t colon = line.find(':');
            if (colon == std::string::npos) continue;
            std::string v = line.substr(colon + 1);
            v.erase(0, v.find_first_not_of(' '));
            r.headers[lower(line.substr(0, colon))] = v;
        }
        size_t len = size_t(std::atoi(r.h("content-length").c_str()));
        if (in_.size() < end + 4 + len) return std::nullopt;
        r.body = in_.substr(end + 4, len);
        in_.erase(0, end + 4 + len);
        return r;
    }
    int fd() const { return fd_; }

private:
    int fd_ = -1;
    bool connected_ = false;
    bool eof_ = false;
    std::string out_, in_;
};

std::string req(const std::string& method, const std::string& uri, int cseq, const std::string& headers = "") {
    return method + " " + uri + " RTSP/1.0\r\nCSeq: " + std::to_string(cseq) + "\r\n" + headers + "\r\n";
}

class RtspServerTest : public ::testing::Test {
protected:
    void SetUp() override {
        netns_ = std::make_unique<PrivateNetns>();
        if (!netns_->why_not().empty()) std::cerr << "note: " << netns_->why_not() << "\n";
        ASSERT_GE(sd_event_new(&loop_), 0);
    }
    void TearDown() override {
        server_.reset();
        if (listen_fd_ >= 0) close(listen_fd_);
        sd_event_unref(loop_);
        netns_.reset();
    }

    void start(Limits limits = {}, int sndbuf = 0) {
        sockaddr_in a{};
        a.sin_family = AF_INET;
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        auto fd = listen_tcp(a);
        ASSERT_TRUE(fd.ok()) << fd.error().message;
        listen_fd_ = *fd;
        // Accepted sockets inherit the listener's buffer sizes.
        if (sndbuf) setsockopt(listen_fd_, SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof sndbuf);
        auto s = RtspServer::create(loop_, listen_fd_, *backend_, limits);
        ASSERT_TRUE(s.ok()) << s.error().message;
        server_ = std::move(*s);
        port_ = server_->port();
        ASSERT_NE(port_, 0);
        base_ = "rtsp://127.0.0.1:" + std::to_string(port_) + "/";
    }

    // Runs the loop until `done` holds or `seconds` pass (then false).
    bool pump_until(const std::function<bool()>& done, double seconds = 10) {
        auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
        while (!done()) {
            if (std::chrono::steady_clock::now() > deadline) return false;
            sd_event_run(loop_, 5'000);
        }
        return true;
    }
    // Runs the loop for `seconds` whatever happens (to show that something does NOT happen).
    void pump_for(double seconds, const std::function<void()>& each = {}) {
        auto end = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
        while (std::chrono::steady_clock::now() < end) {
            sd_event_run(loop_, 5'000);
            if (each) each();
        }
    }
    Reply wait_reply(TestClient& c) {
        std::optional<Reply> r;
        bool ok = pump_until([&] {
            c.push();
            c.read_available();
            r = c.take_reply();
            return r.has_value() || c.eof();
        });
        if (!r) r = c.take_reply();
        EXPECT_TRUE(ok && r) << "no reply";
        return r.value_or(Reply{});
    }
    Reply ask(TestClient& c, const std::string& text) {
        c.send(text);
        return wait_reply(c);
    }
    bool closed_by_server(TestClient& c, double seconds = 10) {
        return pump_until([&] {
            c.read_available();
            return c.eof();
        }, seconds);
    }
    // SETUP + the session id.
    std::string setup(TestClient& c, int cseq, const std::string& transport = "RTP/AVP;unicast;client_port=5000-5001") {
        Reply r = ask(c, req("SETUP", base_ + "movie/trackID=1", cseq, "Transport: " + transport + "\r\n"));
        EXPECT_EQ(r.status, 200);
        std::string s = r.h("session");
        return s.substr(0, s.find(';'));
    }

    std::unique_ptr<PrivateNetns> netns_;
    sd_event* loop_ = nullptr;
    std::unique_ptr<RecordingBackend> backend_ = std::make_unique<RecordingBackend>();
    int listen_fd_ = -1;
    std::unique_ptr<RtspServer> server_;
    uint16_t port_ = 0;
    std::string base_;
};

TEST_F(RtspServerTest, CreateRefusesBadArguments) {
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    Limits zero;
    zero.max_output_bytes = 0;
    auto r = RtspServer::create(loop_, a, *backend_, zero);
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.error().code, EINVAL);
    Limits no_timeout;
    no_timeout.request_timeout_usec = 0;
    EXPECT_EQ(RtspServer::create(loop_, a, *backend_, no_timeout).error().code, EINVAL);
    int udp = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);  // not a listening socket
    EXPECT_EQ(RtspServer::create(loop_, udp, *backend_).error().code, EINVAL);
    close(udp);
    EXPECT_EQ(RtspServer::create(nullptr, a, *backend_).error().code, EINVAL);
    auto ok = RtspServer::create(loop_, a, *backend_);  // its own socket on a free port
    ASSERT_TRUE(ok.ok()) << ok.error().message;
    EXPECT_NE((*ok)->port(), 0);
}

TEST_F(RtspServerTest, OptionsListsTheMethods) {
    start();
    TestClient c(port_);
    Reply r = ask(c, req("OPTIONS", "*", 1, "User-Agent: test\r\n"));
    EXPECT_EQ(r.status, 200);
    EXPECT_EQ(r.h("cseq"), "1");
    EXPECT_EQ(r.h("public"), "OPTIONS, DESCRIBE, SETUP, PLAY, PAUSE, TEARDOWN, GET_PARAMETER, SET_PARAMETER");
    EXPECT_EQ(server_->counters().connections_accepted, 1u);
    EXPECT_EQ(server_->counters().responses.at(200), 1u);
}

TEST_F(RtspServerTest, RtpSessionFromDescribeToTeardown) {
    start();
    TestClient c(port_);
    Reply d = ask(c, req("DESCRIBE", base_ + "movie", 1, "Accept: application/sdp\r\n"));
    ASSERT_EQ(d.status, 200);
    EXPECT_EQ(d.h("content-type"), "application/sdp");
    EXPECT_EQ(d.h("content-base"), base_ + "movie/");
    EXPECT_NE(d.body.find("m=video 0 RTP/AVP 33\r\n"), std::string::npos);
    EXPECT_NE(d.body.find("a=range:npt=0-600.000\r\n"), std::string::npos);
    EXPECT_NE(d.body.find("o=- 7 7 IN IP4 127.0.0.1\r\n"), std::string::npos);

    Reply s = ask(c, req("SETUP", base_ + "movie/trackID=1", 2, "Transport: RTP/AVP;unicast;client_port=5000-5001\r\n"));
    ASSERT_EQ(s.status, 200);
    EXPECT_EQ(s.h("transport"), "RTP/AVP;unicast;client_port=5000-5001;server_port=6970-6971;ssrc=11223344");
    EXPECT_EQ(s.h("content-base"), base_ + "movie/");
    std::string sess = s.h("session");
    EXPECT_EQ(sess, "9f3c1a7e1;timeout=60");
    sess = sess.substr(0, sess.find(';'));
    ASSERT_TRUE(backend_->last_setup);
    EXPECT_EQ(backend_->last_setup->asset, "movie");
    EXPECT_EQ(ntohs(backend_->last_setup->client_addr.sin_port), 5000);
    EXPECT_EQ(ntohl(backend_->last_setup->client_addr.sin_addr.s_addr), INADDR_LOOPBACK);
    EXPECT_TRUE(backend_->last_setup->session.empty());
    EXPECT_EQ(server_->session_count(), 1u);

    Reply p = ask(c, req("PLAY", base_ + "movie/", 3, "Session: " + sess + "\r\nRange: npt=13.5-\r\n"));
    ASSERT_EQ(p.status, 200);
    EXPECT_EQ(p.h("range"), "npt=12.000-600.000");  // entered at the random-access point
    EXPECT_EQ(p.h("rtp-info"), "url=" + base_ + "movie/trackID=1;seq=1000;rtptime=90000");
    ASSERT_TRUE(backend_->last_range && *backend_->last_range);
    EXPECT_EQ((*backend_->last_range)->start_ns, 13 * kSec + kSec / 2);

    EXPECT_EQ(ask(c, req("PAUSE", base_ + "movie/", 4, "Session: " + sess + "\r\n")).status, 200);
    Reply resume = ask(c, req("PLAY", base_ + "movie/", 5, "Session: " + sess + "\r\n"));
    EXPECT_EQ(resume.status, 200);
    ASSERT_TRUE(backend_->last_range);
    EXPECT_FALSE(*backend_->last_range);  // no Range: resume where it paused
    Reply k = ask(c, req("GET_PARAMETER", base_ + "movie/", 6, "Session: " + sess + "\r\n"));
    EXPECT_EQ(k.status, 200);
    EXPECT_EQ(k.h("session"), sess + ";timeout=60");
    EXPECT_EQ(ask(c, req("SET_PARAMETER", base_ + "movie/", 7, "Session: " + sess + "\r\n")).status, 200);
    EXPECT_EQ(ask(c, req("OPTIONS", base_ + "movie/", 8, "Session: " + sess + "\r\n")).status, 200);
    EXPECT_EQ(ask(c, req("TEARDOWN", base_ + "movie/", 9, "Session: " + sess + "\r\n")).status, 200);
    EXPECT_EQ(server_->session_count(), 0u);
    EXPECT_EQ(backend_->calls, (std::vector<std::string>{"DESCRIBE movie", "SETUP movie RTP/AVP 5000", "PLAY " + sess + " 13.500",
                                                          "PAUSE " + sess, "PLAY " + sess, "TEARDOWN " + sess}));
    EXPECT_EQ(ask(c, req("PLAY", base_ + "movie/", 10, "Session: " + sess + "\r\n")).status, 454);
    EXPECT_EQ(server_->counters().sessions_created, 1u);
    EXPECT_EQ(server_->counters().sessions_torn_down, 1u);
}

TEST_F(RtspServerTest, RawUdpIsAskedForWithTheTransportQuery) {
    start();
    TestClient c(port_);
    Reply d = ask(c, req("DESCRIBE", base_ + "movie?transport=raw", 1));
    ASSERT_EQ(d.status, 200);
    EXPECT_NE(d.body.find("m=video 0 udp 33\r\n"), std::string::npos);
    EXPECT_EQ(d.h("content-base"), base_ + "movie/");  // the query is not needed past DESCRIBE
    Reply s = ask(c, req("SETUP", base_ + "movie/", 2, "Transport: RAW/RAW/UDP;unicast;client_port=31000\r\n"));
    ASSERT_EQ(s.status, 200);
    EXPECT_EQ(s.h("transport"), "RAW/RAW/UDP;unicast;client_port=31000;server_port=6970-6971");
    std::string sess = s.h("session").substr(0, s.h("session").find(';'));
    Reply p = ask(c, req("PLAY", base_ + "movie/", 3, "Session: " + sess + "\r\nRange: npt=0.000-\r\n"));
    EXPECT_EQ(p.status, 200);
    EXPECT_EQ(p.h("rtp-info"), "");  // no RTP, no RTP-Info
    EXPECT_EQ(backend_->last_setup->transport.kind, TransportKind::RawUdp);
}

TEST_F(RtspServerTest, CableMp2tTransportAndDestinationChecks) {
    start();
    TestClient c(port_);
    Reply s = ask(c, req("SETUP", base_ + "movie", 1,
                         "Transport: MP2T/H2221/UDP;unicast;destination=127.0.0.1;client_port=7000\r\n"));
    ASSERT_EQ(s.status, 200);
    EXPECT_EQ(s.h("transport"), "MP2T/H2221/UDP;unicast;destination=127.0.0.1;client_port=7000;server_port=6970-6971");
    EXPECT_EQ(backend_->last_setup->transport.kind, TransportKind::Mp2tUdp);
    // A stream may not be aimed at anyone but the peer.
    for (const char* dest : {"10.9.9.9", "example.com"}) {
        Reply f = ask(c, req("SETUP", base_ + "movie", 2,
                             std::string("Transport: MP2T/H2221/UDP;unicast;destination=") + dest + ";client_port=7000\r\n"));
        EXPECT_EQ(f.status, 403) << dest;
    }
    EXPECT_EQ(backend_->count("SETUP"), 1u);
}

TEST_F(RtspServerTest, ErrorStatuses) {
    start();
    TestClient c(port_);
    int n = 1;
    EXPECT_EQ(ask(c, req("DESCRIBE", base_ + "nosuch", n++)).status, 404);
    EXPECT_EQ(ask(c, req("DESCRIBE", base_ + "..%2fetc", n++)).status, 404);
    EXPECT_EQ(ask(c, req("DESCRIBE", base_ + "%zz", n++)).status, 400);
    EXPECT_EQ(ask(c, req("DESCRIBE", base_ + "movie", n++, "Accept: text/html\r\n")).status, 406);
    EXPECT_EQ(ask(c, req("SETUP", base_ + "nosuch", n++, "Transport: RTP/AVP;unicast;client_port=5000-5001\r\n")).status, 404);
    EXPECT_EQ(ask(c, req("SETUP", base_ + "movie/trackID=2", n++, "Transport: RTP/AVP;unicast;client_port=5000-5001\r\n")).status,
              404);
    EXPECT_EQ(ask(c, req("SETUP", base_ + "movie", n++)).status, 400);  // no Transport
    EXPECT_EQ(ask(c, req("SETUP", base_ + "movie", n++, "Transport: RTP/AVP/TCP;unicast;interleaved=0-1\r\n")).status, 461);
    EXPECT_EQ(ask(c, req("SETUP", base_ + "movie", n++, "Transport: RTP/AVP;unicast;client_port=0\r\n")).status, 400);
    EXPECT_EQ(ask(c, req("PLAY", base_ + "movie", n++)).status, 454);                       // no Session
    EXPECT_EQ(ask(c, req("PLAY", base_ + "movie", n++, "Session: 12345678\r\n")).status, 454);  // unknown
    EXPECT_EQ(ask(c, req("PLAY", base_ + "movie", n++, "Session: a b\r\n")).status, 400);
    EXPECT_EQ(ask(c, req("TEARDOWN", base_ + "movie", n++, "Session: 12345678\r\n")).status, 454);
    EXPECT_EQ(ask(c, req("GET_PARAMETER", base_ + "movie", n++, "Session: 12345678\r\n")).status, 454);

    std::string sess = setup(c, n++);
    const std::string sh = "Session: " + sess + "\r\n";
    EXPECT_EQ(ask(c, req("PAUSE", base_ + "movie", n++, sh)).status, 455);  // not playing yet
    EXPECT_EQ(ask(c, req("PLAY", base_ + "movie", n++, sh + "Range: npt=601-\r\n")).status, 457);
    EXPECT_EQ(ask(c, req("PLAY", base_ + "movie", n++, sh + "Range: npt=20-10\r\n")).status, 457);
    EXPECT_EQ(ask(c, req("PLAY", base_ + "movie", n++, sh + "Range: smpte=0:10:00-\r\n")).status, 501);
    EXPECT_EQ(ask(c, req("PLAY", base_ + "movie", n++, sh + "Range: npt=x-\r\n")).status, 400);
    EXPECT_EQ(ask(c, req("PLAY", base_ + "other", n++, sh)).status, 454);  // session of another asset
    EXPECT_EQ(ask(c, req("PLAY", "*", n++, sh)).status, 400);
    EXPECT_EQ(ask(c, req("GET_PARAMETER", base_ + "movie", n++, sh + "Content-Length: 9\r\n") + "position\n").status, 451);
    Reply a = ask(c, req("ANNOUNCE", base_ + "movie", n++));
    EXPECT_EQ(a.status, 405);
    EXPECT_NE(a.h("allow").find("DESCRIBE"), std::string::npos);
    EXPECT_EQ(ask(c, req("RECORD", base_ + "movie", n++, sh)).status, 405);
    Reply u = ask(c, req("OPTIONS", "*", n++, "Require: implicit-play\r\n"));
    EXPECT_EQ(u.status, 551);
    EXPECT_EQ(u.h("unsupported"), "implicit-play");
    Reply v = ask(c, "OPTIONS * RTSP/2.0\r\nCSeq: 77\r\n\r\n");
    EXPECT_EQ(v.status, 505);
    EXPECT_EQ(v.h("cseq"), "77");
    EXPECT_EQ(ask(c, req("FLY", base_ + "movie", n++)).status, 501);
    // All framed errors: the connection still serves, the session is intact.
    EXPECT_EQ(ask(c, req("PLAY", base_ + "movie", n++, sh)).status, 200);
    EXPECT_FALSE(c.eof());
    EXPECT_EQ(server_->counters().responses.at(454), 5u);
}

TEST_F(RtspServerTest, StreamAndSessionLimitsAnswer453) {
    Limits l;
    l.max_sessions_per_connection = 2;
    l.max_sessions = 3;
    backend_->stream_limit = 100;
    start(l);
    TestClient a(port_), b(port_);
    int n = 1;
    setup(a, n++);
    setup(a, n++);
    EXPECT_EQ(ask(a, req("SETUP", base_ + "movie", n++, "Transport: RTP/AVP;unicast;client_port=5000-5001\r\n")).status, 453);
    std::string third = setup(b, n++);
    EXPECT_EQ(ask(b, req("SETUP", base_ + "movie", n++, "Transport: RTP/AVP;unicast;client_port=5000-5001\r\n")).status, 453);
    EXPECT_EQ(backend_->count("SETUP"), 3u);  // the server refused before asking the engine
    // A repeated SETUP of an existing session is not a new session.
    EXPECT_EQ(ask(b, req("SETUP", base_ + "movie", n++,
                         "Session: " + third + "\r\nTransport: RAW/RAW/UDP;unicast;client_port=6000\r\n")).status,
              200);
    EXPECT_EQ(backend_->last_setup->session, third);
    EXPECT_EQ(server_->session_count(), 3u);
    EXPECT_EQ(ask(b, req("TEARDOWN", base_ + "movie", n++, "Session: " + third + "\r\n")).status, 200);

    // The engine's own limit (MPEG_Stream_Count_Limit, bandwidth) comes back as ENOSPC/EDQUOT.
    backend_->stream_limit = backend_->sessions.size();
    TestClient c(port_);
    EXPECT_EQ(ask(c, req("SETUP", base_ + "movie", n++, "Transport: RTP/AVP;unicast;client_port=5000-5001\r\n")).status, 453);
    EXPECT_EQ(server_->counters().responses.at(453), 3u);
}

TEST_F(RtspServerTest, MalformedRequestIsAnsweredThenClosedOthersUnaffected) {
    start();
    TestClient bad(port_), good(port_);
    std::string sess = setup(good, 1);
    bad.send("OPTIONS * RTSP/1.0\r\nCSeq: 3\r\nNo colon here\r\n\r\nmore garbage after it");
    Reply r = wait_reply(bad);
    EXPECT_EQ(r.status, 400);
    EXPECT_EQ(r.h("cseq"), "3");
    EXPECT_TRUE(closed_by_server(bad));
    EXPECT_EQ(ask(good, req("GET_PARAMETER", base_ + "movie", 2, "Session: " + sess + "\r\n")).status, 200);
    EXPECT_EQ(server_->counters().protocol_errors, 1u);
    EXPECT_TRUE(server_->has_session(sess));
}

TEST_F(RtspServerTest, PipelinedRequestsAreAnsweredInOrder) {
    start();
    TestClient c(port_);
    std::string all;
    for (int i = 1; i <= 20; ++i) all += req(i % 2 ? "OPTIONS" : "GET_PARAMETER", base_ + "movie", i);
    c.send(all);
    for (int i = 1; i <= 20; ++i) {
        Reply r = wait_reply(c);
        EXPECT_EQ(r.status, 200);
        EXPECT_EQ(r.h("cseq"), std::to_string(i));
    }
}

TEST_F(RtspServerTest, RequestTricklingByteByByteIsServed) {
    start();
    TestClient c(port_);
    std::string r = req("DESCRIBE", base_ + "movie", 5, "Accept: application/sdp\r\n");
    for (char ch : r) {
        c.send(std::string_view(&ch, 1));
        sd_event_run(loop_, 0);
    }
    Reply d = wait_reply(c);
    EXPECT_EQ(d.status, 200);
    EXPECT_EQ(d.h("cseq"), "5");
}

TEST_F(RtspServerTest, SessionOutlivesItsConnection) {
    start();
    std::string sess;
    {
        TestClient a(port_);
        sess = setup(a, 1);
        ASSERT_EQ(ask(a, req("PLAY", base_ + "movie", 2, "Session: " + sess + "\r\n")).status, 200);
    }
    ASSERT_TRUE(pump_until([&] { return server_->connection_count() == 0; }));
    EXPECT_TRUE(server_->has_session(sess));
    EXPECT_EQ(backend_->count("TEARDOWN"), 0u);
    TestClient b(port_);
    EXPECT_EQ(ask(b, req("PAUSE", base_ + "movie", 1, "Session: " + sess + "\r\n")).status, 200);
    EXPECT_EQ(ask(b, req("TEARDOWN", base_ + "movie", 2, "Session: " + sess + "\r\n")).status, 200);
    EXPECT_EQ(backend_->count("TEARDOWN"), 1u);
}

TEST_F(RtspServerTest, SessionTimeoutTearsDownAndKeepalivesPreventIt) {
    Limits l;
    l.session_timeout_usec = 800'000;
    start(l);
    TestClient c(port_);
    std::string kept = setup(c, 1);
    std::string dropped = setup(c, 2);
    EXPECT_EQ(ask(c, req("PLAY", base_ + "movie", 3, "Session: " + dropped + "\r\n")).status, 200);
    // Keep `kept` alive with GET_PARAMETER every 150 ms for 2.5 timeouts; `dropped` gets none.
    int cseq = 10;
    auto last = std::chrono::steady_clock::now();
    pump_for(2.0, [&] {
        if (std::chrono::steady_clock::now() - last > std::chrono::milliseconds(150)) {
            last = std::chrono::steady_clock::now();
            c.send(req("GET_PARAMETER", base_ + "movie", cseq++, "Session: " + kept + "\r\n"));
        }
        c.read_available();
        while (auto r = c.take_reply()) EXPECT_EQ(r->status, 200);
    });
    EXPECT_TRUE(server_->has_session(kept));
    EXPECT_FALSE(server_->has_session(dropped));
    EXPECT_EQ(backend_->count("TEARDOWN " + dropped), 1u);
    EXPECT_EQ(backend_->count("TEARDOWN " + kept), 0u);
    // Without keepalives it goes too, and the engine may report liveness itself (RTCP).
    ASSERT_TRUE(server_->touch_session(kept).ok());
    ASSERT_TRUE(pump_until([&] { return !server_->has_session(kept); }, 5));
    EXPECT_EQ(backend_->count("TEARDOWN " + kept), 1u);
    EXPECT_EQ(server_->counters().sessions_timed_out, 2u);
    EXPECT_EQ(server_->touch_session(kept).error().code, ESRCH);
}

TEST_F(RtspServerTest, AdoptAndForgetSessions) {
    start();
    ASSERT_TRUE(server_->adopt_session("replicated1", "movie", TransportKind::RawUdp).ok());
    EXPECT_EQ(server_->adopt_session("replicated1", "movie", TransportKind::RawUdp).error().code, EEXIST);
    EXPECT_EQ(server_->adopt_session("bad id", "movie", TransportKind::RawUdp).error().code, EINVAL);
    EXPECT_EQ(server_->adopt_session("x1", "../movie", TransportKind::RawUdp).error().code, EINVAL);
    backend_->sessions["replicated1"] = RecordingBackend::Sess{"movie", {}, {}, RecordingBackend::State::Ready};
    TestClient c(port_);
    EXPECT_EQ(ask(c, req("PLAY", base_ + "movie", 1, "Session: replicated1\r\n")).status, 200);
    ASSERT_TRUE(server_->forget_session("replicated1").ok());
    EXPECT_EQ(ask(c, req("PLAY", base_ + "movie", 2, "Session: replicated1\r\n")).status, 454);
    EXPECT_EQ(server_->forget_session("replicated1").error().code, ESRCH);
    EXPECT_EQ(backend_->count("TEARDOWN"), 0u);
}

// What a failover pair's daemon is told (docs/tcp-takeover.md), recorded.
struct RecordingObserver : ConnectionObserver {
    struct Answer {
        uint64_t request_end, response_start;
        std::string bytes;
    };
    std::vector<std::string> events;
    std::vector<Answer> answers;
    void opened(const sockaddr_in& p) override { events.push_back("opened " + std::to_string(ntohs(p.sin_port))); }
    void closing(const sockaddr_in& p) override { events.push_back("closing " + std::to_string(ntohs(p.sin_port))); }
    void request(const sockaddr_in&) override { events.push_back("request"); }
    void answered(const sockaddr_in&, uint64_t end, uint64_t start, std::string_view bytes) override {
        events.push_back("answered");
        answers.push_back({end, start, std::string(bytes)});
    }
};

uint16_t local_port(int fd) {
    sockaddr_in a{};
    socklen_t l = sizeof a;
    getsockname(fd, reinterpret_cast<sockaddr*>(&a), &l);
    return ntohs(a.sin_port);
}

TEST_F(RtspServerTest, AnswersAreReportedAtTheOffsetsAWatcherOfTheWireCounts) {
    start();
    RecordingObserver obs;
    server_->set_observer(&obs);
    TestClient c(port_);
    // Pipelined, with stray empty lines and a request refused without losing the framing.
    std::string sent = req("OPTIONS", base_ + "movie", 1) + "\r\n\r\n" + req("DESCRIBE", base_ + "movie", 2) +
                       "GET_PARAMETER " + base_ + "movie RTSP/1.0\r\nCSeq: 3\r\nContent-Length: 2\r\n\r\nab" +
                       req("OPTIONS", base_ + "movie", 4, "Require: x\r\n") + req("FROB", base_ + "movie", 5);
    c.send(sent);
    ASSERT_TRUE(pump_until([&] { return obs.answers.size() == 5; }));
    // The client got exactly those answers, in order.
    std::vector<int> statuses;
    for (int i = 0; i < 5; ++i) statuses.push_back(wait_reply(c).status);
    EXPECT_EQ(statuses, (std::vector<int>{200, 200, 451, 551, 501}));
    // Frame the same bytes as the standby's hub view would, and compare.
    auto rf = make_request_framer({});
    auto ends = rf->feed(sent);
    ASSERT_TRUE(ends) << ends.error().message;
    ASSERT_EQ(ends->size(), 5u);
    auto af = make_response_framer();
    uint64_t out = 0;
    for (size_t i = 0; i < 5; ++i) {
        EXPECT_EQ(obs.answers[i].request_end, (*ends)[i]) << i;
        EXPECT_EQ(obs.answers[i].response_start, out) << i;
        out += obs.answers[i].bytes.size();
        auto e = af->feed(obs.answers[i].bytes);
        ASSERT_TRUE(e && e->size() == 1) << i;
        EXPECT_EQ(e->front(), out);
    }
    EXPECT_EQ(obs.events.front(), "opened " + std::to_string(local_port(c.fd())));
    // request() precedes each answer to a request the parser accepted (not the unknown method's).
    EXPECT_EQ(std::count(obs.events.begin(), obs.events.end(), "request"), 4);
    // The server closes on purpose once the client is done: it says so before its FIN.
    shutdown(c.fd(), SHUT_WR);
    ASSERT_TRUE(closed_by_server(c));
    EXPECT_EQ(obs.events.back(), "closing " + std::to_string(local_port(c.fd())));
}

TEST_F(RtspServerTest, ListensOnlyWhenAskedAndConnectionsOutliveTheListener) {
    auto s = RtspServer::create(loop_, *backend_);
    ASSERT_TRUE(s.ok()) << s.error().message;
    server_ = std::move(*s);
    EXPECT_FALSE(server_->listening());
    EXPECT_EQ(server_->port(), 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    auto fd = listen_tcp(a);
    ASSERT_TRUE(fd);
    ASSERT_TRUE(server_->start_listening(*fd, true).ok());
    EXPECT_EQ(server_->start_listening(*fd, false).error().code, EALREADY);
    port_ = server_->port();
    base_ = "rtsp://127.0.0.1:" + std::to_string(port_) + "/";
    TestClient c(port_);
    EXPECT_EQ(ask(c, req("OPTIONS", base_ + "movie", 1)).status, 200);
    server_->stop_listening();
    EXPECT_FALSE(server_->listening());
    TestClient refused(port_);
    EXPECT_FALSE(refused.connected());
    EXPECT_EQ(ask(c, req("OPTIONS", base_ + "movie", 2)).status, 200);  // still served
}

TEST_F(RtspServerTest, AnAdoptedConnectionSendsWhatWasLeftAndAnswersWhatWaited) {
    start();
    RecordingObserver obs;
    server_->set_observer(&obs);
    // A connected socket from elsewhere (here: another listener on loopback).
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    auto other = listen_tcp(a);
    ASSERT_TRUE(other);
    TestClient c(local_port(*other));
    ASSERT_TRUE(c.connected());
    int fd = accept4(*other, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    ASSERT_GE(fd, 0);
    close(*other);
    std::string sess = "replicated7";
    ASSERT_TRUE(server_->adopt_session(sess, "movie", TransportKind::RtpAvp).ok());
    backend_->sessions[sess] = RecordingBackend::Sess{"movie", {}, {}, RecordingBackend::State::Playing};
    AdoptedConnection ac;
    ac.fd = fd;
    sockaddr_in peer{};
    socklen_t pl = sizeof peer;
    getpeername(fd, reinterpret_cast<sockaddr*>(&peer), &pl);
    ac.peer = peer;
    std::string waiting = req("PAUSE", base_ + "movie", 6, "Session: " + sess + "\r\n");
    ac.in_offset = 1000;
    ac.pending = waiting + "GET_PARAM";  // and the start of the next one
    ac.unsent = "RTSP/1.0 200 OK\r\nCSeq: 5\r\n\r\n";  // the end of an answer cut short
    ac.out_offset = 700;
    ASSERT_TRUE(server_->adopt_connection(std::move(ac)).ok());
    Reply r5 = wait_reply(c);
    EXPECT_EQ(r5.h("cseq"), "5");
    Reply r6 = wait_reply(c);
    EXPECT_EQ(r6.status, 200);
    EXPECT_EQ(r6.h("cseq"), "6");
    EXPECT_EQ(backend_->count("PAUSE " + sess), 1u);
    ASSERT_EQ(obs.answers.size(), 1u);
    EXPECT_EQ(obs.answers[0].request_end, 1000 + waiting.size());
    EXPECT_EQ(obs.answers[0].response_start, 700u);
    // The client finishes the request it had begun, on the same connection.
    c.send("ETER " + base_ + "movie RTSP/1.0\r\nCSeq: 7\r\nSession: " + sess + "\r\n\r\n");
    Reply r7 = wait_reply(c);
    EXPECT_EQ(r7.status, 200);
    EXPECT_EQ(r7.h("cseq"), "7");
    EXPECT_EQ(server_->counters().connections_adopted, 1u);
}

TEST_F(RtspServerTest, ConnectionsDroppedSilentlySendNothing) {
    start();
    RecordingObserver obs;
    server_->set_observer(&obs);
    TestClient c(port_);
    EXPECT_EQ(ask(c, req("OPTIONS", base_ + "movie", 1)).status, 200);
    c.send("OPT");  // unread bytes: a plain close would even reset
    pump_for(0.05);
    server_->drop_connections_silently();
    EXPECT_EQ(server_->connection_count(), 0u);
    pollfd p{c.fd(), POLLIN | POLLRDHUP, 0};
    EXPECT_EQ(poll(&p, 1, 200), 0) << "revents " << p.revents;
    EXPECT_EQ(std::count_if(obs.events.begin(), obs.events.end(), [](auto& e) { return e.rfind("closing", 0) == 0; }), 0);
}

TEST_F(RtspServerTest, OnlyItsClientControlsASession) {
    start();
    TestClient owner(port_);
    std::string sess = setup(owner, 1);
    ASSERT_EQ(ask(owner, req("PLAY", base_ + "movie", 2, "Session: " + sess + "\r\n")).status, 200);
    // Another viewer that learned the id (guessed, overheard) cannot touch it: to it the session
    // does not exist.
    TestClient other(port_, 0, "127.0.0.2");
    for (const char* m : {"TEARDOWN", "PAUSE", "PLAY", "GET_PARAMETER"})
        EXPECT_EQ(ask(other, req(m, base_ + "movie", 1, "Session: " + sess + "\r\n")).status, 454) << m;
    EXPECT_EQ(backend_->count("TEARDOWN"), 0u);
    EXPECT_EQ(backend_->count("PAUSE"), 0u);
    EXPECT_TRUE(server_->has_session(sess));
    // An adopted session (after a takeover) belongs to its client as well.
    in_addr lo{};
    inet_pton(AF_INET, "127.0.0.1", &lo);
    ASSERT_TRUE(server_->adopt_session("adopted9", "movie", TransportKind::RtpAvp, lo).ok());
    backend_->sessions["adopted9"] = RecordingBackend::Sess{"movie", {}, {}, RecordingBackend::State::Playing};
    EXPECT_EQ(ask(other, req("TEARDOWN", base_ + "movie", 2, "Session: adopted9\r\n")).status, 454);
    EXPECT_EQ(ask(owner, req("TEARDOWN", base_ + "movie", 3, "Session: adopted9\r\n")).status, 200);
    EXPECT_EQ(ask(owner, req("TEARDOWN", base_ + "movie", 4, "Session: " + sess + "\r\n")).status, 200);
}

TEST_F(RtspServerTest, HostileClientsDoNotDisturbOthers) {
    Limits l;
    l.request_timeout_usec = 500'000;
    start(l);
    TestClient good(port_);
    std::string sess = setup(good, 1);

    // A slowloris: a request started and never finished.
    TestClient slow(port_);
    slow.send("OPTIONS * RTSP/1.0\r\nCSe");
    // Garbage (a TLS ClientHello) and a header far over the limits, sent in full.
    TestClient tls(port_);
    tls.send(std::string("\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", 11) + std::string(300, '\x5a') + "\r\n\r\n");
    TestClient huge(port_);
    huge.send("DESCRIBE " + base_ + "movie RTSP/1.0\r\nCSeq: 1\r\nX-Big: " + std::string(200'000, 'a') + "\r\n\r\n");

    // The good client is served while the others are at it.
    for (int i = 2; i < 6; ++i)
        EXPECT_EQ(ask(good, req("GET_PARAMETER", base_ + "movie", i, "Session: " + sess + "\r\n")).status, 200);

    Reply t = wait_reply(tls);
    EXPECT_EQ(t.status, 400);
    EXPECT_TRUE(closed_by_server(tls));
    Reply h = wait_reply(huge);
    EXPECT_EQ(h.status, 413);
    EXPECT_TRUE(pump_until([&] {
        huge.push();
        huge.read_available();
        return huge.eof();
    }));
    Reply s = wait_reply(slow);
    EXPECT_EQ(s.status, 408);
    EXPECT_TRUE(closed_by_server(slow));

    EXPECT_EQ(ask(good, req("PLAY", base_ + "movie", 7, "Session: " + sess + "\r\n")).status, 200);
    EXPECT_TRUE(pump_until([&] { return server_->connection_count() == 1; }));
    EXPECT_GE(server_->counters().connections_timed_out, 1u);
    EXPECT_TRUE(server_->has_session(sess));
}

TEST_F(RtspServerTest, IdleConnectionIsClosed) {
    Limits l;
    l.idle_timeout_usec = 300'000;
    start(l);
    TestClient c(port_);
    EXPECT_EQ(ask(c, req("OPTIONS", "*", 1)).status, 200);
    auto t0 = std::chrono::steady_clock::now();
    EXPECT_TRUE(closed_by_server(c, 5));
    EXPECT_GE(std::chrono::steady_clock::now() - t0, std::chrono::milliseconds(250));
    EXPECT_EQ(server_->counters().connections_timed_out, 1u);
}

TEST_F(RtspServerTest, ConnectionsBeyondTheLimitAreRefused) {
    Limits l;
    l.max_connections = 2;
    start(l);
    auto a = std::make_unique<TestClient>(port_);
    TestClient b(port_);
    EXPECT_EQ(ask(*a, req("OPTIONS", "*", 1)).status, 200);
    EXPECT_EQ(ask(b, req("OPTIONS", "*", 1)).status, 200);
    TestClient c(port_);
    EXPECT_TRUE(closed_by_server(c));
    EXPECT_EQ(server_->counters().connections_refused, 1u);
    a.reset();
    ASSERT_TRUE(pump_until([&] { return server_->connection_count() == 1; }));
    TestClient d(port_);
    EXPECT_EQ(ask(d, req("OPTIONS", "*", 1)).status, 200);
}

TEST_F(RtspServerTest, OneAddressCannotTakeEverySlot) {
    Limits l;
    l.max_connections_per_address = 3;
    l.max_sessions_per_address = 2;
    start(l);
    TestClient a(port_), b(port_), c(port_);
    int n = 1;
    std::string first = setup(a, n++);
    setup(b, n++);
    const std::string transport = "Transport: RTP/AVP;unicast;client_port=5000-5001\r\n";
    EXPECT_EQ(ask(c, req("SETUP", base_ + "movie", n++, transport)).status, 453);  // over connections too
    TestClient d(port_);
    EXPECT_TRUE(closed_by_server(d));
    EXPECT_EQ(server_->counters().connections_refused, 1u);
    // Another viewer is served all the same.
    TestClient other(port_, 0, "127.0.0.2");
    Reply o = ask(other, req("SETUP", base_ + "movie", 1, transport));
    EXPECT_EQ(o.status, 200);
    EXPECT_EQ(ntohl(backend_->last_setup->client_addr.sin_addr.s_addr), 0x7f000002u);
    // A session ending frees its slot.
    EXPECT_EQ(ask(a, req("TEARDOWN", base_ + "movie", n++, "Session: " + first + "\r\n")).status, 200);
    EXPECT_EQ(ask(c, req("SETUP", base_ + "movie", n++, transport)).status, 200);
}

TEST_F(RtspServerTest, OutOfDescriptorsBacksOffInsteadOfSpinning) {
    start();
    std::vector<std::unique_ptr<TestClient>> clients;
    for (int i = 0; i < 3; ++i) clients.push_back(std::make_unique<TestClient>(port_));  // waiting in the backlog
    // The limit bounds descriptor numbers: set it to the lowest free one, so none is left.
    int lowest_free = dup(0);
    ASSERT_GE(lowest_free, 0);
    close(lowest_free);
    rlimit saved{};
    ASSERT_EQ(getrlimit(RLIMIT_NOFILE, &saved), 0);
    struct Restore {
        rlimit r;
        ~Restore() { setrlimit(RLIMIT_NOFILE, &r); }
    } restore{saved};
    rlimit none = saved;
    none.rlim_cur = rlim_t(lowest_free);
    ASSERT_EQ(setrlimit(RLIMIT_NOFILE, &none), 0);
    int dispatched = 0;
    auto end = std::chrono::steady_clock::now() + std::chrono::milliseconds(300);
    while (std::chrono::steady_clock::now() < end) dispatched += sd_event_run(loop_, 5'000) > 0;
    EXPECT_EQ(server_->connection_count(), 0u);
    EXPECT_LT(dispatched, 20);  // a retry every 100 ms, not a busy loop on the listen socket
    setrlimit(RLIMIT_NOFILE, &saved);
    for (auto& c : clients) EXPECT_EQ(ask(*c, req("OPTIONS", "*", 1)).status, 200);
}

TEST_F(RtspServerTest, PeerThatDoesNotReadIsPausedNotBuffered) {
    Limits l;
    l.max_output_bytes = 2048;
    start(l, /*sndbuf=*/4096);
    TestClient hog(port_, /*rcvbuf=*/4096);
    constexpr int kRequests = 3000;  // about 400 KB of answers, far beyond every buffer
    std::string all;
    for (int i = 1; i <= kRequests; ++i) all += req("OPTIONS", "*", i);
    hog.send(all);
    ASSERT_TRUE(pump_until([&] {
        hog.push();
        return server_->counters().reads_paused > 0;
    }));
    pump_for(0.3, [&] { hog.push(); });
    uint64_t handled = server_->counters().requests;
    EXPECT_LT(handled, uint64_t(kRequests));  // it waits for the peer instead of queueing
    TestClient other(port_);
    EXPECT_EQ(ask(other, req("OPTIONS", "*", 1)).status, 200);
    // Once the peer reads, everything is answered, in order.
    int got = 0;
    bool ok = pump_until([&] {
        hog.push();
        hog.read_available();
        while (auto r = hog.take_reply()) {
            ++got;
            if (r->h("cseq") != std::to_string(got)) return true;
        }
        return got == kRequests;
    }, 60);
    EXPECT_TRUE(ok);
    EXPECT_EQ(got, kRequests);
}

// ------------------------------------------------------------------------------------------
// Real players against the server

// Runs a program with stdin from /dev/null and stdout+stderr into `log`.
pid_t spawn(const std::vector<std::string>& argv, const std::string& log) {
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_addopen(&fa, 1, log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    posix_spawn_file_actions_adddup2(&fa, 1, 2);
    std::vector<char*> args;
    for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    pid_t pid = -1;
    if (posix_spawnp(&pid, args[0], &fa, nullptr, args.data(), environ) != 0) pid = -1;
    posix_spawn_file_actions_destroy(&fa);
    return pid;
}

bool on_path(const std::string& prog) {
    std::string path = getenv("PATH") ? getenv("PATH") : "/usr/bin:/bin";
    std::stringstream ss(path);
    std::string dir;
    while (std::getline(ss, dir, ':'))
        if (access((dir + "/" + prog).c_str(), X_OK) == 0) return true;
    return false;
}

std::string slurp(const std::string& path) {
    std::ifstream f(path, std::ios::binary);
    std::stringstream ss;
    ss << f.rdbuf();
    return ss.str();
}

// A backend that really streams: on PLAY it sends the asset's TS packets (7 per datagram, in
// RTP or raw) to the client's port from an sd-event timer, at twice real time.
class StreamingBackend : public RecordingBackend {
public:
    StreamingBackend(sd_event* loop, std::string ts, double seconds) : loop_(loop), ts_(std::move(ts)), seconds_(seconds) {
        udp_ = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        sockaddr_in a{};
        a.sin_family = AF_INET;
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        bind(udp_, reinterpret_cast<sockaddr*>(&a), sizeof a);
        socklen_t len = sizeof a;
        getsockname(udp_, reinterpret_cast<sockaddr*>(&a), &len);
        server_port = ntohs(a.sin_port);
    }
    ~StreamingBackend() override {
        for (auto& [id, s] : senders_) sd_event_source_disable_unref(s->timer);
        close(udp_);
    }
    size_t datagrams_sent = 0;

protected:
    struct Sender {
        StreamingBackend* self;
        sockaddr_in to;
        bool rtp;
        size_t off = 0;
        uint16_t seq = 1000;
        uint64_t start_usec = 0;
        sd_event_source* timer = nullptr;
    };
    void on_play(const std::string& id, const Sess& s) override {
        if (senders_.count(id)) return;
        auto snd = std::make_unique<Sender>(Sender{this, s.client, s.transport.kind == TransportKind::RtpAvp});
        sd_event_now(loop_, CLOCK_MONOTONIC, &snd->start_usec);
        sd_event_add_time_relative(loop_, &snd->timer, CLOCK_MONOTONIC, 0, 0, &StreamingBackend::tick, snd.get());
        sd_event_source_set_enabled(snd->timer, SD_EVENT_ON);
        senders_[id] = std::move(snd);
    }
    void on_teardown(const std::string& id) override {
        auto it = senders_.find(id);
        if (it == senders_.end()) return;
        sd_event_source_disable_unref(it->second->timer);
        senders_.erase(it);
    }
    static int tick(sd_event_source* src, uint64_t now, void* ud) {
        auto* s = static_cast<Sender*>(ud);
        StreamingBackend& b = *s->self;
        const double bytes_per_usec = double(b.ts_.size()) / (b.seconds_ * 1e6) * 2.0;
        size_t due = std::min(b.ts_.size(), size_t(double(now - s->start_usec) * bytes_per_usec));
        while (s->off + 1316 <= due) {
            std::string dgram;
            if (s->rtp) {
                uint32_t ts90k = uint32_t((now - s->start_usec) * 9 / 100);
                unsigned char h[12] = {0x80, 33, uint8_t(s->seq >> 8), uint8_t(s->seq), uint8_t(ts90k >> 24),
                                       uint8_t(ts90k >> 16), uint8_t(ts90k >> 8), uint8_t(ts90k), 0x11, 0x22, 0x33, 0x44};
                dgram.assign(reinterpret_cast<char*>(h), sizeof h);
                ++s->seq;
            }
            dgram.append(b.ts_, s->off, 1316);
            sendto(b.udp_, dgram.data(), dgram.size(), 0, reinterpret_cast<sockaddr*>(&s->to), sizeof s->to);
            s->off += 1316;
            ++b.datagrams_sent;
        }
        sd_event_source_set_time(src, now + 4'000);
        return 0;
    }

    sd_event* loop_;
    std::string ts_;
    double seconds_;
    int udp_ = -1;
    std::map<std::string, std::unique_ptr<Sender>> senders_;
};

class RtspPlayerTest : public RtspServerTest {
protected:
    void SetUp() override {
        RtspServerTest::SetUp();
        if (!on_path("ffmpeg")) GTEST_SKIP() << "ffmpeg is not installed (apt-get install ffmpeg)";
        char dir[] = "/tmp/of-rtsp-test-XXXXXX";
        ASSERT_NE(mkdtemp(dir), nullptr);
        dir_ = dir;
        chmod(dir_.c_str(), 0777);  // VLC runs as nobody and writes here
        // A 6 s MPEG-2 video TS, generated here so the test needs no data file.
        std::string ts = dir_ + "/asset.ts";
        pid_t pid = spawn({"ffmpeg", "-hide_banner", "-nostdin", "-loglevel", "error", "-f", "lavfi", "-i",
                           "testsrc=size=160x120:rate=25", "-t", "6", "-c:v", "mpeg2video", "-b:v", "400k", "-g", "12",
                           "-f", "mpegts", ts},
                          dir_ + "/gen.log");
        ASSERT_GT(pid, 0);
        int status = 0;
        waitpid(pid, &status, 0);
        ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << slurp(dir_ + "/gen.log");
        backend_ = std::make_unique<StreamingBackend>(loop_, slurp(ts), 6.0);
        start();
    }
    void TearDown() override {
        RtspServerTest::TearDown();
        std::error_code ec;
        if (!dir_.empty()) std::filesystem::remove_all(dir_, ec);
    }
    // Runs a player to its end while the server's loop runs; returns its exit status.
    int run(const std::vector<std::string>& argv, const std::string& log, double seconds = 60) {
        pid_t pid = spawn(argv, log);
        EXPECT_GT(pid, 0);
        if (pid <= 0) return -1;
        int status = 0;
        bool done = pump_until([&] { return waitpid(pid, &status, WNOHANG) == pid; }, seconds);
        if (!done) {
            kill(pid, SIGKILL);
            waitpid(pid, &status, 0);
            ADD_FAILURE() << argv[0] << " did not finish in " << seconds << " s:\n" << slurp(log);
            return -1;
        }
        // Let the server see the player's TEARDOWN and the connection close.
        pump_until([&] { return server_->connection_count() == 0; }, 5);
        return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    }
    int ffmpeg_frames(const std::string& log) {
        std::string text = slurp(log);
        std::regex re("frame= *([0-9]+)");
        int frames = 0;
        for (auto it = std::sregex_iterator(text.begin(), text.end(), re); it != std::sregex_iterator(); ++it)
            frames = std::stoi((*it)[1]);
        return frames;
    }
    StreamingBackend& streaming() { return static_cast<StreamingBackend&>(*backend_); }

    std::string dir_;
};

TEST_F(RtspPlayerTest, FfmpegPlaysRtpOverUdp) {
    std::string log = dir_ + "/ffmpeg-rtp.log";
    int rc = run({"ffmpeg", "-hide_banner", "-nostdin", "-rtsp_transport", "udp", "-i", base_ + "movie", "-t", "1", "-f",
                  "null", "-"},
                 log);
    EXPECT_EQ(rc, 0) << slurp(log);
    EXPECT_GE(ffmpeg_frames(log), 20) << slurp(log);
    EXPECT_NE(slurp(log).find("mpeg2video"), std::string::npos);
    EXPECT_EQ(backend_->count("DESCRIBE movie"), 1u);
    EXPECT_EQ(backend_->count("SETUP movie RTP/AVP"), 1u);
    EXPECT_EQ(backend_->count("PLAY"), 1u);
    EXPECT_EQ(backend_->count("TEARDOWN"), 1u);
    EXPECT_GT(streaming().datagrams_sent, 0u);
    EXPECT_EQ(server_->session_count(), 0u);
}

TEST_F(RtspPlayerTest, FfmpegPlaysRawMp2tOverUdp) {
    std::string log = dir_ + "/ffmpeg-raw.log";
    int rc = run({"ffmpeg", "-hide_banner", "-nostdin", "-rtsp_transport", "udp", "-i", base_ + "movie?transport=raw", "-t",
                  "1", "-f", "null", "-"},
                 log);
    EXPECT_EQ(rc, 0) << slurp(log);
    EXPECT_GE(ffmpeg_frames(log), 20) << slurp(log);
    EXPECT_EQ(backend_->count("SETUP movie RAW/RAW/UDP"), 1u) << ::testing::PrintToString(backend_->calls);
    EXPECT_EQ(backend_->count("PLAY"), 1u);
    EXPECT_EQ(backend_->count("TEARDOWN"), 1u);
}

TEST_F(RtspPlayerTest, FfmpegGetsTheStatusOfAnUnknownAsset) {
    std::string log = dir_ + "/ffmpeg-404.log";
    int rc = run({"ffmpeg", "-hide_banner", "-nostdin", "-rtsp_transport", "udp", "-i", base_ + "nosuch", "-t", "1", "-f",
                  "null", "-"},
                 log);
    EXPECT_NE(rc, 0);
    EXPECT_NE(slurp(log).find("404 Not Found"), std::string::npos) << slurp(log);
    EXPECT_EQ(backend_->count("SETUP"), 0u);
}


// VLC refuses to run as root: run it as nobody, recording what it receives. Debian builds VLC
// without live555, so its RTSP client is the SAT>IP module: no DESCRIBE, SETUP RTP/AVP on the
// URL, PLAY on the SETUP answer's Content-Base + "stream=N", OPTIONS keepalives. It cannot ask for
// raw UDP; a VLC with live555 reads the SDP like ffmpeg does.
class RtspVlcTest : public RtspPlayerTest {
protected:
    void SetUp() override {
        if (!on_path("cvlc") || !on_path("setpriv")) GTEST_SKIP() << "VLC (cvlc) or setpriv is not installed";
        RtspPlayerTest::SetUp();
    }
    int run_vlc(const std::string& url, const std::string& out, const std::string& log) {
        std::vector<std::string> argv = {"cvlc", "-q", "-I", "dummy", "--no-audio", "--run-time=3", "--play-and-exit",
                                         url, "--sout", "#std{access=file,mux=ts,dst=" + out + "}", "vlc://quit"};
        if (geteuid() == 0)
            argv.insert(argv.begin(), {"setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--", "env",
                                       "HOME=" + dir_});
        return run(argv, log);
    }
};

TEST_F(RtspVlcTest, VlcPlaysRtpOverUdp) {
    std::string out = dir_ + "/vlc-rtp.ts", log = dir_ + "/vlc-rtp.log";
    EXPECT_EQ(run_vlc(base_ + "movie", out, log), 0) << slurp(log);
    EXPECT_EQ(backend_->count("SETUP movie RTP/AVP"), 1u) << ::testing::PrintToString(backend_->calls) << slurp(log);
    EXPECT_EQ(backend_->count("PLAY"), 1u);
    EXPECT_EQ(backend_->count("TEARDOWN"), 1u);
    EXPECT_GT(slurp(out).size(), 20'000u) << slurp(log);  // it received and remuxed the stream
}


}  // namespace
