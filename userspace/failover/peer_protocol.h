// Messages between the two servers of a failover pair, on the private link (and, for
// heartbeats, also on the stream LAN so that a cut private link alone is not taken for a dead
// partner).
//
// Every datagram is  header | body | HMAC-SHA256(key, header | body)  (32 bytes). The receiver
// checks, in order: size and magic/version, the tag (constant time), the sender's clock within
// kMaxClockSkewNs of ours, and that (epoch, seq) is new: a per-epoch sliding window of 64
// sequence numbers, and a new epoch only with a later send time than the last accepted message.
// A message failing any check changes nothing and is counted by reason.
#pragma once

#include <netinet/in.h>

#include <array>
#include <cstdint>
#include <span>
#include <string>
#include <variant>
#include <vector>

#include "common/result.h"

namespace of::failover {

constexpr uint32_t kPeerMagic = 0x4f46504c;  // "OFPL"
constexpr uint8_t kPeerVersion = 1;
constexpr size_t kPeerHeaderSize = 32;
constexpr size_t kPeerTagSize = 32;
constexpr size_t kPeerMaxDatagram = 1400;    // stays within one Ethernet frame
constexpr int64_t kMaxClockSkewNs = 2'000'000'000;
constexpr size_t kMaxProgressEntries = 64;
constexpr size_t kMaxNameLength = 64;
constexpr size_t kMinKeyBytes = 16, kMaxKeyBytes = 64;

enum class MsgType : uint8_t {
    kHeartbeat = 1,      // primary -> secondary, every Failover_Heartbeat_Freq ms, both paths
    kHeartbeatAck = 2,   // secondary -> primary: I am online (and in which state)
    kFailover = 3,       // primary -> secondary: I failed, take over now ([0095])
    kStop = 4,           // new primary -> old primary: stop streaming ([0097])
    kSession = 5,        // primary -> secondary: a client request and its decisions
    kSyncRequest = 6,    // secondary -> primary: send me the [0083] parameters
    kSyncReply = 7,      // primary -> secondary: the parameters
    kReply = 8,          // primary -> secondary: an RTSP answer and the decisions it carries
    kHandOver = 9,       // primary -> secondary: take these flows from these packets on (planned)
    kHandOverAck = 10,   // secondary -> primary: the flows of one part it will take
    kHandOverCancel = 11,  // primary -> secondary: forget that hand-over
};

// Per-session progress carried by heartbeats: where the primary's sender is.
struct Progress {
    uint64_t session = 0;
    uint64_t next_packet = 0;  // absolute TS packet index of the next datagram it will send
};

struct Heartbeat {
    uint8_t state = 0;            // failover::State of the sender
    uint32_t sessions = 0;        // sessions the sender runs
    uint32_t progress_offset = 0; // which slice of the sessions this heartbeat reports
    std::vector<Progress> progress;  // at most kMaxProgressEntries
};

struct HeartbeatAck {
    uint8_t state = 0;
    uint64_t lease_until_ns = 0;  // secondary's CLOCK_REALTIME: the primary may transmit until then; 0 = none
    uint32_t fence_gen = 0;       // the secondary's takeover generation: with its epoch, names the
                                  // token it will announce a takeover with (fence_token)
};

struct FailoverNotice {
    uint8_t reason = 0;  // failover::FailureReason
    std::string detail;  // short, for the log
};

struct StopOrder {
    uint64_t takeover_ns = 0;  // when the sender became active (CLOCK_REALTIME); a transmitting
                               // receiver obeys only if that is later than its own start
};

enum class SessionOp : uint8_t { kSetup = 1, kPlay = 2, kPause = 3, kTeardown = 4 };

// A replicated session decision. The secondary runs exactly this session.
struct SessionRecord {
    SessionOp op = SessionOp::kSetup;
    uint64_t session = 0;
    std::string asset;
    in_addr client_ip{};
    uint16_t client_port = 0;
    uint16_t client_rtcp_port = 0;  // RTP only; 0: none
    bool rtp = true;
    uint32_t ssrc = 0;
    // The play segment (kPlay): see pacer::Segment.
    uint64_t start_packet = 0;
    int64_t start_time_ns = 0;
    uint16_t seq_base = 0;
    uint32_t rtp_ts_base = 0;
};

struct SyncRequest {
    uint64_t nonce = 0;
};

// The parameters of seed 004 [0083], as key/value text so that new ones need no new format.
struct SyncReply {
    uint64_t nonce = 0;
    int64_t primary_time_ns = 0;  // system time, [0083]
    std::vector<std::pair<std::string, std::string>> params;  // bounded by the datagram size
};

// The answer to one RTSP request, sent to the partner before it is written to the client's
// connection, with the session decisions that request caused: one message, so the partner has
// both or neither. A partner taking the connection over answers from it a request that was
// executed but not yet answered on the wire, instead of executing it twice
// (tcp_takeover/hub_view.h, docs/tcp-takeover.md).
constexpr size_t kMaxReplyRecords = 4;
struct ConnReply {
    in_addr client_ip{};
    uint16_t client_port = 0;      // the client's TCP port, host order
    uint64_t request_end = 0;      // client-stream offset just after the request
    uint64_t response_start = 0;   // server-stream offset of the answer's first byte
    std::string response;          // the answer as written (bounded by the datagram)
    std::vector<SessionRecord> records;  // at most kMaxReplyRecords
};

// A planned hand-over (docs/failover.md, "Planned hand-over"): the primary stops each RTP flow
// just before `seq` and the secondary, running it in lockstep, passes it from `seq` on (the
// gate's PASS_BEFORE / PASS_FROM rules), so the viewer's stream changes server between two
// datagrams. `seq` is the first datagram due after at_ns. Sent in parts of at most
// kMaxHandOverEntries flows; each part is acknowledged.
constexpr size_t kMaxHandOverEntries = 128;
struct HandOverEntry {
    in_addr client{};
    uint16_t port = 0;  // the client's RTP port, host order
    uint16_t seq = 0;   // the first RTP sequence number the secondary sends
};
struct HandOver {
    uint64_t id = 0;     // random per hand-over
    int64_t at_ns = 0;   // CLOCK_REALTIME of the switch
    uint16_t part = 0, parts = 1;
    std::vector<HandOverEntry> entries;  // at most kMaxHandOverEntries
};
struct HandOverAck {
    uint64_t id = 0;
    uint16_t part = 0;
    uint16_t accepted = 0;  // flows of that part the secondary runs and ruled (all, or it refuses)
};
struct HandOverCancel {
    uint64_t id = 0;
};

using Body = std::variant<Heartbeat, HeartbeatAck, FailoverNotice, StopOrder, SessionRecord, SyncRequest, SyncReply,
                          ConnReply, HandOver, HandOverAck, HandOverCancel>;

struct Message {
    uint64_t epoch = 0;    // random per daemon start
    uint64_t seq = 0;      // per epoch, from 1
    int64_t sent_ns = 0;   // CLOCK_REALTIME at the sender
    Body body;
};

MsgType type_of(const Body& b);

// Serializes and signs. Fails (EMSGSIZE) if the message does not fit kPeerMaxDatagram.
Result<std::vector<uint8_t>> encode(const Message& m, std::span<const uint8_t> key);

// Parses and authenticates one datagram (no replay check: see ReplayGuard). Never reads out of
// bounds; every malformed input is an EBADMSG error, a bad tag EPERM.
Result<Message> decode(std::span<const uint8_t> datagram, std::span<const uint8_t> key);

// Rejects replays and stale messages from one peer.
class ReplayGuard {
public:
    enum class Verdict { kAccept, kReplay, kStale, kClockSkew };
    Verdict check(const Message& m, int64_t now_ns);

private:
    uint64_t epoch_ = 0;
    uint64_t highest_ = 0;
    uint64_t window_ = 0;  // bit i: highest_ - i was seen
    int64_t last_sent_ns_ = 0;
    bool any_ = false;
};

// The two paths between the servers of a pair. Each signs with its own key, derived from the pair's
// key, so that a message captured on one path cannot be replayed on the other (each path keeps
// its own replay window).
enum class PeerPath : uint8_t { kPrivate = 0, kLan = 1 };
// HMAC-SHA256(key, "oneframe peer path <name>"): 32 bytes.
std::vector<uint8_t> path_key(std::span<const uint8_t> key, PeerPath path);

// The token a secondary announces its takeover with on the stream LAN (docs/failover.md, "Split
// brain"): HMAC-SHA256(pair key, "oneframe fence" | epoch | generation), first 16 bytes. Its primary
// computes the same from the secondary's authenticated acks and installs it in its gate; nobody
// without the key can, and a token is announced once (the generation moves on).
std::array<uint8_t, 16> fence_token(std::span<const uint8_t> key, uint64_t epoch, uint32_t generation);

// Reads a key file: hex, 32..128 hex digits (16..64 bytes), surrounding whitespace ignored.
Result<std::vector<uint8_t>> load_key_file(const std::string& path);
Result<std::vector<uint8_t>> parse_key_hex(const std::string& text);

}  // namespace of::failover
