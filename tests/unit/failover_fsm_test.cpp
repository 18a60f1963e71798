// Every (state, event, partner online?) triple of the Fig. 5 machine, against an expectation
// written independently of the implementation's table.
#include <gtest/gtest.h>

#include <map>
#include <set>
#include <string>

#include <linux/failover_fsm.h>

#include "failover/controller.h"
#include "failover/state_machine.h"

namespace {

using namespace of::failover;

// Expected next state per (state, event) as "next" for partner-independent moves, or
// "when_online|when_offline" for moves that depend on the partner; "-" means refused.
const std::map<std::string, std::map<std::string, std::string>> kExpected = {
    {"Unconfigured", {{"set_config_type primary", "Primary_Offline"},
                      {"set_config_type secondary", "Secondary_Offline"},
                      {"local_failure", "Unconfigured_Failed"}}},                  // [0067]
    {"Primary_Offline", {{"set_config_type primary", "Primary_Offline"},
                         {"set_config_type secondary", "Secondary_Offline"},
                         {"start_streaming", "Primary|Primary_No_Secondary"},  // [0080] [0089]
                         {"local_failure", "Failed"}}},
    {"Primary_No_Secondary", {{"stop_streaming", "Primary_Offline"},
                              {"partner_online", "Primary"},                    // [0088]
                              {"partner_offline", "Primary_No_Secondary"},
                              {"local_failure", "Failed"},
                              {"stop_ordered", "Failed"}}},
    {"Primary", {{"stop_streaming", "Primary_Offline"},
                 {"partner_online", "Primary"},
                 {"partner_offline", "Primary_No_Secondary"},
                 {"partner_failed", "Primary_No_Secondary"},
                 {"local_failure", "Failed"},                                       // [0094]
                 {"stop_ordered", "Failed"}}},                                      // [0097]
    {"Failed", {{"set_config_type primary", "Primary_Offline"},
                {"set_config_type secondary", "Secondary_Offline"},                 // [0063] failback
                {"local_failure", "Failed"},
                {"stop_ordered", "Failed"}}},
    {"Secondary_Offline", {{"set_config_type primary", "Primary_Offline"},
                           {"set_config_type secondary", "Secondary_Offline"},
                           {"failover_sync", "Secondary_Synchronizing"},              // [0082]
                           {"local_failure", "Secondary_Failed"}}},
    {"Secondary_Synchronizing", {{"sync_succeeded", "Secondary_Synchronized"},
                                 {"sync_failed", "Secondary_Offline"},
                                 {"local_failure", "Secondary_Failed"}}},
    {"Secondary_Synchronized", {{"start_streaming", "Secondary|Secondary_No_Primary"},  // [0086]
                                {"failover_unsync", "Secondary_Offline"},             // [0085]
                                {"local_failure", "Secondary_Failed"}}},
    {"Secondary", {{"stop_streaming", "Secondary_Synchronized"},                    // [0084]
                   {"partner_online", "Secondary"},
                   {"partner_offline", "Secondary_No_Primary"},                     // [0088]
                   {"partner_failed", "Primary_No_Secondary"},                      // [0097]
                   {"local_failure", "Secondary_Failed"}}},
    {"Secondary_No_Primary", {{"stop_streaming", "Secondary_Synchronized"},
                              {"partner_online", "Secondary"},
                              {"partner_offline", "Secondary_No_Primary"},
                              {"local_failure", "Secondary_Failed"}}},
    {"Secondary_Failed", {{"set_config_type primary", "Primary_Offline"},
                          {"set_config_type secondary", "Secondary_Offline"},
                          {"local_failure", "Secondary_Failed"},
                          {"stop_ordered", "Secondary_Failed"}}},
    {"Unconfigured_Failed", {{"set_config_type primary", "Primary_Offline"},
                             {"set_config_type secondary", "Secondary_Offline"},
                             {"local_failure", "Unconfigured_Failed"},
                             {"stop_ordered", "Unconfigured_Failed"}}},
};

TEST(FailoverFsm, EveryStateEventPair) {
    int checked = 0;
    for (int si = 0; si < kStateCount; ++si) {
        State s = State(si);
        auto row = kExpected.find(std::string(name(s)));
        ASSERT_NE(row, kExpected.end()) << name(s);
        for (int ei = 0; ei < kEventCount; ++ei) {
            Event e = Event(ei);
            auto cell = row->second.find(std::string(name(e)));
            std::string want_on = "-", want_off = "-";
            if (cell != row->second.end()) {
                auto bar = cell->second.find('|');
                want_on = cell->second.substr(0, bar);
                want_off = bar == std::string::npos ? want_on : cell->second.substr(bar + 1);
            }
            for (bool partner : {true, false}) {
                const std::string& want = partner ? want_on : want_off;
                Outcome o = transition(s, e, partner);
                std::string got = o.allowed ? std::string(name(o.next)) : "-";
                EXPECT_EQ(got, want) << name(s) << " + " << name(e) << " (partner " << (partner ? "on" : "off") << ")";
                if (!o.allowed) {
                    EXPECT_EQ(o.next, s);
                    EXPECT_NE(o.reason.find(std::string(name(s))), std::string::npos) << o.reason;
                } else {
                    EXPECT_TRUE(o.reason.empty());
                }
                ++checked;
            }
        }
    }
    EXPECT_EQ(checked, kStateCount * kEventCount * 2);
}

// The daemon, failover.ko and fo-holder share failover_fsm.h: every move the daemon makes is one
// of its edges (the kernel and the holder accept exactly those), and every edge but the
// re-configuration to Unconfigured (no command asks for it) is a move some daemon event makes.
TEST(FailoverFsm, TheDaemonMovesAlongTheOneTableAndUsesAllOfIt) {
    std::set<std::pair<std::pair<unsigned, unsigned>, std::pair<unsigned, unsigned>>> used;
    for (int si = 0; si < kStateCount; ++si)
        for (int ei = 0; ei < kEventCount; ++ei)
            for (bool partner : {true, false}) {
                State s = State(si);
                Outcome o = transition(s, Event(ei), partner);
                if (!o.allowed || o.next == s) continue;
                const fo_fsm_edge* e = fo_fsm_find(type_of(s), fostate_of(s), type_of(o.next), fostate_of(o.next));
                EXPECT_NE(e, nullptr) << name(s) << " -> " << name(o.next) << " is not in failover_fsm.h";
                used.insert({{type_of(s), fostate_of(s)}, {type_of(o.next), fostate_of(o.next)}});
            }
    for (const fo_fsm_edge* e = fo_fsm_edges; e->event; ++e) {
        if (e->to_type == FOTYPE_UNDEF && e->to_state == FOSTATE_UNDEF) continue;
        EXPECT_TRUE(used.count({{e->from_type, e->from_state}, {e->to_type, e->to_state}}))
            << fo_fsm_state_name(e->from_type, e->from_state) << " -> " << fo_fsm_state_name(e->to_type, e->to_state)
            << " (event " << int(e->event) << ") is an edge no daemon event takes";
    }
    for (int si = 0; si < kStateCount; ++si)
        EXPECT_STREQ(std::string(name(State(si))).c_str(), fo_fsm_state_name(type_of(State(si)), fostate_of(State(si))));
}

TEST(FailoverFsm, RefusalsSayWhatToDo) {
    EXPECT_EQ(transition(State::kPrimary, Event::kSetConfigSecondary, true).reason,
              "set_config_type secondary is not allowed in state Primary: stop streaming first");
    EXPECT_EQ(transition(State::kSecondaryOffline, Event::kStartStreaming, true).reason,
              "start_streaming is not allowed in state Secondary_Offline: run failover_sync first");
    EXPECT_EQ(transition(State::kPrimaryOffline, Event::kFailoverSync, true).reason,
              "failover_sync is not allowed in state Primary_Offline: only a secondary synchronizes from its primary");
    EXPECT_EQ(transition(State::kUnconfigured, Event::kStartStreaming, false).reason,
              "start_streaming is not allowed in state Unconfigured: run set_config_type first");
}

TEST(FailoverFsm, NineNamedStatesMapToTypeAndStatePairs) {
    // [0069]-[0077]
    struct {
        State s;
        fo_type t;
        fo_state st;
    } pairs[] = {
        {State::kPrimary, FOTYPE_MASTER, FOSTATE_LIVE},
        {State::kPrimaryOffline, FOTYPE_MASTER, FOSTATE_NONE},
        {State::kPrimaryNoSecondary, FOTYPE_MASTER, FOSTATE_NOPARTNER},
        {State::kFailed, FOTYPE_MASTER, FOSTATE_FAILED},
        {State::kSecondary, FOTYPE_SLAVE, FOSTATE_LIVE},
        {State::kSecondaryOffline, FOTYPE_SLAVE, FOSTATE_NONE},
        {State::kSecondarySynchronizing, FOTYPE_SLAVE, FOSTATE_SYNCING},
        {State::kSecondarySynchronized, FOTYPE_SLAVE, FOSTATE_SYNCED},
        {State::kSecondaryNoPrimary, FOTYPE_SLAVE, FOSTATE_NOPARTNER},
    };
    for (auto& p : pairs) {
        EXPECT_EQ(type_of(p.s), p.t) << name(p.s);
        EXPECT_EQ(fostate_of(p.s), p.st) << name(p.s);
        EXPECT_EQ(state_of(p.t, p.st), p.s) << name(p.s);
    }
    EXPECT_EQ(state_of(FOTYPE_SLAVE, FOSTATE_FAILED), State::kSecondaryFailed);  // [0067]: any server fails
    EXPECT_EQ(state_of(FOTYPE_UNDEF, FOSTATE_FAILED), State::kUnconfiguredFailed);
    EXPECT_FALSE(state_of(FOTYPE_UNDEF, FOSTATE_LIVE).has_value());
    EXPECT_TRUE(transmits(State::kPrimary));
    EXPECT_TRUE(transmits(State::kPrimaryNoSecondary));
    EXPECT_FALSE(transmits(State::kSecondary));
    EXPECT_FALSE(transmits(State::kFailed));
    for (int ei = 0; ei < kEventCount; ++ei) EXPECT_EQ(event_from_name(name(Event(ei))), Event(ei));
}

}  // namespace

// The lease needs the detection time to exceed one heartbeat period by 6 ms (controller.h).
TEST(HeartbeatSettings, DetectionLeavesRoomForTheLease) {
    using of::failover::check_heartbeat_settings;
    EXPECT_TRUE(check_heartbeat_settings(5, 3).ok());     // the defaults: 15 ms
    EXPECT_TRUE(check_heartbeat_settings(3, 3).ok());     // 9 ms: exactly 6 ms over a period
    EXPECT_TRUE(check_heartbeat_settings(1000, 100).ok());
    EXPECT_FALSE(check_heartbeat_settings(5, 2).ok());    // 10 ms: a primary would wait every period
    EXPECT_FALSE(check_heartbeat_settings(1, 3).ok());
    EXPECT_FALSE(check_heartbeat_settings(50, 1).ok());   // one missed heartbeat is no slack at all
    EXPECT_FALSE(check_heartbeat_settings(0, 3).ok());
    EXPECT_FALSE(check_heartbeat_settings(5, 0).ok());
    EXPECT_FALSE(check_heartbeat_settings(1001, 3).ok());
    EXPECT_FALSE(check_heartbeat_settings(5, 101).ok());
    auto e = check_heartbeat_settings(5, 2);
    EXPECT_NE(e.error().message.find("5 ms x 2"), std::string::npos) << e.error().message;
}
