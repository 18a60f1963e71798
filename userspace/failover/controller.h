// The failover controller: one server's side of a failover pair (seed 004).
//
// It runs the Fig. 5 state machine (state_machine.h) on its own thread, at real-time priority
// when configured, because its timing is the pair's timing:
//   - as primary it sends heartbeats every Failover_Heartbeat_Freq ms on both paths (private link
//     and stream LAN), renews its egress-gate lease, replicates every session decision of the
//     engine to the partner, answers failover_sync, and watches its own stream interface and
//     sessions ([0095]): a local failure sends a failover message at once;
//   - as secondary it runs the replicated sessions in lockstep behind a closed gate, and takes
//     over on a failover message or after Max_Missed_Heartbeats silent periods on BOTH paths:
//     it resumes each session from the first packet the primary did not put on the wire (seen
//     by its gate's ingress through the hub, or from the last heartbeat), opens its gate, becomes
//     Primary_No_Secondary and tells the old primary to stop.
// The type/state pair itself lives in the failover backend (failover.ko or its userspace
// holder: libfo), which signals every change to registered processes (SIGFAILOVER).
#pragma once

#include <netinet/in.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "common/failover_limits.h"
#include "common/result.h"
#include "failover/peer_protocol.h"
#include "failover/state_machine.h"
#include "tcp_takeover/hub_view.h"

namespace of::engine {
class Engine;
}
namespace of::gate {
class Gate;
}
namespace of::fo {
class Backend;
}

namespace of::failover {

enum class FailureReason : uint8_t {
    kNone = 0,
    kCriticalProcess = 1,  // a registered critical process died
    kStreamInterface = 2,  // public / gigabit interface failure
    kDisk = 3,             // extent reads fail
    kSoftware = 4,         // system software failure
    kOperator = 5,         // an operator forced it
    kHealth = 6,           // a health check failed (temperature, fans, power: an outside monitor)
};
const char* to_string(FailureReason r);

// The lease a secondary grants (docs/failover.md) ends 2 ms before its detection time
// (heartbeat_ms × max_missed), and the primary's senders stop 3 ms before that: so that they need
// not wait between two acks, the detection time must exceed one heartbeat period by this much.
constexpr uint32_t kMinDetectionSlackMs = 6;
// EINVAL with the reason unless 1 <= heartbeat_ms <= kMaxHeartbeatMs, 1 <= max_missed <=
// kMaxMissedHeartbeats (common/failover_limits.h) and
// (max_missed - 1) × heartbeat_ms >= kMinDetectionSlackMs.
Status check_heartbeat_settings(uint32_t heartbeat_ms, uint32_t max_missed);

struct ControllerOptions {
    uint32_t heartbeat_ms = 5;
    uint32_t max_missed = 3;
    uint16_t peer_port = 7400;
    std::optional<in_addr> partner_private;  // the partner over the private link
    std::optional<in_addr> partner_admin;    // the partner's admin IP on the stream LAN
    std::optional<in_addr> admin_ip;         // ours: LAN-path messages leave from it
    std::optional<in_addr> stream_ip;        // the shared stream IP: takeover announcements leave from it
    std::vector<uint8_t> key;                // shared HMAC key, 16..64 bytes
    int rt_priority = 0;                     // SCHED_FIFO for the controller thread; 0 = normal
    std::string stream_interface;            // watched for link loss ([0095])
    // [0083] parameters this server sends in a SyncReply (primary) and compares (secondary).
    std::function<std::vector<std::pair<std::string, std::string>>()> sync_params;
    // Applies what a sync brought; returns why not if it cannot (the sync then fails).
    std::function<Status(const std::vector<std::pair<std::string, std::string>>&)> apply_sync;
    // Carry the stream IP's TCP connections (RTSP) over at a takeover (docs/tcp-takeover.md):
    // the service the hub view watches (the gate must copy its frames: AttachOptions::tcp_port),
    // and its message framers. Unset: connections are not carried over.
    std::optional<tcp_takeover::HubViewOptions> tcp;
};

// A connection revived here at a takeover: its socket (the receiver owns it) and its state.
struct RevivedConnection {
    int fd = -1;
    tcp_takeover::Revival state;
};

struct PeerCounters {
    uint64_t sent = 0;
    uint64_t received = 0;        // accepted messages
    uint64_t bad_auth = 0;        // tag did not verify
    uint64_t malformed = 0;
    uint64_t replayed = 0;
    uint64_t stale = 0;           // outside the window, or an old epoch
    uint64_t clock_skew = 0;
    uint64_t wrong_source = 0;    // not from the partner's addresses (dropped before authentication)
    uint64_t reflected = 0;       // authentic, but our own (sent back to us with a forged source)
    uint64_t send_errors = 0;
};

struct ControllerStatus {
    State state = State::kUnconfigured;
    bool partner_configured = false;
    bool partner_online = false;
    std::optional<State> partner_state;
    int64_t last_heartbeat_ns = 0;        // CLOCK_REALTIME of the last heartbeat heard (0: never)
    int64_t last_heartbeat_private_ns = 0;
    int64_t last_heartbeat_lan_ns = 0;
    uint32_t heartbeat_ms = 0;
    uint32_t max_missed = 0;
    uint64_t heartbeats_sent = 0;
    uint64_t heartbeats_received = 0;
    uint64_t takeovers = 0;
    int64_t last_takeover_ns = 0;         // CLOCK_REALTIME at which the gate opened
    int64_t last_detection_ns = 0;        // CLOCK_REALTIME at which the failure was declared
    std::string last_takeover_cause;
    uint64_t sessions_resumed_from_hub = 0;
    uint64_t sessions_resumed_from_heartbeat = 0;
    uint64_t sessions_handed_over = 0;    // taken at a planned hand-over's switch point (nothing to resume)
    uint64_t handovers = 0;               // planned hand-overs this server completed as primary
    std::string last_handover;            // how the latest one went
    uint64_t connections_revived = 0;     // TCP connections carried over at takeovers
    uint64_t connections_lost = 0;        // seen on the hub but not revivable at a takeover
    std::string last_connection_lost;     // which and why
    uint64_t announcements_sent = 0;      // takeover announcements to the old primary's gate (fence)
    uint64_t replies_sent = 0;            // RTSP answers sent to the partner (primary)
    uint64_t replies_oversized = 0;       // too large for one message: sent without their records
    tcp_takeover::HubViewCounters hub;    // what the hub view saw (secondary)
    uint64_t frames_malformed = 0;        // copied by the gate but not a well-formed TCP frame
    // Secondary: the primary's sessions it could not mirror (a takeover would lose them), and
    // why for the first 16 of them ("ASSET: error").
    uint64_t unprotected_sessions = 0;
    std::vector<std::string> unprotected;
    std::string last_error;
    PeerCounters peer;
};

class Controller {
public:
    static Result<std::unique_ptr<Controller>> create(ControllerOptions options, engine::Engine& engine,
                                                      gate::Gate* gate, fo::Backend* backend);
    ~Controller();
    Controller(const Controller&) = delete;
    Controller& operator=(const Controller&) = delete;

    // Admin commands ([0079]-[0088]). Each returns the state it left, or why it was refused.
    struct TypeSettings {
        std::optional<in_addr> partner_private, partner_admin;
        std::optional<uint32_t> heartbeat_ms, max_missed;
    };
    Result<State> set_config_type(bool primary, const TypeSettings& settings);
    Result<State> start_streaming();
    // On a Primary whose Secondary is online: a planned hand-over (hand_over()). Otherwise the
    // Fig. 5 move.
    Result<State> stop_streaming();
    // Hands every session to the online secondary without a lost or doubled datagram: each RTP
    // flow switches between two datagrams at the first one due ~50 ms from now, then this server
    // goes Primary_Offline and the secondary takes the RTSP connections over. ETIMEDOUT (still
    // Primary, nothing changed) if the secondary does not accept every flow in time.
    Result<State> hand_over();
    // Secondary: pulls the [0083] parameters from the primary; returns after success or failure.
    Result<State> failover_sync();
    Result<State> failover_unsync();
    // Waits up to `wait` for a message from the partner; returns the state it reported, or
    // nothing if it was silent (or none is configured). A transmitting partner sends a heartbeat
    // every period; a secondary sends nothing to a server that does not transmit.
    std::optional<State> listen_for_partner(std::chrono::milliseconds wait);
    // How long a server coming up as primary listens for a transmitting partner before it starts
    // (seed 004 [0063]: a server that returns while its partner serves becomes the secondary).
    std::chrono::milliseconds join_listen_time() const;
    // Reports a local failure ([0095]); the primary fails over to its partner at once. Returns
    // after the failover message is sent.
    void local_failure(FailureReason reason, const std::string& detail);
    // [0095] every cause but the stream link and the daemon's own death (disk, software, health,
    // operator), one path: a Primary fails over to its Secondary; a secondary fails (it can no
    // longer protect the primary's sessions: its acks tell the primary so). A server with no
    // partner to take over (alone, or Primary_No_Secondary) keeps serving: EBUSY, the failure
    // recorded in last_error. Returns the state it left.
    Result<State> report_failure(FailureReason reason, const std::string& detail);
    // The primary's parameters changed: push them to an online secondary.
    void parameters_changed();
    // A session decision of the engine (its observer): the primary sends it to the partner.
    // Safe from any thread, including from inside the engine (it takes no lock the engine waits on).
    void replicate(const SessionRecord& record);
    // The answer to an RTSP request on a connection the pair carries over, with the session
    // decisions that request caused (sent as one message; replicate() for the others).
    void replicate_reply(const ConnReply& reply);
    // Called on the controller thread after a takeover with the connections revived here (the
    // callee owns their sockets), e.g. to adopt them and the sessions into RTSP.
    void on_takeover(std::function<void(std::vector<RevivedConnection>)> fn);
    // Called right after every state change, on the thread that made it, before the gate follows
    // the new state (at a takeover: after the connections were revived, before the gate opens).
    // Must not block and must not call the Controller.
    void on_state(std::function<void(State before, State now)> fn);

    ControllerStatus status() const;
    State state() const;
    bool state_is(State s) const;

private:
    struct Impl;
    explicit Controller(std::unique_ptr<Impl> impl);
    std::unique_ptr<Impl> impl_;
};

}  // namespace of::failover
