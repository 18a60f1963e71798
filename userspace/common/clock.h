// Clocks used across oneframe. Send schedules use CLOCK_REALTIME, because the two servers of a
// failover pair must agree on "packet n leaves at time t" and they share wall-clock time (seed 004
// [0083] synchronizes system time). Intervals and timeouts use CLOCK_MONOTONIC, which is also what
// bpf_ktime_get_ns() reads inside BPF programs.
#pragma once

#include <cstdint>
#include <ctime>

namespace of {

inline int64_t clock_ns(clockid_t id) {
    timespec ts{};
    clock_gettime(id, &ts);
    return int64_t(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
}
inline int64_t realtime_ns() { return clock_ns(CLOCK_REALTIME); }
inline int64_t monotonic_ns() { return clock_ns(CLOCK_MONOTONIC); }

inline timespec ns_to_timespec(int64_t ns) {
    return timespec{time_t(ns / 1'000'000'000), long(ns % 1'000'000'000)};
}

}  // namespace of
