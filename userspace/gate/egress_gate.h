// C++ facade over the eBPF egress gate (bpf/gate.bpf.c). The contract it implements, with the
// pin paths, map layouts and decision order, is docs/gate-protocol.md; the layouts are bpf/gate.h.
//
// A Gate is one stream interface's gate: gate_egress and gate_ingress attached to the interface's
// clsact qdisc, maps pinned under <pin_root>/<ifname>/. The kernel keeps the programs attached and
// the maps pinned after this process exits or the Gate is destroyed: the gate fails to its last
// state, and with a lease it fails closed. Only detach() (or Gate::remove) takes it away.
//
// Thread safety: every method may be called from any thread. Writes to gate_ctl are
// read-modify-write under a mutex of this Gate; one process (the daemon) must own the writes.
#pragma once

#include <netinet/in.h>

#include <array>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/result.h"
#include "gate.h"  // bpf/gate.h: the shared contract

namespace of::gate {

enum class Role : uint32_t { Standby = GATE_ROLE_STANDBY, Active = GATE_ROLE_ACTIVE };

enum class Rule : uint32_t {
    PassAll = GATE_RULE_PASS_ALL,
    DropAll = GATE_RULE_DROP_ALL,
    PassFrom = GATE_RULE_PASS_FROM,      // RTP seq at or after `seq` (RFC 1982 order)
    PassBefore = GATE_RULE_PASS_BEFORE,  // RTP seq before `seq`: exactly PassFrom's complement
};

// A client's UDP destination, the key of a per-flow rule; for held TCP connections, the client's
// address and TCP port.
struct Flow {
    in_addr client{};   // client IPv4 address
    uint16_t port = 0;  // client UDP port, host byte order
};

struct FlowRule {
    Rule rule = Rule::PassAll;
    uint16_t seq = 0;  // hand-over RTP sequence number for PassFrom / PassBefore
};

// What the partner put on the wire for one flow, as our ingress saw it (gate_seen).
struct Seen {
    bool rtp = false;       // last_seq / high_seq are valid
    uint16_t last_seq = 0;  // most recent RTP seq
    uint16_t high_seq = 0;  // highest RTP seq in RFC 1982 order since the entry was created
    uint64_t packets = 0;
    int64_t first_ns = 0;  // CLOCK_MONOTONIC
    int64_t last_ns = 0;
};

// gate_ctl as last written.
struct Control {
    uint32_t abi_version = 0;
    Role role = Role::Standby;
    bool fence = false;
    int64_t lease_expiry_ns = 0;  // CLOCK_MONOTONIC; 0 = no lease
    int64_t active_since_ns = 0;  // CLOCK_MONOTONIC
    int64_t fence_grace_ns = 0;
    uint64_t generation = 0;
};

// gate_partner: when our ingress last saw a partner frame (CLOCK_MONOTONIC ns, 0 = never).
struct Partner {
    int64_t tx_ns = 0;   // last frame that arms the fence (role-owned traffic)
    int64_t any_ns = 0;  // last partner frame of any kind
};

// gate_counters summed over CPUs, indexed by enum gate_counter.
struct Counters {
    std::array<uint64_t, GATE_COUNTER__COUNT> value{};
    uint64_t operator[](gate_counter c) const { return value[c]; }
    uint64_t egress_total() const;   // every packet gate_egress saw (one outcome each)
    uint64_t ingress_total() const;  // every frame gate_ingress saw
    // (name, value) in index order, names as counter_name(): for D-Bus, foctl, logs.
    std::vector<std::pair<std::string_view, uint64_t>> named() const;
};

// Stable name of a counter, as in docs/gate-protocol.md ("eg_pass_active", ...); "" if unknown.
std::string_view counter_name(gate_counter c);

struct AttachOptions {
    // Pins under <pin_root>/<ifname>/ whose layout or ABI version differ from this build are an
    // error (EEXIST) unless this is set: then they are unlinked and the gate starts afresh
    // (STANDBY, no rules). Pins of the same ABI are always reused, keeping their contents.
    bool replace_incompatible_pins = false;
    // gate_ingress copies every TCP frame to or from this port of the stream IP (host order) to
    // gate_tcp_frames, for the view of the connections a takeover carries over. 0: none.
    uint16_t tcp_port = 0;
};

inline constexpr std::chrono::nanoseconds kMaxLease = std::chrono::seconds(60);
inline constexpr std::chrono::nanoseconds kMaxFenceGrace = std::chrono::seconds(1);
inline constexpr std::chrono::nanoseconds kDefaultFenceGrace = std::chrono::milliseconds(1);
inline constexpr uint32_t kTcHandle = 0x0f1;  // tc filter handle of both programs
inline constexpr uint32_t kTcPriority = 1;    // first in the clsact chain

class Gate {
public:
    // Loads the programs for `stream_ip`, reuses or creates the maps pinned under
    // <pin_root>/<ifname>/ (mounting bpffs on /sys/fs/bpf if needed), creates the clsact qdisc if
    // missing and attaches gate_ingress then gate_egress, replacing the filters of an earlier gate
    // (a crashed daemon's) atomically, so the interface is never ungated. A new gate starts
    // STANDBY, fence off, no lease. Works in the calling thread's network namespace.
    static Result<Gate> attach(const std::string& ifname, in_addr stream_ip,
                               const std::string& pin_root = GATE_PIN_ROOT_DEFAULT,
                               AttachOptions options = {});

    // Loads the programs with fresh, unpinned maps and attaches nothing: for BPF_PROG_TEST_RUN
    // (tests, self-checks). Every map method works on it.
    static Result<Gate> load(in_addr stream_ip, uint16_t tcp_port = 0);

    // Removes what a gate left on `ifname` in the calling thread's network namespace: both tc
    // filters (handle kTcHandle, priority kTcPriority) and the pins under <pin_root>/<ifname>/.
    // The clsact qdisc stays. Absent pieces are not an error.
    static Status remove(const std::string& ifname, const std::string& pin_root = GATE_PIN_ROOT_DEFAULT);

    Gate(Gate&&) noexcept;
    Gate& operator=(Gate&&) noexcept;
    Gate(const Gate&) = delete;
    Gate& operator=(const Gate&) = delete;
    // Closes this process's handles only; the attached gate stays in force (see the top).
    ~Gate();

    // Detaches both programs, destroys the clsact qdisc if this Gate created it, and unlinks the
    // pins. Must run in the network namespace of attach() (EXDEV otherwise). Afterwards every
    // method returns ENOTCONN. On a load()ed gate it only marks the gate detached.
    Status detach();

    // ACTIVE passes gated packets (lease and fence permitting); STANDBY drops them. A change from
    // STANDBY to ACTIVE sets active_since to now, the reference of the fence.
    Status set_role(Role role);
    // Lease: gated packets pass only until now + duration (0 < duration <= kMaxLease).
    Status renew_lease(std::chrono::nanoseconds duration);
    // Absolute CLOCK_MONOTONIC expiry; 0 removes the lease.
    Status set_lease_expiry(int64_t monotonic_ns);
    Status clear_lease() { return set_lease_expiry(0); }
    // Fence: while ACTIVE, drop role-owned traffic once the partner has transmitted role-owned
    // traffic later than active_since + grace (0 <= grace <= kMaxFenceGrace).
    Status set_fence(bool on, std::chrono::nanoseconds grace = kDefaultFenceGrace);
    // Sets active_since to now: clears a tripped fence (the daemon re-asserts that it is active).
    Status rearm_fence();
    // The partner's takeover announcement (gate_fence_token): only a partner UDP datagram to
    // addr:port (our admin address) whose payload starts with `token` arms the fence (any LAN
    // host can forge the stream IP). Without a token nothing arms it; the lease still stops a
    // primary that stopped renewing.
    Status set_fence_token(std::span<const uint8_t, GATE_FENCE_TOKEN_BYTES> token, in_addr addr, uint16_t port);
    Status clear_fence_token();

    Result<Control> control() const;
    Result<Partner> partner() const;
    Result<int64_t> partner_tx_ns() const;
    // True when ACTIVE, fence on and the partner transmitted after active_since + grace.
    Result<bool> fence_tripped() const;

    // Per-flow rules: override the role for one flow. seq is ignored (stored as 0) for PassAll and
    // DropAll. E2BIG when GATE_MAX_FLOWS rules exist. Clearing an absent rule is not an error.
    Status set_flow_rule(const Flow& flow, Rule rule, uint16_t seq = 0);
    Status clear_flow_rule(const Flow& flow);
    Status clear_flow_rules();
    Result<std::optional<FlowRule>> flow_rule(const Flow& flow) const;

    // What the partner sent on `flow` (ENOENT if nothing recorded). forget_seen() drops the
    // record, e.g. when a new session reuses the client port.
    Result<Seen> seen(const Flow& flow) const;
    Status forget_seen(const Flow& flow);

    // Held TCP connections of the stream IP (gate_tcp_held; `conn` is the client's address and
    // TCP port): their FIN and RST never leave, so that a dying daemon's kernel cannot close a
    // connection the partner takes over. Release one before closing it on purpose. E2BIG when
    // GATE_MAX_TCP_HELD are held. Releasing an absent one is not an error.
    Status hold_tcp(const Flow& conn);
    Status release_tcp(const Flow& conn);
    Status release_all_tcp();
    Result<bool> tcp_held(const Flow& conn) const;

    // The service TCP frames gate_ingress saw (AttachOptions::tcp_port), oldest first: each frame
    // from its Ethernet header, and when it was seen (CLOCK_MONOTONIC). tcp_frames_fd() becomes
    // readable when there are some. One reader at a time; from any thread.
    Result<int> tcp_frames_fd();
    Result<size_t> drain_tcp_frames(const std::function<void(std::span<const uint8_t>, int64_t)>& sink);

    Result<Counters> counters() const;

    int egress_prog_fd() const;
    int ingress_prog_fd() const;
    int ifindex() const;              // 0 for a load()ed gate
    const std::string& pin_dir() const;  // "" for a load()ed gate

private:
    struct Impl;
    explicit Gate(std::unique_ptr<Impl> impl);
    std::unique_ptr<Impl> impl_;
};

}  // namespace of::gate
