#include "verify/rtsp_client.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cstring>

#include "common/clock.h"

namespace of::verify {

namespace {

bool iequals(std::string_view a, std::string_view b) {
    return a.size() == b.size() &&
           std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
               return std::tolower(static_cast<unsigned char>(x)) == std::tolower(static_cast<unsigned char>(y));
           });
}

std::string_view trim(std::string_view s) {
    while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
    while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\r')) s.remove_suffix(1);
    return s;
}

template <class T>
std::optional<T> to_num(std::string_view s) {
    T v{};
    if (s.empty()) return std::nullopt;
    auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
    if (ec != std::errc() || p != s.data() + s.size()) return std::nullopt;
    return v;
}

bool token_char(char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || std::strchr("!#$%&'*+-.^_`|~", c);
}

Error proto(std::string m) { return make_error(EPROTO, std::move(m)); }

}  // namespace

Result<Url> parse_url(std::string_view s) {
    if (s.size() > 2048) return make_error(EINVAL, "URL longer than 2048 characters");
    Url u;
    u.text = std::string(s);
    constexpr std::string_view scheme = "rtsp://";
    if (s.size() < scheme.size() || !iequals(s.substr(0, scheme.size()), scheme))
        return make_error(EINVAL, "URL must start with rtsp:// (got '" + std::string(s) + "')");
    s.remove_prefix(scheme.size());
    size_t slash = s.find('/');
    std::string_view auth = s.substr(0, slash);
    u.path = slash == std::string_view::npos ? "/" : std::string(s.substr(slash));
    if (auth.find('@') != std::string_view::npos) return make_error(EINVAL, "URL credentials are not supported");
    if (!auth.empty() && auth.front() == '[') return make_error(EINVAL, "IPv6 addresses are not supported");
    size_t colon = auth.find(':');
    u.host = std::string(auth.substr(0, colon));
    if (colon != std::string_view::npos) {
        auto port = to_num<uint32_t>(auth.substr(colon + 1));
        if (!port || *port == 0 || *port > 65535) return make_error(EINVAL, "bad port in URL '" + u.text + "'");
        u.port = uint16_t(*port);
    }
    if (u.host.empty()) return make_error(EINVAL, "no host in URL '" + u.text + "'");
    for (char c : u.host)
        if (!std::isalnum(static_cast<unsigned char>(c)) && c != '.' && c != '-')
            return make_error(EINVAL, "bad host in URL '" + u.text + "'");
    for (char c : u.path)
        if (static_cast<unsigned char>(c) <= 0x20 || c == 0x7f)
            return make_error(EINVAL, "URL path contains a space or control character");
    return u;
}

const std::string* Message::header(std::string_view name) const {
    for (const auto& [k, v] : headers)
        if (iequals(k, name)) return &v;
    return nullptr;
}

std::optional<uint32_t> Message::cseq() const {
    const std::string* v = header("CSeq");
    if (!v) return std::nullopt;
    return to_num<uint32_t>(trim(*v));
}

Result<std::optional<Message>> parse_message(std::string_view buf, size_t& consumed, const Limits& lim) {
    consumed = 0;
    // Locate the end of the head (an empty line), tolerating bare LF line ends.
    size_t head_end = std::string_view::npos, body_start = 0;
    for (size_t i = 0; i < buf.size(); ++i) {
        if (buf[i] != '\n') continue;
        if (i + 1 < buf.size() && buf[i + 1] == '\n') { head_end = i; body_start = i + 2; break; }
        if (i + 2 < buf.size() && buf[i + 1] == '\r' && buf[i + 2] == '\n') { head_end = i; body_start = i + 3; break; }
    }
    if (head_end == std::string_view::npos) {
        if (buf.size() > lim.max_head) return make_error(EMSGSIZE, "RTSP response head over " + std::to_string(lim.max_head) + " bytes");
        return std::optional<Message>{};
    }
    if (head_end > lim.max_head) return make_error(EMSGSIZE, "RTSP response head over " + std::to_string(lim.max_head) + " bytes");
    std::string_view head = buf.substr(0, head_end);

    Message m;
    size_t pos = 0;
    bool first = true;
    while (pos <= head.size()) {
        size_t nl = head.find('\n', pos);
        std::string_view line = head.substr(pos, nl == std::string_view::npos ? std::string_view::npos : nl - pos);
        pos = nl == std::string_view::npos ? head.size() + 1 : nl + 1;
        if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
        if (line.size() > lim.max_line) return make_error(EMSGSIZE, "RTSP line over " + std::to_string(lim.max_line) + " bytes");
        if (first) {
            first = false;
            if (line.substr(0, 5) == "RTSP/") {
                // RTSP/1.0 SP 3DIGIT SP reason
                if (line.size() < 12 || line.substr(0, 8) != "RTSP/1.0" || line[8] != ' ')
                    return proto("bad RTSP status line '" + std::string(line.substr(0, 80)) + "'");
                auto code = to_num<int>(line.substr(9, 3));
                if (!code || *code < 100 || *code > 999 || (line.size() > 12 && line[12] != ' '))
                    return proto("bad RTSP status code in '" + std::string(line.substr(0, 80)) + "'");
                m.status = *code;
                m.reason = std::string(trim(line.size() > 13 ? line.substr(13) : std::string_view{}));
            } else {
                size_t sp = line.find(' ');
                std::string_view method = line.substr(0, sp);
                if (method.empty() || sp == std::string_view::npos ||
                    !std::all_of(method.begin(), method.end(), token_char) ||
                    line.find("RTSP/1.0", sp) == std::string_view::npos)
                    return proto("not an RTSP message: '" + std::string(line.substr(0, 80)) + "'");
                m.is_request = true;
                m.method = std::string(method);
            }
            continue;
        }
        if (line.empty()) continue;
        if (line.front() == ' ' || line.front() == '\t') {  // folded continuation (RFC 2326 15.1)
            if (m.headers.empty()) return proto("RTSP header continuation without a header");
            m.headers.back().second += " ";
            m.headers.back().second += trim(line);
            if (m.headers.back().second.size() > lim.max_line) return make_error(EMSGSIZE, "RTSP header value too long");
            continue;
        }
        size_t colon = line.find(':');
        if (colon == std::string_view::npos || colon == 0) return proto("bad RTSP header line '" + std::string(line.substr(0, 80)) + "'");
        std::string_view name = line.substr(0, colon);
        if (!std::all_of(name.begin(), name.end(), token_char)) return proto("bad RTSP header name '" + std::string(name.substr(0, 80)) + "'");
        if (m.headers.size() >= lim.max_headers) return make_error(EMSGSIZE, "more than " + std::to_string(lim.max_headers) + " RTSP headers");
        m.headers.emplace_back(std::string(name), std::string(trim(line.substr(colon + 1))));
    }
    size_t body_len = 0;
    if (const std::string* cl = m.header("Content-Length")) {
        auto n = to_num<size_t>(trim(*cl));
        if (!n) return proto("bad Content-Length '" + cl->substr(0, 40) + "'");
        if (*n > lim.max_body) return make_error(EMSGSIZE, "RTSP body of " + std::to_string(*n) + " bytes over the limit of " + std::to_string(lim.max_body));
        body_len = *n;
    }
    if (buf.size() - body_start < body_len) return std::optional<Message>{};
    m.body = std::string(buf.substr(body_start, body_len));
    consumed = body_start + body_len;
    return std::optional<Message>{std::move(m)};
}

namespace {
Result<PortPair> parse_ports(std::string_view v) {
    size_t dash = v.find('-');
    auto a = to_num<uint32_t>(v.substr(0, dash));
    if (!a || *a == 0 || *a > 65535) return proto("bad port range '" + std::string(v.substr(0, 40)) + "'");
    PortPair p{uint16_t(*a), uint16_t(*a == 65535 ? 0 : *a + 1)};
    if (dash != std::string_view::npos) {
        auto b = to_num<uint32_t>(v.substr(dash + 1));
        if (!b || *b == 0 || *b > 65535) return proto("bad port range '" + std::string(v.substr(0, 40)) + "'");
        p.rtcp = uint16_t(*b);
    }
    return p;
}
}  // namespace

Result<TransportReply> parse_transport(std::string_view value) {
    value = trim(value.substr(0, value.find(',')));
    if (value.empty()) return proto("empty Transport header");
    TransportReply t;
    size_t pos = 0;
    bool first = true;
    while (pos <= value.size()) {
        size_t semi = value.find(';', pos);
        std::string_view part = trim(value.substr(pos, semi == std::string_view::npos ? std::string_view::npos : semi - pos));
        pos = semi == std::string_view::npos ? value.size() + 1 : semi + 1;
        if (first) {
            first = false;
            if (part.empty() || part.size() > 64) return proto("bad transport protocol in '" + std::string(value.substr(0, 80)) + "'");
            t.protocol = std::string(part);
            continue;
        }
        size_t eq = part.find('=');
        std::string_view key = part.substr(0, eq);
        std::string_view val = eq == std::string_view::npos ? std::string_view{} : trim(part.substr(eq + 1));
        if (iequals(key, "unicast")) {
            t.unicast = true;
        } else if (iequals(key, "client_port")) {
            auto p = parse_ports(val);
            if (!p) return p.error();
            t.client_port = *p;
        } else if (iequals(key, "server_port")) {
            auto p = parse_ports(val);
            if (!p) return p.error();
            t.server_port = *p;
        } else if (iequals(key, "source")) {
            if (val.size() > 255) return proto("Transport source too long");
            t.source = std::string(val);
        } else if (iequals(key, "ssrc")) {
            uint32_t v = 0;
            auto [p, ec] = std::from_chars(val.data(), val.data() + val.size(), v, 16);
            if (ec != std::errc() || p != val.data() + val.size() || val.size() > 8) return proto("bad Transport ssrc");
            t.ssrc = v;
        }
    }
    return t;
}

Result<SessionHeader> parse_session(std::string_view value) {
    value = trim(value);
    size_t semi = value.find(';');
    SessionHeader s;
    std::string_view id = trim(value.substr(0, semi));
    if (id.empty() || id.size() > 256) return proto("bad Session id (empty or over 256 characters)");
    for (char c : id)
        if (static_cast<unsigned char>(c) <= 0x20 || static_cast<unsigned char>(c) >= 0x7f)
            return proto("Session id contains a space or control character");
    s.id = std::string(id);
    while (semi != std::string_view::npos) {
        size_t next = value.find(';', semi + 1);
        std::string_view part = trim(value.substr(semi + 1, next == std::string_view::npos ? std::string_view::npos : next - semi - 1));
        semi = next;
        size_t eq = part.find('=');
        if (eq != std::string_view::npos && iequals(trim(part.substr(0, eq)), "timeout")) {
            auto t = to_num<int>(trim(part.substr(eq + 1)));
            if (!t || *t < 1 || *t > 86400) return proto("bad Session timeout '" + std::string(part.substr(0, 40)) + "'");
            s.timeout_s = *t;
        }
    }
    return s;
}

std::string setup_url(std::string_view request_url, const std::string* content_base, std::string_view sdp) {
    std::string base = content_base && !content_base->empty() ? *content_base : std::string(request_url);
    std::string session_control, media_control;
    bool in_media = false;
    size_t pos = 0;
    while (pos < sdp.size()) {
        size_t nl = sdp.find('\n', pos);
        std::string_view line = sdp.substr(pos, nl == std::string_view::npos ? std::string_view::npos : nl - pos);
        pos = nl == std::string_view::npos ? sdp.size() : nl + 1;
        line = trim(line);
        if (line.substr(0, 2) == "m=") {
            if (in_media) break;  // only the first media section
            in_media = true;
        } else if (line.substr(0, 10) == "a=control:") {
            std::string v(trim(line.substr(10)));
            (in_media ? media_control : session_control) = v;
        }
    }
    std::string c = !media_control.empty() ? media_control : session_control;
    if (c.empty() || c == "*") return base;
    if (c.size() >= 7 && iequals(std::string_view(c).substr(0, 7), "rtsp://")) return c;
    if (!base.empty() && base.back() != '/') base += '/';
    return base + c;
}

std::string status_text(const Message& m) {
    return std::to_string(m.status) + (m.reason.empty() ? "" : " " + m.reason);
}

// ---- connection ----

Result<RtspClient> RtspClient::connect(const Url& url, ClientOptions opt) {
    RtspClient c;
    c.url_ = url;
    c.opt_ = std::move(opt);
    if (auto st = c.open(); !st) return st.error();
    return c;
}

RtspClient::RtspClient(RtspClient&& o) noexcept
    : url_(std::move(o.url_)), opt_(std::move(o.opt_)), fd_(std::exchange(o.fd_, -1)), next_cseq_(o.next_cseq_),
      session_(std::move(o.session_)), inbuf_(std::move(o.inbuf_)), closed_how_(std::move(o.closed_how_)),
      first_loss_(std::move(o.first_loss_)), opens_(o.opens_), reconnects_(o.reconnects_) {}

RtspClient& RtspClient::operator=(RtspClient&& o) noexcept {
    if (this != &o) {
        close_fd();
        url_ = std::move(o.url_);
        opt_ = std::move(o.opt_);
        fd_ = std::exchange(o.fd_, -1);
        next_cseq_ = o.next_cseq_;
        session_ = std::move(o.session_);
        inbuf_ = std::move(o.inbuf_);
        closed_how_ = std::move(o.closed_how_);
        first_loss_ = std::move(o.first_loss_);
        opens_ = o.opens_;
        reconnects_ = o.reconnects_;
    }
    return *this;
}

RtspClient::~RtspClient() { close_fd(); }

void RtspClient::close_fd() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
    inbuf_.clear();
    if (first_loss_.empty() && !closed_how_.empty()) first_loss_ = closed_how_;
}

Status RtspClient::open() {
    close_fd();
    if (opens_ > 0 && !opt_.reconnect)
        return make_error(ENOTCONN, "the RTSP control connection is gone (" + (closed_how_.empty() ? "closed" : closed_how_) + ")");
    addrinfo hints{};
    hints.ai_family = AF_INET;
    hints.ai_socktype = SOCK_STREAM;
    addrinfo* res = nullptr;
    std::string port = std::to_string(url_.port);
    if (int rc = getaddrinfo(url_.host.c_str(), port.c_str(), &hints, &res); rc != 0)
        return make_error(EHOSTUNREACH, "cannot resolve " + url_.host + ": " + gai_strerror(rc));
    sockaddr_in addr{};
    std::memcpy(&addr, res->ai_addr, sizeof addr);
    freeaddrinfo(res);

    int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) return errno_error("socket");
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    std::string where = url_.host + ":" + port;
    if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) < 0 && errno != EINPROGRESS) {
        Error e = errno_error("connect to " + where);
        ::close(fd);
        return e;
    }
    pollfd p{fd, POLLOUT, 0};
    int rc;
    do rc = ::poll(&p, 1, opt_.connect_timeout_ms);
    while (rc < 0 && errno == EINTR);
    if (rc == 0) {
        ::close(fd);
        return make_error(ETIMEDOUT, "connect to " + where + ": no answer within " + std::to_string(opt_.connect_timeout_ms) + " ms");
    }
    int err = 0;
    socklen_t len = sizeof err;
    getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len);
    if (rc < 0 || err != 0) {
        Error e = errno_error("connect to " + where, rc < 0 ? errno : err);
        ::close(fd);
        return e;
    }
    fd_ = fd;
    if (opens_++ > 0) ++reconnects_;
    closed_how_.clear();
    return {};
}

Status RtspClient::send_all(const std::string& data) {
    size_t off = 0;
    int64_t deadline = monotonic_ns() + int64_t(opt_.response_timeout_ms) * 1'000'000;
    while (off < data.size()) {
        ssize_t n = ::send(fd_, data.data() + off, data.size() - off, MSG_NOSIGNAL);
        if (n > 0) {
            off += size_t(n);
            continue;
        }
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            int left = int((deadline - monotonic_ns()) / 1'000'000);
            if (left <= 0) return make_error(ETIMEDOUT, "RTSP send: server does not read");
            pollfd p{fd_, POLLOUT, 0};
            ::poll(&p, 1, left);
            continue;
        }
        Error e = errno_error("RTSP send");
        closed_how_ = errno == ECONNRESET || errno == EPIPE ? "rst" : e.message;
        close_fd();
        return e;
    }
    return {};
}

Result<uint32_t> RtspClient::send(std::string_view method, std::string_view uri, const Headers& extra) {
    if (fd_ < 0)
        if (auto st = open(); !st) return st.error();
    uint32_t cseq = next_cseq_++;
    std::string req;
    req.reserve(256);
    req.append(method).append(" ").append(uri).append(" RTSP/1.0\r\n");
    req += "CSeq: " + std::to_string(cseq) + "\r\n";
    req += "User-Agent: " + opt_.user_agent + "\r\n";
    if (!session_.empty()) req += "Session: " + session_ + "\r\n";
    for (const auto& [k, v] : extra) req += k + ": " + v + "\r\n";
    req += "\r\n";
    if (auto st = send_all(req); !st) {
        // A connection the server closed since the last request: one fresh try (if allowed).
        if (auto st2 = open(); !st2) return st2.error();
        if (auto st3 = send_all(req); !st3) return st3.error();
    }
    return cseq;
}

Result<std::vector<Message>> RtspClient::pump() {
    std::vector<Message> out;
    if (fd_ < 0) return out;
    char buf[4096];
    for (;;) {
        ssize_t n = ::recv(fd_, buf, sizeof buf, 0);
        if (n > 0) {
            inbuf_.append(buf, size_t(n));
            if (inbuf_.size() > opt_.limits.max_head + opt_.limits.max_body + 4)
                break;  // parse what we have; the parser reports the oversize message
            continue;
        }
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
        // EOF or error: the server closed. Parse what arrived first.
        closed_how_ = n == 0 ? "fin" : errno == ECONNRESET ? "rst" : std::string("error: ") + std::strerror(errno);
        std::string rest = std::move(inbuf_);
        close_fd();
        inbuf_ = std::move(rest);
        break;
    }
    for (;;) {
        size_t used = 0;
        auto r = parse_message(inbuf_, used, opt_.limits);
        if (!r) {
            close_fd();
            return r.error();
        }
        if (!*r) break;
        inbuf_.erase(0, used);
        Message m = std::move(**r);
        if (m.is_request) {
            // A server-to-client request (ANNOUNCE, SET_PARAMETER...): not supported by this client.
            if (fd_ >= 0) {
                auto cseq = m.cseq();
                std::string resp = "RTSP/1.0 501 Not Implemented\r\nCSeq: " + (cseq ? std::to_string(*cseq) : std::string("0")) + "\r\n\r\n";
                (void)send_all(resp);
            }
            continue;
        }
        out.push_back(std::move(m));
    }
    if (fd_ < 0) inbuf_.clear();
    return out;
}

Result<Message> RtspClient::wait(uint32_t cseq, int timeout_ms) {
    int64_t deadline = monotonic_ns() + int64_t(timeout_ms) * 1'000'000;
    for (;;) {
        auto msgs = pump();
        if (!msgs) return msgs.error();
        for (auto& m : *msgs) {
            // Responses come in request order on a connection; some servers (VLC 3.0's 404) leave
            // CSeq out, so a response without one answers the request we wait for.
            auto c = m.cseq();
            if (!c || *c == cseq) return std::move(m);
            // A late answer to an earlier request (e.g. a timed-out keepalive): skip it.
        }
        if (fd_ < 0) return make_error(ECONNRESET, "RTSP server closed the connection before answering");
        int left = int((deadline - monotonic_ns()) / 1'000'000);
        if (left <= 0) return make_error(ETIMEDOUT, "no RTSP response within " + std::to_string(timeout_ms) + " ms");
        pollfd p{fd_, POLLIN, 0};
        if (::poll(&p, 1, left) < 0 && errno != EINTR) return errno_error("poll");
    }
}

Result<Message> RtspClient::request(std::string_view method, std::string_view uri, const Headers& extra) {
    auto cseq = send(method, uri, extra);
    if (!cseq) return cseq.error();
    auto r = wait(*cseq, opt_.response_timeout_ms);
    if (!r) return make_error(r.error().code, "RTSP " + std::string(method) + ": " + r.error().message);
    return r;
}

}  // namespace of::verify
