#include "failover/state_machine.h"

#include <array>

#include <linux/failover_fsm.h>

namespace of::failover {
namespace {

using S = State;
using E = Event;

// The edge of failover_fsm.h that `event` takes from `from`, as (type, state) of its target, or
// nullopt. (The table is the one source; this only says which of its edges an event is.)
std::optional<State> edge_for(State from, Event event, bool partner_online) {
    unsigned ft = type_of(from), fs = fostate_of(from);
    auto take = [&](fo_fsm_event ev, int to_type, int to_state) -> std::optional<State> {
        for (const fo_fsm_edge* e = fo_fsm_edges; e->event; ++e) {
            if (e->from_type != ft || e->from_state != fs || e->event != ev) continue;
            if (to_type >= 0 && e->to_type != to_type) continue;
            if (to_state >= 0 && e->to_state != to_state) continue;
            return state_of(fo_type(e->to_type), fo_state(e->to_state));
        }
        return std::nullopt;
    };
    switch (event) {
    case E::kSetConfigPrimary: return take(FO_EV_SET_CONFIG_TYPE, FOTYPE_MASTER, FOSTATE_NONE);
    case E::kSetConfigSecondary: return take(FO_EV_SET_CONFIG_TYPE, FOTYPE_SLAVE, FOSTATE_NONE);
    case E::kStartStreaming: return take(FO_EV_START_STREAMING, -1, partner_online ? FOSTATE_LIVE : FOSTATE_NOPARTNER);
    case E::kStopStreaming: return take(FO_EV_STOP_STREAMING, -1, -1);
    case E::kFailoverSync: return take(FO_EV_FAILOVER_SYNC, -1, -1);
    case E::kSyncSucceeded: return take(FO_EV_SYNC_DONE, -1, -1);
    case E::kSyncFailed: return take(FO_EV_SYNC_FAILED, -1, -1);
    case E::kFailoverUnsync: return take(FO_EV_FAILOVER_UNSYNC, -1, -1);
    case E::kPartnerOnline: return take(FO_EV_PARTNER_ONLINE, -1, -1);
    case E::kPartnerOffline: return take(FO_EV_PARTNER_OFFLINE, -1, -1);
    // A secondary takes over ([0097]); a primary whose secondary failed carries on alone.
    case E::kPartnerFailed:
        return from == S::kSecondary ? take(FO_EV_TAKEOVER, -1, -1) : take(FO_EV_PARTNER_OFFLINE, -1, -1);
    case E::kLocalFailure: return take(FO_EV_FAIL, -1, -1);
    // A transmitting server whose partner took over stops: it failed ([0097]).
    case E::kStopOrdered: return transmits(from) ? take(FO_EV_FAIL, -1, -1) : std::nullopt;
    }
    return std::nullopt;
}

// Events that change nothing where they find the server are accepted, so that callers need not
// filter them: they are not moves, so the table has no edge for them.
bool no_change(State from, Event event) {
    switch (event) {
    case E::kSetConfigPrimary: return from == S::kPrimaryOffline;
    case E::kSetConfigSecondary: return from == S::kSecondaryOffline;
    case E::kPartnerOnline: return from == S::kPrimary || from == S::kSecondary;
    case E::kPartnerOffline: return from == S::kPrimaryNoSecondary || from == S::kSecondaryNoPrimary;
    case E::kLocalFailure:
    case E::kStopOrdered: return fostate_of(from) == FOSTATE_FAILED;
    default: return false;
    }
}

constexpr std::array<std::string_view, kEventCount> kEventNames = {
    "set_config_type primary", "set_config_type secondary", "start_streaming", "stop_streaming",
    "failover_sync", "sync_succeeded", "sync_failed", "failover_unsync", "partner_online",
    "partner_offline", "partner_failed", "local_failure", "stop_ordered",
};

// What the operator should do instead, for the refusals that have an obvious remedy.
std::string hint(State from, Event e) {
    bool streaming = online(from);
    switch (e) {
    case E::kSetConfigPrimary:
    case E::kSetConfigSecondary:
        if (streaming) return "stop streaming first";
        if (from == S::kSecondarySynchronized || from == S::kSecondarySynchronizing)
            return "run failover_unsync first";
        return "";
    case E::kStartStreaming:
        if (from == S::kUnconfigured) return "run set_config_type first";
        if (from == S::kSecondaryOffline) return "run failover_sync first";
        if (streaming) return "already streaming";
        if (fostate_of(from) == FOSTATE_FAILED) return "re-designate the server with set_config_type";
        return "";
    case E::kStopStreaming:
        return streaming ? "" : "not streaming";
    case E::kFailoverSync:
        if (type_of(from) != FOTYPE_SLAVE) return "only a secondary synchronizes from its primary";
        if (from != S::kSecondaryOffline) return "a secondary synchronizes only from Secondary_Offline";
        return "";
    case E::kFailoverUnsync:
        return "only Secondary_Synchronized can be unsynchronized";
    default:
        return "";
    }
}

}  // namespace

Outcome transition(State from, Event event, bool partner_online) {
    if (auto to = edge_for(from, event, partner_online)) return Outcome{true, *to, ""};
    if (no_change(from, event)) return Outcome{true, from, ""};
    std::string why = std::string(name(event)) + " is not allowed in state " + std::string(name(from));
    if (auto h = hint(from, event); !h.empty()) why += ": " + h;
    return Outcome{false, from, why};
}

fo_type type_of(State s) {
    switch (s) {
    case S::kPrimary:
    case S::kPrimaryNoSecondary:
    case S::kPrimaryOffline:
    case S::kFailed:
        return FOTYPE_MASTER;
    case S::kSecondary:
    case S::kSecondaryNoPrimary:
    case S::kSecondaryOffline:
    case S::kSecondarySynchronizing:
    case S::kSecondarySynchronized:
    case S::kSecondaryFailed:
        return FOTYPE_SLAVE;
    case S::kUnconfigured:
    case S::kUnconfiguredFailed:
        break;
    }
    return FOTYPE_UNDEF;
}

fo_state fostate_of(State s) {
    switch (s) {
    case S::kPrimary:
    case S::kSecondary:
        return FOSTATE_LIVE;
    case S::kPrimaryNoSecondary:
    case S::kSecondaryNoPrimary:
        return FOSTATE_NOPARTNER;
    case S::kPrimaryOffline:
    case S::kSecondaryOffline:
        return FOSTATE_NONE;
    case S::kFailed:
    case S::kSecondaryFailed:
    case S::kUnconfiguredFailed:
        return FOSTATE_FAILED;
    case S::kSecondarySynchronizing:
        return FOSTATE_SYNCING;
    case S::kSecondarySynchronized:
        return FOSTATE_SYNCED;
    case S::kUnconfigured:
        break;
    }
    return FOSTATE_UNDEF;
}

std::optional<State> state_of(fo_type t, fo_state st) {
    for (int i = 0; i < kStateCount; ++i) {
        State s = State(i);
        if (type_of(s) == t && fostate_of(s) == st) return s;
    }
    return std::nullopt;
}

bool transmits(State s) { return s == S::kPrimary || s == S::kPrimaryNoSecondary; }

bool online(State s) {
    return s == S::kPrimary || s == S::kPrimaryNoSecondary || s == S::kSecondary || s == S::kSecondaryNoPrimary;
}

// The names of the one table (failover_fsm.h), as seed 004 gives them.
std::string_view name(State s) {
    const char* n = fo_fsm_state_name(type_of(s), fostate_of(s));
    return n ? n : "?";
}
std::string_view name(Event e) { return kEventNames[size_t(e)]; }

std::optional<Event> event_from_name(std::string_view n) {
    for (int i = 0; i < kEventCount; ++i)
        if (kEventNames[size_t(i)] == n) return Event(i);
    return std::nullopt;
}

}  // namespace of::failover
