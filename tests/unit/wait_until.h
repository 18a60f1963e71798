// Bounded waiting for a condition in tests: poll the condition itself, never sleep for a time
// and hope it held.
#pragma once

#include <poll.h>

#include <chrono>
#include <cstdint>

#include "common/clock.h"

namespace of::test {

// Polls `pred` until it holds or `timeout` passes (1 ms between checks); true if it held.
template <class Pred>
bool wait_until(Pred pred, std::chrono::milliseconds timeout = std::chrono::milliseconds(5000)) {
    const int64_t end = of::monotonic_ns() + std::chrono::nanoseconds(timeout).count();
    while (!pred()) {
        if (of::monotonic_ns() > end) return false;
        poll(nullptr, 0, 1);
    }
    return true;
}

}  // namespace of::test
