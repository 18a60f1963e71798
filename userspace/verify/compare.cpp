#include "verify/compare.h"

#include <algorithm>
#include <cstring>

namespace of::verify {

SourceCompare::SourceCompare(std::span<const uint8_t> source) : source_(source) {
    n_ = source.size() / 188;
    st_.enabled = true;
    st_.source_packets = n_;
}

void SourceCompare::error_at(uint64_t rx_index) {
    if (!st_.first_error_packet) st_.first_error_packet = rx_index;
}

// Finds the first source position where buf_[j..j+run) appear consecutively.
bool SourceCompare::try_align(size_t j, size_t run) {
    if (run == 0 || n_ < run) return false;
    const uint8_t* first = buf_[j].data();
    for (uint64_t p = 0; p + run <= n_; ++p) {
        if (std::memcmp(src(p), first, 188) != 0) continue;
        size_t t = 1;
        while (t < run && std::memcmp(src(p + t), buf_[j + t].data(), 188) == 0) ++t;
        if (t == run) {
            align_at(j, p);
            return true;
        }
    }
    return false;
}

void SourceCompare::align_at(size_t j, uint64_t pos) {
    aligned_ = true;
    st_.aligned = true;
    st_.start_packet = pos;
    cur_ = pos;
    // Packets before the aligned one never matched anything: they count against the stream.
    if (j > 0) {
        st_.mismatched += j;
        error_at(received_ - buf_.size());
    }
    std::vector<Packet> rest(buf_.begin() + ptrdiff_t(j), buf_.end());
    pend_first_ = received_ - rest.size();
    buf_.clear();
    buf_.shrink_to_fit();
    for (auto& p : rest) {
        pend_.push_back(p);
        if (pend_.size() >= kPending) step();
    }
}

void SourceCompare::add(const uint8_t* packet) {
    ++received_;
    if (failed_) {
        ++st_.mismatched;
        return;
    }
    Packet p;
    std::memcpy(p.data(), packet, 188);
    if (!aligned_) {
        buf_.push_back(p);
        while (!aligned_ && buf_.size() >= next_try_ + kRun) {
            if (try_align(next_try_, kRun)) return;
            ++next_try_;
            if (next_try_ >= kAlignTries) {
                // Nothing we received in the first packets is in the source: stop searching.
                failed_ = true;
                st_.mismatched += buf_.size();
                error_at(received_ - buf_.size());
                buf_.clear();
                return;
            }
        }
        return;
    }
    pend_.push_back(p);
    if (pend_.size() >= kPending) step();
}

void SourceCompare::step() {
    const Packet head = pend_.front();
    const uint64_t rx = pend_first_;
    pend_.erase(pend_.begin());
    ++pend_first_;

    auto matches_after = [&](uint64_t k) {  // how many pending packets follow src[k] in order
        size_t t = 0;
        while (t < pend_.size() && k + 1 + t < n_ &&
               std::memcmp(src(k + 1 + t), pend_[t].data(), 188) == 0)
            ++t;
        return t;
    };

    if (cur_ < n_ && std::memcmp(src(cur_), head.data(), 188) == 0) {
        ++st_.matched;
        ++cur_;
        st_.end_packet = cur_;
        return;
    }
    error_at(rx);
    // Ahead: packets were skipped. Prefer a position that the following packets confirm, since
    // identical packets (null packets, repeated tables) occur more than once in a source.
    std::optional<uint64_t> first_hit, confirmed;
    uint64_t hi = std::min(n_, cur_ + kLookahead);
    for (uint64_t k = cur_ + 1; k < hi; ++k) {
        if (std::memcmp(src(k), head.data(), 188) != 0) continue;
        if (!first_hit) first_hit = k;
        if (matches_after(k) == pend_.size()) {
            confirmed = k;
            break;
        }
    }
    if (auto k = confirmed ? confirmed : first_hit) {
        st_.missing += *k - cur_;
        ++st_.matched;
        cur_ = *k + 1;
        st_.end_packet = cur_;
        return;
    }
    // Behind: a packet received again or late.
    uint64_t lo = cur_ > kLookahead ? cur_ - kLookahead : 0;
    lo = std::max(lo, st_.start_packet);
    for (uint64_t k = std::min(cur_, n_); k-- > lo;) {
        if (std::memcmp(src(k), head.data(), 188) == 0) {
            ++st_.extra;
            return;
        }
    }
    if (cur_ >= n_) {
        ++st_.extra;  // more than the source holds
        return;
    }
    ++st_.mismatched;  // in the place of the expected packet, but altered
    ++cur_;
    st_.end_packet = cur_;
}

void SourceCompare::finish() {
    if (!aligned_ && !failed_) {
        // Fewer than kRun packets after the last start tried: accept a shorter run at the end.
        while (!aligned_ && next_try_ < buf_.size() && next_try_ < kAlignTries) {
            if (try_align(next_try_, std::min(kRun, buf_.size() - next_try_))) break;
            ++next_try_;
        }
        if (!aligned_ && !buf_.empty()) {
            st_.mismatched += buf_.size();
            error_at(received_ - buf_.size());
            buf_.clear();
        }
    }
    while (!pend_.empty()) step();
}

CompareStats SourceCompare::stats() const {
    SourceCompare copy = *this;
    copy.finish();
    return copy.st_;
}

}  // namespace of::verify
