// Fuzzes every part of the RTSP layer that reads peer bytes: the request parser, fed in chunks
// whose size the input chooses, under default or tight limits (so every limit is reached); and
// the Transport, Range, Session and request-URI parsers, on the raw input and on every header
// value and URI the parser lets through, with round-trip checks of the formatters.
// The first input byte picks the chunk size (low 6 bits) and the tight limits (top bit).
#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "rtsp/headers.h"
#include "rtsp/message.h"
#include "rtsp/sdp.h"
#include "rtsp/status.h"

using namespace of::rtsp;

namespace {

void check(bool ok) {
    if (!ok) std::abort();
}

void values(std::string_view v) {
    if (auto t = negotiate_transport(v); t.ok()) {
        check(t->client_port_lo > 0 && t->client_port_hi >= t->client_port_lo && t->client_port_hi - t->client_port_lo <= 1);
        auto again = negotiate_transport(format_transport(*t, {6970, 6971, 0x01020304u}));
        check(again.ok() && again->kind == t->kind && again->client_port_lo == t->client_port_lo &&
              again->client_port_hi == t->client_port_hi && again->destination == t->destination);
    } else {
        check(t.error().code == EINVAL || t.error().code == ENOTSUP);
    }

    if (auto r = parse_range(v); r.ok()) {
        check(!r->start_ns || *r->start_ns >= 0);
        check(!r->end_ns || *r->end_ns >= 0);
        check(!r->start_ns || !r->end_ns || *r->start_ns <= *r->end_ns);
        if (r->start_ns) {
            // Formatting keeps milliseconds: the value comes back at most 1 ms lower.
            auto again = parse_range(format_npt_range(*r->start_ns, r->end_ns));
            check(again.ok() && again->start_ns && *again->start_ns <= *r->start_ns &&
                  *r->start_ns - *again->start_ns < 1'000'000);
        }
    } else {
        int c = r.error().code;
        check(c == EINVAL || c == ENOTSUP || c == ERANGE);
    }

    if (auto s = parse_session(v); s.ok()) {
        check(valid_session_id(s->id));
        auto again = parse_session(format_session(s->id, 60));
        check(again.ok() && again->id == s->id && again->timeout_s == 60u);
    } else {
        check(s.error().code == EINVAL);
    }

    if (auto u = parse_request_uri(v); u.ok()) {
        check(u->asset.empty() || valid_asset_name(u->asset));
        if (!u->asset.empty()) {
            auto again = parse_request_uri(content_base(*u, "127.0.0.1:554"));
            check(again.ok() && again->asset == u->asset && !again->track);
            SdpParams p;
            p.asset = u->asset;
            p.origin_address = "127.0.0.1";
            p.raw_udp = u->raw_udp;
            check(build_sdp(p).find(u->raw_udp ? "m=video 0 udp 33\r\n" : "m=video 0 RTP/AVP 33\r\n") != std::string::npos);
        }
    } else {
        check(u.error().code == EINVAL || u.error().code == ENOENT);
    }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    std::string_view in(reinterpret_cast<const char*>(data), size);
    values(in);

    const uint8_t ctl = size ? data[0] : 0;
    ParserLimits lim;
    if (ctl & 0x80) lim = ParserLimits{256, 96, 48, 6, 64};
    const size_t chunk = (ctl & 0x3f) + 1;
    const size_t cap = lim.max_head_bytes + lim.max_body_bytes;
    RequestParser p(lim);
    size_t pos = size ? 1 : 0;
    while (pos < size) {
        size_t n = std::min({chunk, size - pos, p.room()});
        check(n > 0);  // a parser waiting for more always has room for it
        check(p.append(in.substr(pos, n)));
        pos += n;
        check(p.buffered() <= cap);
        for (;;) {
            Request r;
            ParseStatus st = p.next(r);
            if (st == ParseStatus::NeedMore) break;
            if (st == ParseStatus::Error) {
                const ParseError& e = p.error();
                check(e.status == 400 || e.status == 413 || e.status == 414 || e.status == 501 || e.status == 505);
                check(reason_phrase(e.status) != "Unknown");
                if (e.fatal) return 0;
                continue;
            }
            check(r.uri.size() <= lim.max_uri_bytes && r.headers.size() <= lim.max_headers &&
                  r.body.size() <= lim.max_body_bytes && r.header_count("CSeq") == 1);
            values(r.uri);
            for (const auto& h : r.headers) values(h.value);
            // Nothing from a request can end a response's head early.
            Response resp(200);
            resp.header("Unsupported", r.body).header("Content-Base", r.uri);
            std::string out = resp.serialize(r.cseq);
            check(out.find("\r\n\r\n") == out.size() - 4);
        }
    }
    return 0;
}
