#include "rtsp/headers.h"

#include <cinttypes>
#include <cstdio>
#include <vector>

#include "rtsp/message.h"
#include "rtsp/text.h"

namespace of::rtsp {

using detail::cat;
namespace {

constexpr size_t kMaxTransportSpecs = 8;
constexpr size_t kMaxTransportParams = 16;
constexpr size_t kMaxSessionParams = 4;
constexpr size_t kMaxDestinationBytes = 64;
constexpr size_t kMaxHostBytes = 255;
constexpr size_t kMaxUriBytes = 4096;
constexpr int64_t kNsPerSec = 1'000'000'000;
constexpr int64_t kMaxNptSeconds = 1'000'000'000;  // 10^9 s keeps every value far from overflow

std::string_view trim(std::string_view s) {
    while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
    while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
    return s;
}

// Splits on `sep` into at most `max` pieces; false if there are more.
bool split(std::string_view s, char sep, size_t max, std::vector<std::string_view>& out) {
    out.clear();
    for (;;) {
        if (out.size() == max) return false;
        size_t p = s.find(sep);
        out.push_back(s.substr(0, p));
        if (p == std::string_view::npos) return true;
        s.remove_prefix(p + 1);
    }
}

bool is_digits(std::string_view s) {
    if (s.empty()) return false;
    for (char c : s)
        if (c < '0' || c > '9') return false;
    return true;
}

// Decimal with at most `max_digits` digits.
bool to_u64(std::string_view s, size_t max_digits, uint64_t& out) {
    if (!is_digits(s) || s.size() > max_digits) return false;
    uint64_t v = 0;
    for (char c : s) v = v * 10 + uint64_t(c - '0');
    out = v;
    return true;
}

bool to_port(std::string_view s, uint16_t& out) {
    uint64_t v = 0;
    if (!to_u64(s, 5, v) || v == 0 || v > 65535) return false;
    out = uint16_t(v);
    return true;
}

bool token_chars(std::string_view s) {
    if (s.empty()) return false;
    for (unsigned char c : s) {
        bool ok = (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                  c == '-' || c == '_' || c == '.' || c == '+' || c == '!' || c == '#' || c == '$' ||
                  c == '%' || c == '&' || c == '\'' || c == '*' || c == '^' || c == '`' || c == '|' ||
                  c == '~';
        if (!ok) return false;
    }
    return true;
}

std::string_view unquote(std::string_view v) {
    if (v.size() >= 2 && v.front() == '"' && v.back() == '"') return v.substr(1, v.size() - 2);
    return v;
}

bool starts_with_ci(std::string_view s, std::string_view prefix) {
    return s.size() >= prefix.size() && iequals(s.substr(0, prefix.size()), prefix);
}

Error invalid(std::string what) { return make_error(EINVAL, std::move(what)); }

}  // namespace

// ---- Transport ----

std::string_view transport_name(TransportKind kind) {
    switch (kind) {
        case TransportKind::RtpAvp: return "RTP/AVP";
        case TransportKind::RawUdp: return "RAW/RAW/UDP";
        case TransportKind::Mp2tUdp: return "MP2T/H2221/UDP";
    }
    return "RTP/AVP";
}

Result<Transport> negotiate_transport(std::string_view header_value) {
    std::vector<std::string_view> specs, params, parts;
    if (trim(header_value).empty()) return invalid("empty Transport");
    if (!split(header_value, ',', kMaxTransportSpecs, specs))
        return invalid(cat("more than ", std::to_string(kMaxTransportSpecs), " transport specifications"));

    std::optional<Transport> chosen;
    std::string refusal = "no transport specification";
    for (std::string_view spec : specs) {
        if (!split(spec, ';', kMaxTransportParams + 1, params))
            return invalid(cat("more than ", std::to_string(kMaxTransportParams), " transport parameters"));
        std::string_view proto = trim(params[0]);
        if (!split(proto, '/', 3, parts) || parts.size() < 2) return invalid(cat("bad transport protocol '", proto, "'"));
        for (auto p : parts)
            if (!token_chars(p)) return invalid(cat("bad transport protocol '", proto, "'"));

        Transport t;
        bool usable = true;
        bool udp = parts.size() == 2 || iequals(parts[2], "UDP");
        if (iequals(parts[0], "RTP") && iequals(parts[1], "AVP")) {
            t.kind = TransportKind::RtpAvp;
            t.lower_explicit = parts.size() == 3;
        } else if (iequals(parts[0], "RAW") && iequals(parts[1], "RAW")) {
            t.kind = TransportKind::RawUdp;
        } else if (iequals(parts[0], "MP2T") && iequals(parts[1], "H2221")) {
            t.kind = TransportKind::Mp2tUdp;
        } else {
            usable = false;
            refusal = cat("transport ", proto, " is not offered");
        }
        if (usable && !udp) {
            usable = false;
            refusal = cat("only UDP transports are offered, not ", proto);
        }

        bool have_port = false;
        for (size_t i = 1; i < params.size(); ++i) {
            std::string_view param = trim(params[i]);
            if (param.empty()) continue;  // "RTP/AVP;unicast;" is common enough
            size_t eq = param.find('=');
            std::string_view name = trim(param.substr(0, eq));
            std::string_view value = eq == std::string_view::npos ? std::string_view{} : unquote(trim(param.substr(eq + 1)));
            if (!token_chars(name)) return invalid(cat("bad transport parameter '", param, "'"));
            if (iequals(name, "client_port")) {
                std::string_view lo = value, hi;
                size_t dash = value.find('-');
                if (dash != std::string_view::npos) {
                    lo = value.substr(0, dash);
                    hi = value.substr(dash + 1);
                }
                if (!to_port(lo, t.client_port_lo)) return invalid(cat("bad client_port '", value, "'"));
                t.client_port_hi = t.client_port_lo;
                if (dash != std::string_view::npos) {
                    if (!to_port(hi, t.client_port_hi) || t.client_port_hi < t.client_port_lo ||
                        t.client_port_hi - t.client_port_lo > 1)
                        return invalid(cat("bad client_port '", value, "'"));
                }
                have_port = true;
            } else if (iequals(name, "multicast")) {
                if (usable) refusal = "multicast is not offered";
                usable = false;
            } else if (iequals(name, "interleaved")) {
                if (usable) refusal = "interleaved (TCP) transport is not offered";
                usable = false;
            } else if (iequals(name, "mode")) {
                if (!iequals(value, "play")) {
                    if (usable) refusal = "only mode=play is offered";
                    usable = false;
                }
            } else if (iequals(name, "destination")) {
                // An address (IPv4, IPv6) or a host name; the server compares it with the peer.
                if (value.size() > kMaxDestinationBytes) return invalid("destination too long");
                for (char c : value) {
                    bool ok = (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                              c == ':' || c == '.' || c == '-';
                    if (!ok) return invalid(cat("bad destination '", value, "'"));
                }
                t.destination = std::string(value);
            }
            // Everything else (unicast, ttl, ssrc, source, append, layers, port) changes nothing
            // for a unicast UDP play session; RFC 2326 lets unknown parameters be ignored.
        }
        if (usable && !have_port) {
            usable = false;
            refusal = "no client_port";
        }
        if (usable && !chosen) chosen = std::move(t);
    }
    if (!chosen) return make_error(ENOTSUP, refusal);
    return std::move(*chosen);
}

std::string format_transport(const Transport& t, const TransportReply& reply) {
    std::string out;
    if (t.kind == TransportKind::RtpAvp)
        out = t.lower_explicit ? "RTP/AVP/UDP" : "RTP/AVP";
    else
        out = std::string(transport_name(t.kind));
    out += ";unicast";
    if (!t.destination.empty()) {
        out += ";destination=";
        out += t.destination;
    }
    out += ";client_port=";
    out += std::to_string(t.client_port_lo);
    if (t.client_port_hi != t.client_port_lo) {
        out += '-';
        out += std::to_string(t.client_port_hi);
    }
    if (reply.server_port_lo) {
        out += ";server_port=";
        out += std::to_string(reply.server_port_lo);
        if (reply.server_port_hi && reply.server_port_hi != reply.server_port_lo) {
            out += '-';
            out += std::to_string(reply.server_port_hi);
        }
    }
    if (reply.ssrc) {
        char buf[16];
        std::snprintf(buf, sizeof buf, "%08" PRIX32, *reply.ssrc);
        out += ";ssrc=";
        out += buf;
    }
    return out;
}

// ---- Range ----

namespace {

// 1*DIGIT ["." *DIGIT] or H+:MM:SS[.frac] into nanoseconds.
bool parse_npt_time(std::string_view s, int64_t& ns) {
    auto frac_ns = [](std::string_view f, int64_t& out) {
        if (f.size() > 9) return false;
        int64_t v = 0;
        for (char c : f) {
            if (c < '0' || c > '9') return false;
            v = v * 10 + (c - '0');
        }
        for (size_t i = f.size(); i < 9; ++i) v *= 10;
        out = v;
        return true;
    };
    std::string_view whole = s, frac;
    size_t dot = s.find('.');
    if (dot != std::string_view::npos) {
        whole = s.substr(0, dot);
        frac = s.substr(dot + 1);
    }
    int64_t f = 0;
    if (!frac_ns(frac, f)) return false;
    uint64_t seconds = 0;
    if (whole.find(':') == std::string_view::npos) {
        if (!to_u64(whole, 9, seconds)) return false;
    } else {
        std::vector<std::string_view> hms;
        if (!split(whole, ':', 3, hms) || hms.size() != 3) return false;
        uint64_t h = 0, m = 0, sec = 0;
        if (!to_u64(hms[0], 6, h) || !to_u64(hms[1], 2, m) || !to_u64(hms[2], 2, sec) || m > 59 || sec > 59)
            return false;
        seconds = h * 3600 + m * 60 + sec;
    }
    if (seconds >= uint64_t(kMaxNptSeconds)) return false;
    ns = int64_t(seconds) * kNsPerSec + f;
    return true;
}

}  // namespace

Result<Range> parse_range(std::string_view header_value) {
    std::string_view v = trim(header_value);
    size_t eq = v.find('=');
    if (eq == std::string_view::npos) return invalid("Range without a unit");
    std::string_view unit = trim(v.substr(0, eq));
    if (!token_chars(unit)) return invalid("bad Range unit");
    if (!iequals(unit, "npt")) return make_error(ENOTSUP, cat("only npt ranges are supported, not ", unit));
    std::string_view rest = v.substr(eq + 1);
    if (rest.find(';') != std::string_view::npos)
        return make_error(ENOTSUP, "scheduled play (Range ;time=) is not supported");
    rest = trim(rest);
    size_t dash = rest.find('-');
    if (dash == std::string_view::npos) return invalid("npt range without '-'");
    std::string_view start = trim(rest.substr(0, dash));
    std::string_view end = trim(rest.substr(dash + 1));
    if (start.empty() && end.empty()) return invalid("empty npt range");

    Range r;
    if (!start.empty() && !iequals(start, "now")) {
        int64_t ns = 0;
        if (!parse_npt_time(start, ns)) return invalid(cat("bad npt time '", start, "'"));
        r.start_ns = ns;
    }
    if (!end.empty()) {
        int64_t ns = 0;
        if (!parse_npt_time(end, ns)) return invalid(cat("bad npt time '", end, "'"));
        r.end_ns = ns;
    }
    if (r.start_ns && r.end_ns && *r.start_ns > *r.end_ns) return make_error(ERANGE, "npt range ends before it starts");
    return r;
}

std::string format_npt_seconds(int64_t ns) {
    if (ns < 0) ns = 0;
    int64_t ms = ns / 1'000'000;
    char buf[32];
    std::snprintf(buf, sizeof buf, "%" PRId64 ".%03" PRId64, ms / 1000, ms % 1000);
    return buf;
}

std::string format_npt_range(int64_t start_ns, std::optional<int64_t> end_ns) {
    std::string out = cat("npt=", format_npt_seconds(start_ns), "-");
    if (end_ns) out += format_npt_seconds(*end_ns);
    return out;
}

// ---- Session ----

bool valid_session_id(std::string_view id) {
    if (id.empty() || id.size() > kMaxSessionIdBytes) return false;
    for (char c : id) {
        bool ok = (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '$' ||
                  c == '-' || c == '_' || c == '.' || c == '+';
        if (!ok) return false;
    }
    return true;
}

Result<SessionHeader> parse_session(std::string_view header_value) {
    std::vector<std::string_view> parts;
    if (!split(header_value, ';', kMaxSessionParams + 1, parts)) return invalid("too many Session parameters");
    SessionHeader h;
    std::string_view id = trim(parts[0]);
    if (!valid_session_id(id)) return invalid("bad session id");
    h.id = std::string(id);
    for (size_t i = 1; i < parts.size(); ++i) {
        std::string_view p = trim(parts[i]);
        size_t eq = p.find('=');
        std::string_view name = trim(p.substr(0, eq));
        if (!token_chars(name)) return invalid("bad Session parameter");
        if (iequals(name, "timeout")) {
            uint64_t t = 0;
            if (eq == std::string_view::npos || !to_u64(trim(p.substr(eq + 1)), 10, t) || t > UINT32_MAX)
                return invalid("bad Session timeout");
            h.timeout_s = uint32_t(t);
        }
    }
    return h;
}

std::string format_session(std::string_view id, uint32_t timeout_s) {
    return cat(id, ";timeout=", std::to_string(timeout_s));
}

// ---- Request URI ----

bool valid_asset_name(std::string_view name) {
    if (name.empty() || name.size() > kMaxAssetNameBytes || name.front() == '.') return false;
    for (char c : name) {
        bool ok = (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '.' ||
                  c == '_' || c == '~' || c == '-';
        if (!ok) return false;
    }
    return true;
}

namespace {

int hexval(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

bool percent_decode(std::string_view in, std::string& out) {
    out.clear();
    for (size_t i = 0; i < in.size(); ++i) {
        if (in[i] != '%') {
            out.push_back(in[i]);
            continue;
        }
        if (i + 2 >= in.size()) return false;
        int hi = hexval(in[i + 1]), lo = hexval(in[i + 2]);
        if (hi < 0 || lo < 0) return false;
        out.push_back(char(hi * 16 + lo));
        i += 2;
    }
    return true;
}

bool parse_control(std::string_view seg, uint32_t& track) {
    static constexpr std::string_view kPrefixes[] = {"trackid=", "streamid=", "stream=", "track="};
    std::string_view digits;
    bool matched = false;
    for (auto p : kPrefixes) {
        if (starts_with_ci(seg, p)) {
            digits = seg.substr(p.size());
            matched = true;
            break;
        }
    }
    if (!matched) {
        if (!starts_with_ci(seg, "track")) return false;
        digits = seg.substr(5);
    }
    uint64_t v = 0;
    if (!to_u64(digits, 6, v)) return false;
    track = uint32_t(v);
    return true;
}

bool valid_host(std::string_view host) {
    if (host.empty() || host.size() > kMaxHostBytes) return false;
    if (host.front() == '[') {
        if (host.size() < 3 || host.back() != ']') return false;
        for (char c : host.substr(1, host.size() - 2))
            if (hexval(c) < 0 && c != ':' && c != '.') return false;
        return true;
    }
    for (char c : host) {
        bool ok = (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '-' || c == '.';
        if (!ok) return false;
    }
    return true;
}

}  // namespace

Result<RequestUri> parse_request_uri(std::string_view uri) {
    RequestUri out;
    if (uri.empty() || uri.size() > kMaxUriBytes) return invalid("bad URI length");
    for (unsigned char c : uri)
        if (c <= 0x20 || c >= 0x7f) return invalid("control, space or non-ASCII byte in URI");
    if (uri == "*") {
        out.star = true;
        return out;
    }
    if (uri.find('#') != std::string_view::npos) return invalid("fragment in URI");

    std::string_view rest;
    if (starts_with_ci(uri, "rtsp://")) {
        rest = uri.substr(7);
        size_t end = rest.find_first_of("/?");
        std::string_view authority = rest.substr(0, end);
        rest = end == std::string_view::npos ? std::string_view{} : rest.substr(end);
        size_t at = authority.rfind('@');
        if (at != std::string_view::npos) authority.remove_prefix(at + 1);  // user:pass is not used
        std::string_view host = authority, port;
        if (!authority.empty() && authority.front() == '[') {
            size_t close = authority.find(']');
            if (close == std::string_view::npos) return invalid("bad IPv6 host");
            host = authority.substr(0, close + 1);
            std::string_view after = authority.substr(close + 1);
            if (!after.empty()) {
                if (after.front() != ':') return invalid("bad host");
                port = after.substr(1);
            }
        } else {
            size_t colon = authority.find(':');
            if (colon != std::string_view::npos) {
                host = authority.substr(0, colon);
                port = authority.substr(colon + 1);
            }
        }
        if (!valid_host(host)) return invalid("bad host");
        out.host = std::string(host);
        if (!port.empty()) {
            uint16_t p = 0;
            if (!to_port(port, p)) return invalid("bad port");
            out.port = p;
        }
    } else if (uri.front() == '/') {
        rest = uri;
    } else {
        return invalid("URI is neither rtsp://... nor an absolute path");
    }

    std::string_view path = rest, query;
    size_t q = rest.find('?');
    if (q != std::string_view::npos) {
        path = rest.substr(0, q);
        query = rest.substr(q + 1);
    }

    if (!path.empty()) {
        path.remove_prefix(1);  // the leading '/'
        if (!path.empty() && path.back() == '/') path.remove_suffix(1);
    }
    if (!path.empty()) {
        std::vector<std::string_view> segs;
        if (!split(path, '/', 2, segs)) return make_error(ENOENT, "no asset has a path this deep");
        std::string decoded;
        if (!percent_decode(segs[0], decoded)) return invalid("bad percent-escape in URI");
        if (!valid_asset_name(decoded)) return make_error(ENOENT, "not an asset name");
        out.asset = decoded;
        if (segs.size() == 2) {
            if (!percent_decode(segs[1], decoded)) return invalid("bad percent-escape in URI");
            uint32_t track = 0;
            if (!parse_control(decoded, track)) return make_error(ENOENT, "unknown control suffix");
            out.track = track;
        }
    }

    if (!query.empty()) {
        std::vector<std::string_view> params;
        if (!split(query, '&', 16, params)) return invalid("too many query parameters");
        for (auto p : params) {
            size_t eq = p.find('=');
            std::string_view key = p.substr(0, eq);
            std::string_view value = eq == std::string_view::npos ? std::string_view{} : p.substr(eq + 1);
            if (key == "transport") {
                if (value == "raw")
                    out.raw_udp = true;
                else if (value == "rtp")
                    out.raw_udp = false;
                else
                    return invalid("transport= must be raw or rtp");
            }
            // Other parameters belong to the client (players add their own) and are ignored.
        }
    }
    return out;
}

std::string content_base(const RequestUri& uri, std::string_view fallback_host) {
    std::string out = "rtsp://";
    if (uri.host.empty()) {
        out += fallback_host;
    } else {
        out += uri.host;
        if (uri.port) {
            out += ':';
            out += std::to_string(*uri.port);
        }
    }
    out += "/";
    out += uri.asset;
    out += "/";
    return out;
}

}  // namespace of::rtsp
