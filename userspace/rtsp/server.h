// The RTSP 1.0 server of the stream IP: accepts connections on an sd-event loop, parses
// requests with RequestParser, answers them, and drives an abstract SessionBackend (the
// daemon's streaming engine). Everything runs on the loop's thread; no call blocks.
//
// Sessions belong to the server, not to a TCP connection: a connection closing leaves its
// sessions streaming (RTSP lets the next request come on a new connection). A session ends on
// TEARDOWN, or when no request naming it arrived for the session timeout; then the server calls
// SessionBackend::teardown.
#pragma once

#include <netinet/in.h>
#include <systemd/sd-event.h>

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>

#include "common/result.h"
#include "rtsp/headers.h"
#include "rtsp/message.h"

namespace of::rtsp {

struct AssetDescription {
    int64_t duration_ns = 0;   // 0: unknown
    uint64_t bitrate_bps = 0;  // 0: unknown
    uint64_t version = 0;      // SDP o= session id/version (e.g. ingest time); 0 is fine
};

struct SetupRequest {
    std::string asset;
    Transport transport;
    sockaddr_in client_addr{};  // the peer's IPv4 address with transport.client_port_lo
    std::string session;        // the Session of a repeated SETUP; empty for a new session
};

struct SetupReply {
    std::string session;            // RFC 2326 session-id, at most 64 bytes; should be unguessable
    uint16_t server_port_lo = 0;    // source port of the stream (0: not announced)
    uint16_t server_port_hi = 0;    // RTCP port for RTP, else 0
    std::optional<uint32_t> ssrc;   // RTP only
};

struct PlayReply {
    int64_t start_ns = 0;            // where the stream was actually entered (a random-access point)
    std::optional<int64_t> end_ns;   // end of the range played, if known
    uint16_t rtp_seq = 0;            // first RTP packet's sequence number and timestamp (RTP-Info),
    uint32_t rtp_time = 0;           // ignored for raw transports
};

// Implemented by the streaming engine. Errors carry errno codes mapped by rtsp_status_for():
// ENOENT unknown asset, ENOSPC/EDQUOT over MPEG_Stream_Count_Limit or a bandwidth limit,
// ESRCH unknown session, EBADFD not valid in the session's state, ERANGE range outside the asset,
// ENOTSUP transport not servable. Called on the loop thread; must not block, and must not destroy
// the RtspServer from inside a call.
class SessionBackend {
public:
    virtual ~SessionBackend() = default;
    virtual Result<AssetDescription> describe(const std::string& asset) = 0;
    virtual Result<SetupReply> setup(const SetupRequest& request) = 0;
    // range: nullopt when PLAY had no Range (start, or resume after PAUSE, where it stopped).
    virtual Result<PlayReply> play(const std::string& session, const std::optional<Range>& range) = 0;
    virtual Status pause(const std::string& session) = 0;
    virtual Status teardown(const std::string& session) = 0;
};

// Told of each connection's life and of each answer, so that a failover partner can carry the
// connection on after a takeover (docs/tcp-takeover.md). Called on the loop thread, for IPv4
// peers only; must not block, and must not call back into the RtspServer.
class ConnectionObserver {
public:
    virtual ~ConnectionObserver() = default;
    // A connection was accepted or adopted.
    virtual void opened(const sockaddr_in& peer) = 0;
    // The server is about to close it on purpose: its FIN should reach the client.
    virtual void closing(const sockaddr_in& peer) = 0;
    // A request begins: the backend's decisions from now until answered() are its decisions.
    virtual void request(const sockaddr_in& peer) = 0;
    // The answer to the request ending at client-stream offset `request_end`, about to be queued
    // at server-stream offset `response_start` (offsets count each direction's bytes from the
    // connection's first; a parse error's answer has the offset of the refused request's end).
    virtual void answered(const sockaddr_in& peer, uint64_t request_end, uint64_t response_start,
                          std::string_view response) = 0;
};

// A live connection handed over from elsewhere (revived after a takeover, tcp_takeover/).
struct AdoptedConnection {
    int fd = -1;              // connected TCP socket; the server owns it from the call on
    sockaddr_in peer{};
    uint64_t in_offset = 0;   // client-stream offset of pending[0]
    std::string pending;      // client bytes not answered yet: parsed and answered at once
    uint64_t out_offset = 0;  // server-stream offset just after `unsent`
    std::string unsent;       // answer bytes to send first
};

struct Limits {
    ParserLimits parser;
    size_t max_connections = 1024;
    size_t max_sessions = 20000;               // sessions the server tracks in all (453 beyond)
    size_t max_sessions_per_connection = 16;   // alive sessions SETUP on one connection (453 beyond)
    // One client address cannot take every connection slot or every stream of the engine's
    // limit from the other viewers. Raise them for load generators behind one address.
    size_t max_connections_per_address = 64;   // refused beyond
    size_t max_sessions_per_address = 64;      // alive sessions streaming to one IPv4 address (453)
    size_t max_output_bytes = 64 * 1024;       // answers queued for a peer that does not read;
                                               // past this the connection's requests wait
    size_t max_read_per_wakeup = 16 * 1024;    // fairness between busy connections
    uint64_t session_timeout_usec = 60'000'000;   // no request naming the session: teardown
    uint64_t idle_timeout_usec = 120'000'000;     // connection without a request: closed
    uint64_t request_timeout_usec = 10'000'000;   // a started request, or unsent answers, that
                                                  // make no progress this long: 408 and closed
};

struct Counters {
    uint64_t connections_accepted = 0;
    uint64_t connections_adopted = 0;     // carried on after a takeover
    uint64_t connections_refused = 0;     // over max_connections or max_connections_per_address
    uint64_t connections_timed_out = 0;   // idle, slow request, or not reading answers
    uint64_t connections_open = 0;
    uint64_t requests = 0;                // complete requests (and framed bad ones)
    uint64_t protocol_errors = 0;         // requests the parser refused
    uint64_t sessions_created = 0;
    uint64_t sessions_torn_down = 0;      // TEARDOWN
    uint64_t sessions_timed_out = 0;
    uint64_t backend_errors = 0;          // backend calls that returned an error
    uint64_t reads_paused = 0;            // times a connection's output hit max_output_bytes
    std::map<int, uint64_t> responses;    // by status code
};

// Opens a listening TCP socket (SO_REUSEADDR, non-blocking, close-on-exec) on `addr`
// (port 0 picks a free port).
Result<int> listen_tcp(const sockaddr_in& addr, int backlog = 128);

class RtspServer {
public:
    // Does not listen until start_listening() (a standby server of a failover pair must not: its
    // kernel would half-open connections the partner owns).
    static Result<std::unique_ptr<RtspServer>> create(sd_event* loop, SessionBackend& backend, const Limits& limits = {});
    // Serves on `listen_fd`, a listening SOCK_STREAM socket that the caller keeps open for the
    // server's lifetime and closes afterwards (e.g. from systemd socket activation).
    static Result<std::unique_ptr<RtspServer>> create(sd_event* loop, int listen_fd, SessionBackend& backend,
                                                      const Limits& limits = {});
    // Opens its own listening socket on `addr` and closes it on destruction.
    static Result<std::unique_ptr<RtspServer>> create(sd_event* loop, const sockaddr_in& addr,
                                                      SessionBackend& backend, const Limits& limits = {});
    // Closes every connection (with a FIN; the observer is not told). Sessions are left to the
    // backend (no teardown is called): the daemon decides what becomes of streams when the RTSP
    // front end stops.
    ~RtspServer();

    // Accepts on a listening socket (owned and closed by the server if take_ownership; else the
    // caller's, kept open while listening). EALREADY if listening.
    Status start_listening(int listen_fd, bool take_ownership);
    void stop_listening();
    bool listening() const { return listen_fd_ >= 0; }
    // Serves a connection carried over from elsewhere: unsent answers go out and pending requests
    // are answered at once. The server owns the fd even on failure.
    Status adopt_connection(AdoptedConnection connection);
    // Forgets every connection without a FIN or an RST: the partner carries them on.
    void drop_connections_silently();
    void set_observer(ConnectionObserver* observer) { observer_ = observer; }
    RtspServer(const RtspServer&) = delete;
    RtspServer& operator=(const RtspServer&) = delete;

    uint16_t port() const;  // the listening port, host order
    const Counters& counters() const { return counters_; }
    size_t session_count() const { return sessions_.size(); }
    size_t connection_count() const { return connections_.size(); }
    bool has_session(const std::string& id) const { return sessions_.count(id) != 0; }

    // For the engine: RTCP receiver reports from the client also prove it alive. ESRCH if unknown.
    Status touch_session(const std::string& id);
    // Takes over a session created elsewhere (replicated from the failover partner), so that
    // requests and the timeout apply to it; only `client` may control it (INADDR_ANY: anyone).
    // EEXIST, EINVAL (bad id or asset), ENOSPC (max_sessions).
    Status adopt_session(const std::string& id, const std::string& asset, TransportKind kind, in_addr client = {});
    // Forgets a session the engine ended on its own, without calling teardown. ESRCH if unknown.
    Status forget_session(const std::string& id);

private:
    struct Connection;
    struct Session;

    RtspServer(sd_event* loop, SessionBackend& backend, const Limits& limits);
    Connection* add_connection(int fd, const sockaddr_storage& peer, bool adopted);
    void feed_preread(Connection& c);

    static int on_listen(sd_event_source*, int fd, uint32_t revents, void* userdata);
    static int on_accept_retry(sd_event_source*, uint64_t usec, void* userdata);
    static int on_connection_io(sd_event_source*, int fd, uint32_t revents, void* userdata);
    static int on_connection_timer(sd_event_source*, uint64_t usec, void* userdata);
    static int on_session_timer(sd_event_source*, uint64_t usec, void* userdata);

    void accept_pending();
    void service(Connection& c, uint32_t revents);
    void process_requests(Connection& c);
    void flush(Connection& c);
    void update_connection(Connection& c);
    void close_connection(Connection& c, bool silently);
    uint64_t now_usec() const;

    void handle(Connection& c, const Request& req);
    void answer(Connection& c, const Response& r, std::optional<uint32_t> cseq);
    Response handle_options(Connection& c, const Request& req);
    Response handle_describe(Connection& c, const Request& req);
    Response handle_setup(Connection& c, const Request& req);
    Response handle_play(Connection& c, const Request& req);
    Response handle_pause(Connection& c, const Request& req);
    Response handle_teardown(Connection& c, const Request& req);
    Response handle_parameter(Connection& c, const Request& req);
    Response error_response(int status);
    Response backend_error(const Error& e);

    // The session named by the request's Session header, checked against the URI's asset;
    // on failure `status` is the answer (454, 400).
    Session* session_for(const Connection& c, const Request& req, bool required, int& status);
    Session* session_of_request(const Connection& c, const Request& req, int& status);
    Status add_session(const std::string& id, const std::string& asset, TransportKind kind,
                       std::string control_url, uint64_t owner, uint32_t client_ip);
    void end_session(const std::string& id);
    void touch(Session& s);
    uint32_t session_timeout_seconds() const;

    sd_event* loop_;
    int listen_fd_ = -1;
    bool owns_fd_ = false;
    ConnectionObserver* observer_ = nullptr;
    SessionBackend& backend_;
    Limits limits_;
    Counters counters_;
    sd_event_source* listen_source_ = nullptr;
    sd_event_source* accept_retry_ = nullptr;
    uint64_t next_connection_id_ = 1;
    std::unordered_map<uint64_t, std::unique_ptr<Connection>> connections_;
    std::unordered_map<std::string, std::unique_ptr<Session>> sessions_;
    std::unordered_map<std::string, size_t> connections_per_address_;  // key: raw peer address bytes
    std::unordered_map<uint32_t, size_t> sessions_per_address_;        // key: IPv4, network order
};

}  // namespace of::rtsp
