// The failover state machine of seed 004 Fig. 5 ([0068]-[0098]) at the level of the daemon's
// commands and events.
//
// A server's failover state is the pair (failover_type, failover_state) of [0066]-[0067]; nine
// pairs are named states, plus Unconfigured before set_config_type and the failed states of a
// secondary or an unconfigured server ([0067]). There is ONE table of the moves between them:
// kmod/include/uapi/linux/failover_fsm.h, compiled into failover.ko, into the userspace holder and
// here. transition() only maps the daemon's events onto that table's edges (which edge a command
// takes: start_streaming goes to Primary or Primary_No_Secondary by whether the partner is online,
// [0086]); it adds no move of its own, so the daemon, the kernel and the holder cannot disagree.
// Events are the admin commands of [0079]-[0088], the partner's comings and goings, and failures
// ([0094]-[0097]). Every (state, event) pair either moves or is refused with a reason an operator
// can act on.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include <linux/failover.h>

namespace of::failover {

enum class State : uint8_t {
    kUnconfigured,
    kPrimary,                 // 500A  MASTER/LIVE
    kPrimaryNoSecondary,      // 500B  MASTER/NOPARTNER
    kPrimaryOffline,          // 580   MASTER/NONE
    kFailed,                  // 582   MASTER/FAILED
    kSecondary,               // 540A  SLAVE/LIVE
    kSecondaryNoPrimary,      // 540B  SLAVE/NOPARTNER
    kSecondaryOffline,        // 584   SLAVE/NONE
    kSecondarySynchronizing,  // 586   SLAVE/SYNCING
    kSecondarySynchronized,   // 588   SLAVE/SYNCED
    kSecondaryFailed,         //       SLAVE/FAILED  (a failed secondary, [0067])
    kUnconfiguredFailed,      //       UNDEF/FAILED  (failed before set_config_type)
};
constexpr int kStateCount = 12;

enum class Event : uint8_t {
    kSetConfigPrimary,    // set_config_type primary
    kSetConfigSecondary,  // set_config_type secondary
    kStartStreaming,
    kStopStreaming,
    kFailoverSync,
    kSyncSucceeded,
    kSyncFailed,
    kFailoverUnsync,
    kPartnerOnline,       // the partner came online (start_streaming on it, or it reappeared)
    kPartnerOffline,      // the partner went offline cleanly (stop_streaming on it)
    kPartnerFailed,       // missed heartbeats or a failover message: take over
    kLocalFailure,        // a critical process died, stream interface or disk failed ([0095])
    kStopOrdered,         // the partner took over and tells us to stop ([0097])
};
constexpr int kEventCount = 13;

struct Outcome {
    bool allowed = false;
    State next = State::kUnconfigured;
    std::string reason;   // why it was refused (empty when allowed)
};

// What happens to `event` in `from`; `partner_online` decides the moves that [0086] and [0088]
// make depend on the partner.
Outcome transition(State from, Event event, bool partner_online);

fo_type type_of(State s);
fo_state fostate_of(State s);
std::optional<State> state_of(fo_type t, fo_state s);
// This server transmits to clients (its egress gate is open) only in these states.
bool transmits(State s);
// This server runs client sessions (as the active one, or mirrored in lockstep).
bool online(State s);

std::string_view name(State s);   // "Primary_No_Secondary", as seed 004 names them
std::string_view name(Event e);   // "start_streaming", ...
std::optional<Event> event_from_name(std::string_view n);

}  // namespace of::failover
