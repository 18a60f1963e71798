// The contract of oneframed's D-Bus API, shared by the daemon side (server.h), the client side
// (client.h, foctl) and the tests. docs/dbus-api.md describes every method, argument and reply key.
//
// Adding a method: one `Method` below (and in kMethods), one virtual in `Handler` (server.h), one
// entry in the dispatch table of server.cpp that reads and validates its arguments, and a foctl
// subcommand. The D-Bus vtable, introspection data and privilege check follow from the Method.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "common/failover_limits.h"

namespace of::dbus {

inline constexpr const char* kBusName = "org.oneframe.Daemon";
inline constexpr const char* kObjectPath = "/org/oneframe/Daemon";
inline constexpr const char* kInterface = "org.oneframe.Daemon1";
inline constexpr std::string_view kErrorPrefix = "org.oneframe.Error.";

enum class Returns { Nothing, Dict, List };  // "", "a{sv}", "aa{sv}"
enum class Access {
    Read,    // open to every caller the bus lets through
    Change,  // the caller must be root or hold CAP_NET_ADMIN, as vouched for by the bus
};

struct Method {
    const char* name;       // D-Bus member name
    const char* signature;  // input signature
    const char* arg_names;  // input argument names, space-separated, for introspection
    Returns returns;
    Access access;
};

namespace method {
inline constexpr Method Status{"Status", "", "", Returns::Dict, Access::Read};
inline constexpr Method AssetAdd{"AssetAdd", "ss", "path name", Returns::Dict, Access::Change};
inline constexpr Method AssetList{"AssetList", "", "", Returns::List, Access::Read};
inline constexpr Method AssetShow{"AssetShow", "s", "name", Returns::Dict, Access::Read};
inline constexpr Method AssetRemove{"AssetRemove", "s", "name", Returns::Nothing, Access::Change};
inline constexpr Method Sessions{"Sessions", "", "", Returns::List, Access::Read};
// Failover commands of seed 004 [0079]-[0088]; each replies with the failover state it left.
inline constexpr Method SetConfigType{"SetConfigType", "sa{sv}", "role settings", Returns::Dict, Access::Change};
inline constexpr Method StartStreaming{"StartStreaming", "", "", Returns::Dict, Access::Change};
inline constexpr Method StopStreaming{"StopStreaming", "", "", Returns::Dict, Access::Change};
inline constexpr Method FailoverSync{"FailoverSync", "", "", Returns::Dict, Access::Change};
inline constexpr Method FailoverUnsync{"FailoverUnsync", "", "", Returns::Dict, Access::Change};
// [0095] a failure this server's own trackers cannot see (a health monitor: temperature, fans,
// power; an operator): cause is disk, software, health or operator.
inline constexpr Method ReportFailure{"ReportFailure", "ss", "cause detail", Returns::Dict, Access::Change};
}  // namespace method

inline constexpr std::array<const Method*, 12> kMethods = {
    &method::Status,        &method::AssetAdd,       &method::AssetList,     &method::AssetShow,
    &method::AssetRemove,   &method::Sessions,       &method::SetConfigType, &method::StartStreaming,
    &method::StopStreaming, &method::FailoverSync,   &method::FailoverUnsync, &method::ReportFailure,
};

// ReportFailure's causes, and the longest detail it takes.
inline constexpr std::array<const char*, 4> kFailureCauses = {"disk", "software", "health", "operator"};
inline constexpr size_t kMaxFailureDetailBytes = 200;

const Method* find_method(std::string_view name);
const char* reply_signature(Returns r);

// Keys of SetConfigType's settings dictionary (all optional; unknown keys are refused).
namespace setting {
inline constexpr const char* PartnerAdmin = "partner_admin";      // s: partner's admin IP address
inline constexpr const char* PartnerPrivate = "partner_private";  // s: partner's private-link IP address
inline constexpr const char* HeartbeatMs = "heartbeat_ms";        // integer, 1..kMaxHeartbeatMs
inline constexpr const char* MaxMissed = "max_missed";            // integer, 1..kMaxMissedHeartbeats
}  // namespace setting

// Bounds the API layer enforces before a Handler sees an argument.
inline constexpr size_t kMaxNameBytes = 255;
inline constexpr size_t kMaxPathBytes = 4095;
inline constexpr size_t kMaxAddressBytes = 255;
inline constexpr uint64_t kMaxHeartbeatMs = of::kMaxHeartbeatMs;  // (common/failover_limits.h)
inline constexpr uint64_t kMaxMissedHeartbeats = of::kMaxMissedHeartbeats;

// Error names: errno code -> "org.oneframe.Error.NotFound" and back. Unlisted codes become "Failed".
std::string error_name(int code);
// The errno a oneframe error name stands for (EIO for Failed and unknown suffixes); 0 if the name
// is not in the org.oneframe.Error namespace.
int error_code(std::string_view name);

}  // namespace of::dbus
