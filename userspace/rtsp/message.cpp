#include "rtsp/message.h"

#include <array>

#include "rtsp/status.h"
#include "rtsp/text.h"

namespace of::rtsp {

using detail::cat;
namespace {

constexpr std::array<std::string_view, 11> kMethodNames = {
    "OPTIONS", "DESCRIBE", "ANNOUNCE",      "SETUP",         "PLAY",   "PAUSE",
    "TEARDOWN", "GET_PARAMETER", "SET_PARAMETER", "REDIRECT", "RECORD",
};

char ascii_lower(char c) { return (c >= 'A' && c <= 'Z') ? char(c - 'A' + 'a') : c; }

// RFC 7230 tchar, which is what RFC 2326 means by token.
bool is_tchar(unsigned char c) {
    if ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')) return true;
    switch (c) {
        case '!': case '#': case '$': case '%': case '&': case '\'': case '*': case '+':
        case '-': case '.': case '^': case '_': case '`': case '|': case '~':
            return true;
        default:
            return false;
    }
}

bool is_token(std::string_view s) {
    if (s.empty()) return false;
    for (unsigned char c : s)
        if (!is_tchar(c)) return false;
    return true;
}

std::string_view trim_blanks(std::string_view s) {
    while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
    while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
    return s;
}

// Decimal digits only, no sign, at most `max_digits` of them (so the value cannot overflow).
bool parse_decimal(std::string_view s, size_t max_digits, uint64_t& out) {
    if (s.empty() || s.size() > max_digits) return false;
    uint64_t v = 0;
    for (char c : s) {
        if (c < '0' || c > '9') return false;
        v = v * 10 + uint64_t(c - '0');
    }
    out = v;
    return true;
}

bool parse_cseq(std::string_view s, uint32_t& out) {
    uint64_t v = 0;
    if (!parse_decimal(s, 10, v) || v > UINT32_MAX) return false;
    out = uint32_t(v);
    return true;
}

bool is_rtsp_version(std::string_view v) {
    // "RTSP/" 1*DIGIT "." 1*DIGIT
    if (v.substr(0, 5) != "RTSP/") return false;
    v.remove_prefix(5);
    size_t dot = v.find('.');
    if (dot == std::string_view::npos || dot == 0 || dot + 1 == v.size()) return false;
    for (size_t i = 0; i < v.size(); ++i)
        if (i != dot && (v[i] < '0' || v[i] > '9')) return false;
    return true;
}

// For a request line that is too long: 414 if it is its URI that is too long, else 413.
int overlong_first_line_status(std::string_view line, const ParserLimits& limits) {
    size_t sp1 = line.find(' ');
    if (sp1 == std::string_view::npos) return 413;
    std::string_view rest = line.substr(sp1 + 1);
    size_t sp2 = rest.find(' ');
    size_t uri_len = sp2 == std::string_view::npos ? rest.size() : sp2;
    return uri_len > limits.max_uri_bytes ? 414 : 413;
}

std::string sanitize_value(std::string_view v) {
    std::string out;
    out.reserve(v.size());
    for (char c : v)
        if (c != '\r' && c != '\n' && c != '\0') out.push_back(c);
    return out;
}

}  // namespace

bool iequals(std::string_view a, std::string_view b) {
    if (a.size() != b.size()) return false;
    for (size_t i = 0; i < a.size(); ++i)
        if (ascii_lower(a[i]) != ascii_lower(b[i])) return false;
    return true;
}

std::string_view to_string(Method m) { return kMethodNames[size_t(m)]; }

std::optional<Method> method_from_token(std::string_view token) {
    for (size_t i = 0; i < kMethodNames.size(); ++i)
        if (kMethodNames[i] == token) return Method(i);
    return std::nullopt;
}

const std::string* Request::header(std::string_view name) const {
    for (const auto& h : headers)
        if (iequals(h.name, name)) return &h.value;
    return nullptr;
}

size_t Request::header_count(std::string_view name) const {
    size_t n = 0;
    for (const auto& h : headers)
        if (iequals(h.name, name)) ++n;
    return n;
}

RequestParser::RequestParser(const ParserLimits& limits) : limits_(limits) {}

size_t RequestParser::room() const {
    if (failed_) return 0;
    size_t cap = limits_.max_head_bytes + limits_.max_body_bytes;
    return buf_.size() >= cap ? 0 : cap - buf_.size();
}

bool RequestParser::append(std::string_view bytes) {
    if (bytes.size() > room()) return false;
    buf_.append(bytes);
    return true;
}

void RequestParser::reset_request() {
    scan_ = 0;
    lines_ = 0;
    head_end_ = 0;
    head_parsed_ = false;
    body_len_ = 0;
    pending_ = Request{};
    pending_error_.reset();
}

ParseStatus RequestParser::fail(int status, std::string reason, bool fatal) {
    error_ = ParseError{status, std::move(reason), std::nullopt, fatal};
    if (fatal) {
        // Nothing after this point can be framed; drop the bytes now rather than hold them.
        failed_ = true;
        buf_.clear();
        buf_.shrink_to_fit();
        reset_request();
    }
    return ParseStatus::Error;
}

ParseStatus RequestParser::next(Request& out) {
    if (failed_) return ParseStatus::Error;

    if (head_end_ == 0) {
        if (scan_ == 0) {
            // Empty lines before a request line are tolerated (RFC 2326 follows HTTP here).
            size_t skip = 0;
            while (skip < buf_.size()) {
                if (buf_[skip] == '\n') {
                    ++skip;
                } else if (buf_[skip] == '\r') {
                    if (skip + 1 == buf_.size()) break;
                    if (buf_[skip + 1] != '\n') return fail(400, "bare CR before the request line", true);
                    skip += 2;
                } else {
                    break;
                }
            }
            if (skip) buf_.erase(0, skip);
            if (!buf_.empty() && buf_[0] == '\r') return ParseStatus::NeedMore;
        }
        // Scan line by line from where the last call stopped, so that a request trickling in
        // byte by byte costs linear time, not quadratic.
        for (;;) {
            size_t nl = buf_.find('\n', scan_);
            if (nl == std::string::npos) {
                std::string_view partial(buf_.data() + scan_, buf_.size() - scan_);
                if (!partial.empty() && partial.back() == '\r') partial.remove_suffix(1);
                if (partial.size() > limits_.max_line_bytes) {
                    int st = lines_ == 0 ? overlong_first_line_status(partial, limits_) : 413;
                    return fail(st, cat("line longer than ", std::to_string(limits_.max_line_bytes), " bytes"), true);
                }
                if (buf_.size() > limits_.max_head_bytes)
                    return fail(413, cat("request head larger than ", std::to_string(limits_.max_head_bytes), " bytes"), true);
                return ParseStatus::NeedMore;
            }
            size_t end = nl;
            if (end > scan_ && buf_[end - 1] == '\r') --end;
            std::string_view line(buf_.data() + scan_, end - scan_);
            if (line.size() > limits_.max_line_bytes) {
                int st = lines_ == 0 ? overlong_first_line_status(line, limits_) : 413;
                return fail(st, cat("line longer than ", std::to_string(limits_.max_line_bytes), " bytes"), true);
            }
            if (nl + 1 > limits_.max_head_bytes)
                return fail(413, cat("request head larger than ", std::to_string(limits_.max_head_bytes), " bytes"), true);
            if (line.empty()) {
                head_end_ = nl + 1;
                break;
            }
            if (++lines_ > limits_.max_headers + 1)
                return fail(413, cat("more than ", std::to_string(limits_.max_headers), " header lines"), true);
            scan_ = nl + 1;
        }
    }

    if (!head_parsed_) {
        if (parse_head(pending_) == ParseStatus::Error) return ParseStatus::Error;
    }
    if (buf_.size() < head_end_ + body_len_) return ParseStatus::NeedMore;

    if (body_len_) pending_.body.assign(buf_, head_end_, body_len_);
    buf_.erase(0, head_end_ + body_len_);
    if (pending_error_) {
        error_ = std::move(*pending_error_);
        reset_request();
        return ParseStatus::Error;
    }
    out = std::move(pending_);
    reset_request();
    return ParseStatus::Complete;
}

ParseStatus RequestParser::parse_head(Request& r) {
    std::string_view head(buf_.data(), head_end_);
    size_t pos = 0;
    auto next_line = [&](std::string_view& line) {
        size_t nl = head.find('\n', pos);
        if (nl == std::string_view::npos) return false;
        size_t end = nl;
        if (end > pos && head[end - 1] == '\r') --end;
        line = head.substr(pos, end - pos);
        pos = nl + 1;
        return true;
    };

    std::string_view line;
    next_line(line);
    for (unsigned char c : line)
        if (c < 0x20 || c >= 0x7f) return fail(400, "control or non-ASCII byte in the request line", true);
    size_t sp1 = line.find(' ');
    size_t sp2 = sp1 == std::string_view::npos ? sp1 : line.find(' ', sp1 + 1);
    if (sp2 == std::string_view::npos || line.find(' ', sp2 + 1) != std::string_view::npos)
        return fail(400, "request line is not METHOD SP URI SP VERSION", true);
    std::string_view method = line.substr(0, sp1);
    std::string_view uri = line.substr(sp1 + 1, sp2 - sp1 - 1);
    std::string_view version = line.substr(sp2 + 1);
    if (!is_token(method) || uri.empty() || version.empty())
        return fail(400, "request line is not METHOD SP URI SP VERSION", true);

    std::optional<uint32_t> cseq;
    size_t cseq_count = 0;
    bool cseq_bad = false;
    bool have_length = false;
    // A fatal answer still echoes the CSeq if one was already seen, so the client can match it.
    auto fatal = [&](int status, std::string reason) {
        fail(status, std::move(reason), true);
        error_.cseq = cseq;
        return ParseStatus::Error;
    };
    while (next_line(line) && !line.empty()) {
        if (line[0] == ' ' || line[0] == '\t') return fatal(400, "folded header line");
        size_t colon = line.find(':');
        if (colon == std::string_view::npos) return fatal(400, "header line without a colon");
        std::string_view name = line.substr(0, colon);
        if (!is_token(name)) return fatal(400, "header name is not a token");
        std::string_view value = trim_blanks(line.substr(colon + 1));
        for (unsigned char c : value)
            if ((c < 0x20 && c != '\t') || c == 0x7f) return fatal(400, "control byte in a header value");
        if (iequals(name, "CSeq")) {
            ++cseq_count;
            uint32_t v = 0;
            if (parse_cseq(value, v)) {
                if (!cseq) cseq = v;
            } else {
                cseq_bad = true;
            }
        } else if (iequals(name, "Content-Length")) {
            // Two lengths would make the framing ambiguous: refuse rather than pick one.
            if (have_length) return fatal(400, "more than one Content-Length");
            have_length = true;
            uint64_t len = 0;
            if (value.empty() || value.find_first_not_of("0123456789") != std::string_view::npos)
                return fatal(400, "Content-Length is not a number");
            if (!parse_decimal(value, 12, len) || len > limits_.max_body_bytes)
                return fatal(413, cat("body larger than ", std::to_string(limits_.max_body_bytes), " bytes"));
            body_len_ = size_t(len);
        }
        r.headers.push_back(HeaderField{std::string(name), std::string(value)});
    }
    head_parsed_ = true;

    // The request is framed from here on: what follows is answered without closing.
    std::optional<uint32_t> echo = (cseq_count == 1 && !cseq_bad) ? cseq : std::nullopt;
    auto refuse = [&](int status, std::string reason) {
        pending_error_ = ParseError{status, std::move(reason), echo, false};
        return ParseStatus::NeedMore;
    };
    if (uri.size() > limits_.max_uri_bytes)
        return refuse(414, cat("URI longer than ", std::to_string(limits_.max_uri_bytes), " bytes"));
    if (version != "RTSP/1.0") {
        if (is_rtsp_version(version)) return refuse(505, cat("version ", version));
        return refuse(400, "not an RTSP request");
    }
    auto m = method_from_token(method);
    if (!m) return refuse(501, cat("unknown method ", method));
    if (cseq_count == 0) return refuse(400, "no CSeq");
    if (cseq_count > 1 || cseq_bad) return refuse(400, "invalid CSeq");
    r.method = *m;
    r.uri = std::string(uri);
    r.cseq = *cseq;
    return ParseStatus::NeedMore;
}

Response& Response::header(std::string_view name, std::string_view value) {
    headers_.push_back(HeaderField{std::string(name), sanitize_value(value)});
    return *this;
}

Response& Response::body(std::string_view content_type, std::string body) {
    content_type_ = sanitize_value(content_type);
    body_ = std::move(body);
    return *this;
}

std::string Response::serialize(std::optional<uint32_t> cseq) const {
    std::string out;
    out.reserve(128 + body_.size());
    out += "RTSP/1.0 ";
    out += std::to_string(status_);
    out += ' ';
    out += reason_phrase(status_);
    out += "\r\n";
    if (cseq) {
        out += "CSeq: ";
        out += std::to_string(*cseq);
        out += "\r\n";
    }
    for (const auto& h : headers_) {
        out += h.name;
        out += ": ";
        out += h.value;
        out += "\r\n";
    }
    if (!body_.empty()) {
        out += "Content-Type: ";
        out += content_type_;
        out += "\r\nContent-Length: ";
        out += std::to_string(body_.size());
        out += "\r\n";
    }
    out += "\r\n";
    out += body_;
    return out;
}

}  // namespace of::rtsp
