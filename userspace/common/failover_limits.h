// The bounds of a failover pair's heartbeat settings (seed 004 Failover_Heartbeat_Freq and
// Max_Missed_Heartbeats): one place for the config parser, the D-Bus API, foctl and the failover
// controller, so that nothing one of them accepts is refused by another.
#pragma once

#include <cstdint>

namespace of {

inline constexpr uint32_t kMaxHeartbeatMs = 1000;
inline constexpr uint32_t kMaxMissedHeartbeats = 100;

}  // namespace of
