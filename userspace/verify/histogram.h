// A log-linear histogram of non-negative integers (nanoseconds here): fixed memory, relative error
// below 1/kSub for any value, exact below kSub. Used for percentiles over runs of any length.
#pragma once

#include <array>
#include <bit>
#include <cstdint>

namespace of::verify {

class LogHistogram {
public:
    static constexpr int kSubBits = 7;
    static constexpr uint64_t kSub = uint64_t(1) << kSubBits;  // 128 buckets per power of two
    static constexpr int kGroups = 64 - kSubBits + 1;
    static constexpr size_t kBuckets = size_t(kGroups) * kSub;

    void add(uint64_t v) {
        ++counts_[index(v)];
        ++total_;
        if (v > max_) max_ = v;
    }
    uint64_t count() const { return total_; }
    uint64_t max() const { return max_; }

    // The value at quantile q in [0,1] (nearest rank); the midpoint of its bucket, capped at max().
    uint64_t quantile(double q) const {
        if (total_ == 0) return 0;
        if (q < 0) q = 0;
        if (q > 1) q = 1;
        uint64_t rank = uint64_t(q * double(total_ - 1)) + 1;  // 1-based
        uint64_t seen = 0;
        for (size_t i = 0; i < kBuckets; ++i) {
            seen += counts_[i];
            if (seen >= rank) {
                uint64_t lo = lower(i), hi = upper(i);
                uint64_t mid = lo + (hi - lo) / 2;
                return mid > max_ ? max_ : mid;
            }
        }
        return max_;
    }

    static size_t index(uint64_t v) {
        if (v < kSub) return size_t(v);
        int msb = 63 - std::countl_zero(v);          // >= kSubBits
        int group = msb - kSubBits + 1;               // 1..
        uint64_t sub = (v >> (msb - kSubBits)) & (kSub - 1);
        return size_t(group) * kSub + size_t(sub);
    }
    static uint64_t lower(size_t i) {
        size_t group = i / kSub, sub = i % kSub;
        if (group == 0) return sub;
        int shift = int(group) - 1;
        return (kSub + sub) << shift;
    }
    static uint64_t upper(size_t i) {  // inclusive
        size_t group = i / kSub;
        if (group == 0) return lower(i);
        int shift = int(group) - 1;
        return lower(i) + ((uint64_t(1) << shift) - 1);
    }

private:
    std::array<uint64_t, kBuckets> counts_{};
    uint64_t total_ = 0;
    uint64_t max_ = 0;
};

}  // namespace of::verify
