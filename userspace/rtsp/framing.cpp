#include "rtsp/framing.h"

#include <string>

namespace of::rtsp {
namespace {

class RequestFramer final : public tcp_takeover::Framer {
public:
    explicit RequestFramer(const ParserLimits& l) : parser_(l) {}

    Result<std::vector<uint64_t>> feed(std::string_view bytes) override {
        std::vector<uint64_t> ends;
        // The server reads at most room() bytes at a time; the parser frames alike in any split.
        while (!bytes.empty()) {
            size_t n = std::min(bytes.size(), parser_.room());
            if (n == 0) return make_error(EPROTO, "request larger than the parser's limits");
            parser_.append(bytes.substr(0, n));
            bytes.remove_prefix(n);
            appended_ += n;
            for (;;) {
                Request req;
                ParseStatus st = parser_.next(req);
                if (st == ParseStatus::NeedMore) break;
                if (st == ParseStatus::Error && parser_.error().fatal)
                    return make_error(EPROTO, "request refused for good: " + parser_.error().reason);
                ends.push_back(appended_ - parser_.buffered());
            }
        }
        return ends;
    }
    size_t partial() const override { return parser_.buffered(); }

private:
    RequestParser parser_;
    uint64_t appended_ = 0;
};

constexpr size_t kMaxHead = 16 * 1024, kMaxBody = 64 * 1024;

class ResponseFramer final : public tcp_takeover::Framer {
public:
    Result<std::vector<uint64_t>> feed(std::string_view bytes) override {
        std::vector<uint64_t> ends;
        fed_ += bytes.size();
        buf_.append(bytes);
        for (;;) {
            if (!in_body_) {
                size_t e = buf_.find("\r\n\r\n");
                if (e == std::string::npos) {
                    if (buf_.size() > kMaxHead) return make_error(EPROTO, "answer head over 16 KiB");
                    break;
                }
                if (buf_.compare(0, 5, "RTSP/") != 0) return make_error(EPROTO, "not an RTSP answer");
                auto len = content_length(std::string_view(buf_).substr(0, e + 2));
                if (!len) return len.error();
                buf_.erase(0, e + 4);
                consumed_ += e + 4;
                in_body_ = true;
                body_left_ = *len;
            }
            size_t take = size_t(std::min<uint64_t>(body_left_, buf_.size()));
            buf_.erase(0, take);
            consumed_ += take;
            body_left_ -= take;
            if (body_left_) break;
            in_body_ = false;
            last_end_ = consumed_;
            ends.push_back(consumed_);
        }
        return ends;
    }
    size_t partial() const override { return size_t(fed_ - last_end_); }

private:
    // The Content-Length of a head (status line and header lines, each ending in CRLF); 0 if none.
    static Result<uint64_t> content_length(std::string_view head) {
        uint64_t len = 0;
        size_t pos = head.find("\r\n");  // skip the status line
        while (pos != std::string_view::npos && pos + 2 < head.size()) {
            size_t start = pos + 2, end = head.find("\r\n", start);
            if (end == std::string_view::npos) break;
            std::string_view line = head.substr(start, end - start);
            size_t colon = line.find(':');
            if (colon != std::string_view::npos && iequals(line.substr(0, colon), "Content-Length")) {
                std::string_view v = line.substr(colon + 1);
                while (!v.empty() && (v.front() == ' ' || v.front() == '\t')) v.remove_prefix(1);
                while (!v.empty() && (v.back() == ' ' || v.back() == '\t')) v.remove_suffix(1);
                if (v.empty() || v.size() > 6) return make_error(EPROTO, "bad Content-Length");
                len = 0;
                for (char c : v) {
                    if (c < '0' || c > '9') return make_error(EPROTO, "bad Content-Length");
                    len = len * 10 + uint64_t(c - '0');
                }
                if (len > kMaxBody) return make_error(EPROTO, "answer body over 64 KiB");
            }
            pos = end;
        }
        return len;
    }

    std::string buf_;
    uint64_t fed_ = 0;       // bytes given to feed()
    uint64_t consumed_ = 0;  // bytes framed (heads, and bodies as far as read)
    uint64_t last_end_ = 0;  // just after the last complete answer
    uint64_t body_left_ = 0;
    bool in_body_ = false;
};

}  // namespace

std::unique_ptr<tcp_takeover::Framer> make_request_framer(const ParserLimits& limits) {
    return std::make_unique<RequestFramer>(limits);
}
std::unique_ptr<tcp_takeover::Framer> make_response_framer() { return std::make_unique<ResponseFramer>(); }

}  // namespace of::rtsp
