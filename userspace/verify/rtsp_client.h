// The RTSP 1.0 (RFC 2326) client side that fo-verify needs: URL, response parsing, Transport,
// Session and SDP control attributes, and a connection that sends requests and matches responses
// by CSeq. Everything the server sends is untrusted and bounded (see Limits).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/result.h"

namespace of::verify {

struct Url {
    std::string host;     // IPv4 literal or DNS name (no IPv6 literal)
    uint16_t port = 554;
    std::string path;     // "/ASSET..." (at least "/")
    std::string text;     // the URL as given
};
// EINVAL with a reason for anything but rtsp://host[:port][/path].
Result<Url> parse_url(std::string_view s);

using Headers = std::vector<std::pair<std::string, std::string>>;

// A response, or a request the server sent us (servers may; we answer 501).
struct Message {
    bool is_request = false;
    int status = 0;           // responses
    std::string reason;       // responses
    std::string method;       // requests
    Headers headers;
    std::string body;
    // The first header with this name (case-insensitive), or nullptr.
    const std::string* header(std::string_view name) const;
    std::optional<uint32_t> cseq() const;
};

struct Limits {
    size_t max_head = 16 * 1024;   // status line and headers
    size_t max_line = 4096;
    size_t max_headers = 64;
    size_t max_body = 64 * 1024;   // SDP
};

// Parses one message from the front of `buf`. Returns nullopt while incomplete; otherwise the
// message with `consumed` set to its length. EPROTO for malformed input, EMSGSIZE over limits.
Result<std::optional<Message>> parse_message(std::string_view buf, size_t& consumed, const Limits& lim = {});

struct PortPair {
    uint16_t rtp = 0, rtcp = 0;
};

struct TransportReply {
    std::string protocol;                 // "RTP/AVP", "RAW/RAW/UDP", ...
    bool unicast = false;
    std::optional<PortPair> client_port, server_port;
    std::optional<std::string> source;
    std::optional<uint32_t> ssrc;
};
// The first transport of a Transport header value. EPROTO if malformed.
Result<TransportReply> parse_transport(std::string_view value);

struct SessionHeader {
    std::string id;
    int timeout_s = 60;  // RFC 2326 12.37 default
};
// "ID[;timeout=N]". EPROTO for an empty or oversized id or a bad timeout.
Result<SessionHeader> parse_session(std::string_view value);

// The URL to SETUP: the first media's a=control (or the session-level one) of `sdp`, resolved
// against Content-Base (or the request URL). "*" or none means the base itself.
std::string setup_url(std::string_view request_url, const std::string* content_base, std::string_view sdp);

struct ClientOptions {
    int connect_timeout_ms = 5000;
    int response_timeout_ms = 5000;
    std::string user_agent = "fo-verify (oneframe)";
    Limits limits;
    // A connection the server closed is opened again by the next request (RFC 2326 lets a session
    // outlive its connection). Off: the next request fails (ENOTCONN), as for a viewer that
    // watches its control connection.
    bool reconnect = true;
};

// One RTSP connection. Requests carry CSeq, User-Agent and, once set, Session. If the server
// closes the connection between requests, the next request reconnects (RFC 2326 allows a session
// to outlive its TCP connection) unless ClientOptions::reconnect is off.
class RtspClient {
public:
    static Result<RtspClient> connect(const Url& url, ClientOptions opt = {});
    RtspClient(RtspClient&&) noexcept;
    RtspClient& operator=(RtspClient&&) noexcept;
    ~RtspClient();

    // Sends a request and waits for its response (any status). ETIMEDOUT, ECONNRESET, EPROTO.
    Result<Message> request(std::string_view method, std::string_view uri, const Headers& extra = {});

    // Split form for keepalives while receiving: send now, poll fd() for input, pump() to parse.
    Result<uint32_t> send(std::string_view method, std::string_view uri, const Headers& extra = {});
    // Reads what is available without blocking; returns responses completed (requests from the
    // server are answered 501 and not returned). A closed connection is not an error here:
    // connected() turns false.
    Result<std::vector<Message>> pump();
    Result<Message> wait(uint32_t cseq, int timeout_ms);

    int fd() const { return fd_; }
    bool connected() const { return fd_ >= 0; }
    // How the last connection ended: "" while open (or never opened), "fin" (the server closed
    // it), "rst" (reset), or the error.
    const std::string& closed_how() const { return closed_how_; }
    // How the first connection that was lost ended (kept across reconnects); "" if none was.
    const std::string& first_loss() const { return first_loss_; }
    uint64_t reconnects() const { return reconnects_; }
    void set_reconnect(bool on) { opt_.reconnect = on; }
    void set_session(std::string id) { session_ = std::move(id); }
    const std::string& session() const { return session_; }
    const Url& url() const { return url_; }

private:
    RtspClient() = default;
    Status open();
    void close_fd();
    Status send_all(const std::string& data);

    Url url_;
    ClientOptions opt_;
    int fd_ = -1;
    uint32_t next_cseq_ = 1;
    std::string session_;
    std::string inbuf_;
    std::string closed_how_, first_loss_;
    uint64_t opens_ = 0, reconnects_ = 0;
};

// Human text for a response: "461 Unsupported Transport".
std::string status_text(const Message& m);

}  // namespace of::verify
