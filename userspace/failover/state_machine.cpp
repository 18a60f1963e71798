#include "failover/state_machine.h"

#include <array>

namespace of::failover {
namespace {

using S = State;
using E = Event;

enum class Guard : uint8_t { kAny, kPartnerOnline, kPartnerOffline };

struct Row {
    S from;
    E event;
    Guard guard;
    S to;
};

// Fig. 5, row by row. Anything not listed is refused.
constexpr Row kTable[] = {
    // Configuration ([0079], [0081]); re-designation only while offline or failed.
    {S::kUnconfigured, E::kSetConfigPrimary, Guard::kAny, S::kPrimaryOffline},
    {S::kUnconfigured, E::kSetConfigSecondary, Guard::kAny, S::kSecondaryOffline},
    {S::kPrimaryOffline, E::kSetConfigPrimary, Guard::kAny, S::kPrimaryOffline},
    {S::kPrimaryOffline, E::kSetConfigSecondary, Guard::kAny, S::kSecondaryOffline},
    {S::kSecondaryOffline, E::kSetConfigPrimary, Guard::kAny, S::kPrimaryOffline},
    {S::kSecondaryOffline, E::kSetConfigSecondary, Guard::kAny, S::kSecondaryOffline},
    {S::kFailed, E::kSetConfigPrimary, Guard::kAny, S::kPrimaryOffline},
    {S::kFailed, E::kSetConfigSecondary, Guard::kAny, S::kSecondaryOffline},  // failback

    // start_streaming / stop_streaming ([0080], [0086], [0088]).
    {S::kPrimaryOffline, E::kStartStreaming, Guard::kPartnerOnline, S::kPrimary},
    {S::kPrimaryOffline, E::kStartStreaming, Guard::kPartnerOffline, S::kPrimaryNoSecondary},
    {S::kSecondarySynchronized, E::kStartStreaming, Guard::kPartnerOnline, S::kSecondary},
    {S::kSecondarySynchronized, E::kStartStreaming, Guard::kPartnerOffline, S::kSecondaryNoPrimary},
    {S::kPrimary, E::kStopStreaming, Guard::kAny, S::kPrimaryOffline},
    {S::kPrimaryNoSecondary, E::kStopStreaming, Guard::kAny, S::kPrimaryOffline},
    // A secondary taken offline misses updates, so it must sync again before coming back.
    {S::kSecondary, E::kStopStreaming, Guard::kAny, S::kSecondaryOffline},
    {S::kSecondaryNoPrimary, E::kStopStreaming, Guard::kAny, S::kSecondaryOffline},

    // Synchronization ([0082], [0085]).
    {S::kSecondaryOffline, E::kFailoverSync, Guard::kAny, S::kSecondarySynchronizing},
    {S::kSecondarySynchronizing, E::kSyncSucceeded, Guard::kAny, S::kSecondarySynchronized},
    {S::kSecondarySynchronizing, E::kSyncFailed, Guard::kAny, S::kSecondaryOffline},
    {S::kSecondarySynchronized, E::kFailoverUnsync, Guard::kAny, S::kSecondaryOffline},

    // The partner comes and goes ([0088]).
    {S::kPrimaryNoSecondary, E::kPartnerOnline, Guard::kAny, S::kPrimary},
    {S::kPrimary, E::kPartnerOffline, Guard::kAny, S::kPrimaryNoSecondary},
    {S::kSecondaryNoPrimary, E::kPartnerOnline, Guard::kAny, S::kSecondary},
    {S::kSecondary, E::kPartnerOffline, Guard::kAny, S::kSecondaryNoPrimary},
    // Arrivals and departures that change nothing are accepted so callers need not filter them.
    {S::kPrimary, E::kPartnerOnline, Guard::kAny, S::kPrimary},
    {S::kSecondary, E::kPartnerOnline, Guard::kAny, S::kSecondary},
    {S::kPrimaryNoSecondary, E::kPartnerOffline, Guard::kAny, S::kPrimaryNoSecondary},
    {S::kSecondaryNoPrimary, E::kPartnerOffline, Guard::kAny, S::kSecondaryNoPrimary},

    // Failover ([0094]-[0097]): the secondary takes over; the failed primary stops.
    {S::kSecondary, E::kPartnerFailed, Guard::kAny, S::kPrimaryNoSecondary},
    {S::kPrimary, E::kPartnerFailed, Guard::kAny, S::kPrimaryNoSecondary},  // our secondary died
    {S::kPrimary, E::kLocalFailure, Guard::kAny, S::kFailed},
    {S::kPrimaryNoSecondary, E::kLocalFailure, Guard::kAny, S::kFailed},
    {S::kPrimaryOffline, E::kLocalFailure, Guard::kAny, S::kFailed},
    {S::kSecondary, E::kLocalFailure, Guard::kAny, S::kSecondaryOffline},
    {S::kSecondaryNoPrimary, E::kLocalFailure, Guard::kAny, S::kSecondaryOffline},
    {S::kSecondarySynchronized, E::kLocalFailure, Guard::kAny, S::kSecondaryOffline},
    {S::kSecondarySynchronizing, E::kLocalFailure, Guard::kAny, S::kSecondaryOffline},
    {S::kPrimary, E::kStopOrdered, Guard::kAny, S::kFailed},
    {S::kPrimaryNoSecondary, E::kStopOrdered, Guard::kAny, S::kFailed},
    {S::kFailed, E::kStopOrdered, Guard::kAny, S::kFailed},
    {S::kFailed, E::kLocalFailure, Guard::kAny, S::kFailed},
};

constexpr std::array<std::string_view, kStateCount> kStateNames = {
    "Unconfigured", "Primary", "Primary_No_Secondary", "Primary_Offline", "Failed", "Secondary",
    "Secondary_No_Primary", "Secondary_Offline", "Secondary_Synchronizing", "Secondary_Synchronized",
};
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
        if (from == S::kFailed) return "re-designate the server with set_config_type";
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
    for (const Row& r : kTable) {
        if (r.from != from || r.event != event) continue;
        if (r.guard == Guard::kPartnerOnline && !partner_online) continue;
        if (r.guard == Guard::kPartnerOffline && partner_online) continue;
        return Outcome{true, r.to, ""};
    }
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
        return FOTYPE_SLAVE;
    case S::kUnconfigured:
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

std::string_view name(State s) { return kStateNames[size_t(s)]; }
std::string_view name(Event e) { return kEventNames[size_t(e)]; }

std::optional<Event> event_from_name(std::string_view n) {
    for (int i = 0; i < kEventCount; ++i)
        if (kEventNames[size_t(i)] == n) return Event(i);
    return std::nullopt;
}

}  // namespace of::failover
