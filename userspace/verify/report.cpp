#include "verify/report.h"

#include <cinttypes>
#include <cstdio>

namespace of::verify {

std::string json_quote(std::string_view s) {
    std::string o = "\"";
    for (unsigned char c : s) {
        switch (c) {
            case '"': o += "\\\""; break;
            case '\\': o += "\\\\"; break;
            case '\n': o += "\\n"; break;
            case '\r': o += "\\r"; break;
            case '\t': o += "\\t"; break;
            default:
                if (c < 0x20) {
                    char b[8];
                    std::snprintf(b, sizeof b, "\\u%04x", c);
                    o += b;
                } else {
                    o += char(c);
                }
        }
    }
    return o + "\"";
}

namespace {

// Builds one JSON object; keys are trusted literals, string values are escaped.
class Json {
public:
    Json& open(const char* key = nullptr) { sep(key); s_ += '{'; first_ = true; return *this; }
    Json& close() { s_ += '}'; first_ = false; return *this; }
    Json& open_array(const char* key) { sep(key); s_ += '['; first_ = true; return *this; }
    Json& close_array() { s_ += ']'; first_ = false; return *this; }
    Json& u(const char* key, uint64_t v) { sep(key); s_ += std::to_string(v); return *this; }
    Json& i(const char* key, int64_t v) { sep(key); s_ += std::to_string(v); return *this; }
    Json& d(const char* key, double v) {
        sep(key);
        char b[32];
        std::snprintf(b, sizeof b, "%.3f", v);
        s_ += b;
        return *this;
    }
    Json& b(const char* key, bool v) { sep(key); s_ += v ? "true" : "false"; return *this; }
    Json& str(const char* key, std::string_view v) { sep(key); s_ += json_quote(v); return *this; }
    Json& null(const char* key) { sep(key); s_ += "null"; return *this; }
    std::string take() { return std::move(s_); }

private:
    void sep(const char* key) {
        if (!first_) s_ += ',';
        first_ = false;
        if (key) {
            s_ += json_quote(key);
            s_ += ':';
        }
    }
    std::string s_;
    bool first_ = true;
};

void gap_json(Json& j, const char* key, const Gap& g) {
    j.open(key).d("ms", g.ms).i("at_ns", g.at_ns).i("prev_ns", g.prev_ns).u("index", g.index);
    if (g.seq) j.u("seq", *g.seq); else j.null("seq");
    if (g.prev_seq) j.u("prev_seq", *g.prev_seq); else j.null("prev_seq");
    j.close();
}

std::string fmt(const char* f, auto... args) {
    char b[512];
    std::snprintf(b, sizeof b, f, args...);
    return b;
}

}  // namespace

std::string to_json(const Report& r, const RunInfo& info) {
    Json j;
    j.open();
    j.str("mode", mode_name(r.mode));
    j.str("url", info.url).str("transport", info.transport).u("port", info.port);
    j.str("end_reason", info.end_reason);
    j.b("ok", !r.has_errors() && r.datagrams > 0 && control_ok(info));
    j.u("datagrams", r.datagrams).u("ts_packets", r.ts_packets).u("bytes", r.bytes);
    j.i("first_ns", r.first_ns).i("last_ns", r.last_ns).d("duration_s", r.duration_s());
    j.open("receive").u("socket_drops", info.socket_drops).u("truncated", info.truncated)
        .u("foreign", info.foreign).close();
    if (info.rtsp)
        j.open("rtsp").u("keepalives", info.keepalives).u("keepalive_failures", info.keepalive_failures)
            .u("keepalives_answered", info.keepalives_answered).b("teardown_ok", info.teardown_ok)
            .str("control_end", info.control_end).u("control_reconnects", info.control_reconnects)
            .b("control_ok", control_ok(info)).close();
    if (r.mode == Mode::Rtp) {
        const RtpStats& t = r.rtp;
        j.open("rtp").u("packets", t.packets).u("invalid", t.invalid).u("expected", t.expected)
            .u("lost", t.lost).u("duplicated", t.duplicated).u("reordered", t.reordered)
            .u("resyncs", t.resyncs).u("strays", t.strays).u("ssrc", t.ssrc)
            .u("ssrc_changes", t.ssrc_changes).u("payload_type", t.payload_type)
            .u("first_seq", t.first_seq).u("last_seq", t.last_seq).u("cycles", t.cycles).close();
    }
    j.open("ts").u("packets", r.ts.packets).u("cc_errors", r.ts.cc_errors)
        .u("transport_errors", r.ts.transport_errors).u("sync_byte_errors", r.ts.sync_byte_errors)
        .u("sync_losses", r.ts.sync_losses).u("null_packets", r.ts.null_packets)
        .u("bad_length", r.ts.bad_length);
    j.open_array("pids");
    for (const auto& p : r.ts.pids)
        j.open().u("pid", p.pid).u("packets", p.packets).u("cc_errors", p.cc_errors)
            .u("duplicates", p.duplicates).u("discontinuities", p.discontinuities).b("pcr", p.pcr).close();
    j.close_array().close();
    j.open("timing").d("median_interval_ms", r.median_interval_ms).d("p99_interval_ms", r.p99_interval_ms);
    if (r.largest_gap) gap_json(j, "largest_gap", *r.largest_gap); else j.null("largest_gap");
    j.open_array("top_gaps");
    for (const auto& g : r.top_gaps) gap_json(j, nullptr, g);
    j.close_array().close();
    j.open("jitter");
    if (r.jitter.pcr_pid) j.u("pcr_pid", *r.jitter.pcr_pid); else j.null("pcr_pid");
    j.u("samples", r.jitter.samples).u("pcr_discontinuities", r.jitter.pcr_discontinuities)
        .b("sampled", r.jitter.sampled).d("p50_ms", r.jitter.p50_ms).d("p99_ms", r.jitter.p99_ms)
        .d("max_ms", r.jitter.max_ms).close();
    if (r.compare.enabled) {
        const CompareStats& c = r.compare;
        j.open("compare").b("aligned", c.aligned).b("in_order_complete", c.in_order_complete())
            .u("source_packets", c.source_packets).u("start_packet", c.start_packet)
            .u("end_packet", c.end_packet).u("matched", c.matched).u("mismatched", c.mismatched)
            .u("missing", c.missing).u("extra", c.extra);
        if (c.first_error_packet) j.u("first_error_packet", *c.first_error_packet);
        else j.null("first_error_packet");
        j.close();
    }
    j.close();
    return j.take() + "\n";
}

std::string to_text(const Report& r, const RunInfo& info) {
    std::string o;
    if (!info.url.empty()) o += "stream     " + info.url + " (" + info.transport + ")\n";
    o += fmt("received   %" PRIu64 " datagrams, %" PRIu64 " TS packets, %" PRIu64
             " bytes in %.3f s on UDP port %u (%s; ended by %s)\n",
             r.datagrams, r.ts_packets, r.bytes, r.duration_s(), unsigned(info.port), mode_name(r.mode),
             info.end_reason.c_str());
    if (info.socket_drops || info.truncated || info.foreign)
        o += fmt("receiver   %" PRIu64 " dropped by our socket buffer, %" PRIu64 " truncated, %" PRIu64
                 " from other senders (ignored)\n",
                 info.socket_drops, info.truncated, info.foreign);
    if (info.rtsp)
        o += fmt("rtsp       %" PRIu64 " keepalives (%" PRIu64 " answered, %" PRIu64 " failed), teardown %s,"
                 " control connection ended by %s%s\n",
                 info.keepalives, info.keepalives_answered, info.keepalive_failures, info.teardown_ok ? "ok" : "FAILED",
                 info.control_end.empty() ? "?" : info.control_end.c_str(), control_ok(info) ? "" : " (FAILED)");
    if (r.mode == Mode::Rtp) {
        const RtpStats& t = r.rtp;
        o += fmt("rtp        seq %u..%u (+%u wraps), expected %" PRIu64 ": lost %" PRIu64
                 ", duplicated %" PRIu64 ", reordered %" PRIu64 "\n",
                 unsigned(t.first_seq), unsigned(t.last_seq), unsigned(t.cycles), t.expected, t.lost,
                 t.duplicated, t.reordered);
        if (t.invalid || t.resyncs || t.strays || t.ssrc_changes)
            o += fmt("rtp        %" PRIu64 " invalid, %" PRIu64 " sequence restarts, %" PRIu64
                     " stray, %" PRIu64 " SSRC changes\n",
                     t.invalid, t.resyncs, t.strays, t.ssrc_changes);
    }
    o += fmt("ts         CC errors %" PRIu64 ", transport errors %" PRIu64 ", sync byte errors %" PRIu64
             " (sync lost %" PRIu64 "x), bad datagram lengths %" PRIu64 ", null packets %" PRIu64 "\n",
             r.ts.cc_errors, r.ts.transport_errors, r.ts.sync_byte_errors, r.ts.sync_losses,
             r.ts.bad_length, r.ts.null_packets);
    for (const auto& p : r.ts.pids)
        o += fmt("  pid %-5u %10" PRIu64 " packets  CC errors %" PRIu64 "  duplicates %" PRIu64
                 "  discontinuities %" PRIu64 "%s\n",
                 unsigned(p.pid), p.packets, p.cc_errors, p.duplicates, p.discontinuities,
                 p.pcr ? "  (PCR)" : "");
    o += fmt("timing     median interval %.3f ms, p99 %.3f ms\n", r.median_interval_ms, r.p99_interval_ms);
    for (size_t k = 0; k < r.top_gaps.size(); ++k) {
        const Gap& g = r.top_gaps[k];
        std::string seqs = g.seq ? fmt(" seq %u->%u", unsigned(g.prev_seq.value_or(0)), unsigned(*g.seq)) : "";
        o += fmt("  gap %zu    %.3f ms before datagram %" PRIu64 " at %" PRId64 ".%09" PRId64 "%s\n", k + 1,
                 g.ms, g.index, g.at_ns / 1'000'000'000, g.at_ns % 1'000'000'000, seqs.c_str());
    }
    if (r.jitter.samples)
        o += fmt("jitter     vs PCR schedule (pid %u, %" PRIu64 " samples%s): p50 %.3f ms, p99 %.3f ms, max %.3f ms"
                 "%s\n",
                 unsigned(r.jitter.pcr_pid.value_or(0)), r.jitter.samples, r.jitter.sampled ? ", sampled" : "",
                 r.jitter.p50_ms, r.jitter.p99_ms, r.jitter.max_ms,
                 r.jitter.pcr_discontinuities
                     ? fmt(", %" PRIu64 " PCR discontinuities", r.jitter.pcr_discontinuities).c_str()
                     : "");
    else
        o += "jitter     no PCR received\n";
    if (r.compare.enabled) {
        const CompareStats& c = r.compare;
        if (!c.aligned)
            o += "compare    the received packets were not found in the source file\n";
        else
            o += fmt("compare    source packets %" PRIu64 "..%" PRIu64 " of %" PRIu64 ": matched %" PRIu64
                     ", mismatched %" PRIu64 ", missing %" PRIu64 ", extra %" PRIu64 "\n",
                     c.start_packet, c.end_packet, c.source_packets, c.matched, c.mismatched, c.missing,
                     c.extra);
        o += c.in_order_complete() ? "compare    every source packet in that range arrived once, in order, intact\n"
                                   : "compare    FAILED\n";
    }
    o += r.datagrams == 0 ? "verdict    NOTHING RECEIVED\n"
                          : (r.has_errors() ? "verdict    ERRORS\n" : "verdict    clean\n");
    return o;
}

}  // namespace of::verify
