// Clocks used across oneframe. Send schedules use CLOCK_REALTIME, because the two servers of a
// failover pair must agree on "packet n leaves at time t" and they share wall-clock time (seed 004
// [0083] synchronizes system time). Intervals and timeouts use CLOCK_MONOTONIC, which is also what
// bpf_ktime_get_ns() reads inside BPF programs.
#pragma once

#include <cstdint>
#include <ctime>
#include <limits>

namespace of {

inline int64_t clock_ns(clockid_t id) {
    timespec ts{};
    clock_gettime(id, &ts);
    return int64_t(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
}
inline int64_t realtime_ns() { return clock_ns(CLOCK_REALTIME); }
inline int64_t monotonic_ns() { return clock_ns(CLOCK_MONOTONIC); }

// CLOCK_REALTIME minus CLOCK_MONOTONIC, read so that a preemption between the two reads does not
// skew it: the read of the realtime clock bracketed by two monotonic reads closest together.
inline int64_t realtime_minus_monotonic_ns() {
    int64_t best = 0, best_span = std::numeric_limits<int64_t>::max();
    for (int i = 0; i < 3; ++i) {
        int64_t m1 = monotonic_ns(), r = realtime_ns(), m2 = monotonic_ns();
        if (m2 - m1 < best_span) {
            best_span = m2 - m1;
            best = r - m1 - (m2 - m1) / 2;
        }
        if (best_span < 10'000) break;  // a clean read: done
    }
    return best;
}

inline timespec ns_to_timespec(int64_t ns) {
    return timespec{time_t(ns / 1'000'000'000), long(ns % 1'000'000'000)};
}

}  // namespace of
