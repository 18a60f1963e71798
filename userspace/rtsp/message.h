// RTSP 1.0 requests from untrusted peers: an incremental parser with hard limits, and the
// response builder. No I/O and no sd-event here, so this builds in the libFuzzer flavour.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace of::rtsp {

enum class Method : uint8_t {
    Options,
    Describe,
    Announce,
    Setup,
    Play,
    Pause,
    Teardown,
    GetParameter,
    SetParameter,
    Redirect,
    Record,
};

std::string_view to_string(Method m);
// The method for an RTSP 1.0 method token (case-sensitive, as RFC 2326 says); nullopt if unknown.
std::optional<Method> method_from_token(std::string_view token);

// Every limit is on what one request may hold. Exceeding one answers 413 (414 for the URI) and
// closes the connection, because the parser cannot know where the next request starts.
struct ParserLimits {
    size_t max_head_bytes = 8 * 1024;  // request line + header lines + the empty line
    size_t max_line_bytes = 2 * 1024;  // any one line, without its CRLF
    size_t max_uri_bytes = 1024;
    size_t max_headers = 32;
    size_t max_body_bytes = 4 * 1024;  // Content-Length
};

struct HeaderField {
    std::string name;   // as the client spelled it
    std::string value;  // leading and trailing blanks removed
};

struct Request {
    Method method = Method::Options;
    std::string uri;
    uint32_t cseq = 0;
    std::vector<HeaderField> headers;
    std::string body;

    // The first header with this name, compared case-insensitively; nullptr if absent.
    const std::string* header(std::string_view name) const;
    size_t header_count(std::string_view name) const;
};

enum class ParseStatus { Complete, NeedMore, Error };

struct ParseError {
    int status = 400;               // the RTSP status to answer
    std::string reason;             // for operators and tests; never sent to the peer
    std::optional<uint32_t> cseq;   // echoed in the answer when the request carried a valid one
    bool fatal = true;              // framing is lost: answer, then close the connection
};

// Parses requests out of the bytes a connection receives, in any split: byte by byte, several
// pipelined requests in one read, or a body that arrives later than its head. The parser owns
// its buffer and never holds more than room() allows.
class RequestParser {
public:
    explicit RequestParser(const ParserLimits& limits = {});

    // How many more bytes append() accepts: one whole request at the limits, minus what is
    // buffered. A caller reads at most this much from the socket.
    size_t room() const;
    // Appends received bytes. Returns false, appending nothing, if they exceed room().
    bool append(std::string_view bytes);

    // Extracts the next request. Complete: `out` holds it and its bytes are consumed.
    // NeedMore: read more. Error: error() says what to answer; a non-fatal error consumed the
    // offending request and the next call continues with the following one; after a fatal
    // error every call returns Error again.
    ParseStatus next(Request& out);
    const ParseError& error() const { return error_; }

    size_t buffered() const { return buf_.size(); }
    // True while bytes of an unfinished request are buffered (a slow or stalled sender).
    bool mid_request() const { return !buf_.empty(); }

private:
    ParseStatus fail(int status, std::string reason, bool fatal);
    ParseStatus parse_head(Request& out);
    void reset_request();

    ParserLimits limits_;
    std::string buf_;
    // Scan state of the request at the front of buf_.
    size_t scan_ = 0;        // start of the first line not yet scanned
    size_t lines_ = 0;       // complete non-empty lines scanned so far
    size_t head_end_ = 0;    // bytes of the head including its empty line; 0 until found
    bool head_parsed_ = false;
    size_t body_len_ = 0;
    Request pending_;
    std::optional<ParseError> pending_error_;  // a non-fatal error waiting for its body bytes
    ParseError error_;
    bool failed_ = false;
};

// A response: status line, CSeq, the given headers, and an optional body with its
// Content-Type and Content-Length. Header values are stripped of CR, LF and NUL so that nothing
// taken from a request can inject a header.
class Response {
public:
    explicit Response(int status) : status_(status) {}
    Response& header(std::string_view name, std::string_view value);
    Response& body(std::string_view content_type, std::string body);
    int status() const { return status_; }
    std::string serialize(std::optional<uint32_t> cseq) const;

private:
    int status_;
    std::vector<HeaderField> headers_;
    std::string content_type_;
    std::string body_;
};

// Case-insensitive ASCII comparison, used for header names and URI schemes.
bool iequals(std::string_view a, std::string_view b);

}  // namespace of::rtsp
