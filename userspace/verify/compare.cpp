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
    // Three explanations, each scored by how many of the pending packets it makes fit: packets
    // were skipped (head is a later source packet), head is extra (a repeat or a late packet: the
    // stream goes on at cur_), or head replaced the expected packet (altered). Identical packets
    // (null packets, repeated tables) occur many times in a source, so the score decides, not the
    // first byte-equal packet found.
    std::optional<uint64_t> ahead;
    size_t ahead_score = 0;
    uint64_t hi = std::min(n_, cur_ + kLookahead);
    for (uint64_t k = cur_ + 1; k < hi; ++k) {
        if (std::memcmp(src(k), head.data(), 188) != 0) continue;
        size_t sc = matches_after(k);
        if (!ahead || sc > ahead_score) {
            ahead = k;
            ahead_score = sc;
        }
        if (sc == pend_.size()) break;
    }
    bool behind = cur_ >= n_;
    uint64_t lo = cur_ > kLookahead ? cur_ - kLookahead : 0;
    lo = std::max(lo, st_.start_packet);
    for (uint64_t k = std::min(cur_, n_); !behind && k-- > lo;)
        if (std::memcmp(src(k), head.data(), 188) == 0) behind = true;
    // Extra: the stream goes on at cur_, possibly after more extras (a repeated datagram).
    size_t extra_score = 0;
    if (behind && cur_ < n_)
        for (size_t skip = 0; skip < pend_.size() && extra_score == 0; ++skip) {
            size_t t = 0;
            while (skip + t < pend_.size() && cur_ + t < n_ &&
                   std::memcmp(src(cur_ + t), pend_[skip + t].data(), 188) == 0)
                ++t;
            extra_score = t;
        }
    size_t altered_score = cur_ < n_ ? matches_after(cur_) : 0;

    // The explanation that makes most of what follows fit; on a tie the smallest claim of damage.
    size_t best = std::max({behind ? extra_score : 0, ahead ? ahead_score : 0, altered_score});
    if (behind && extra_score == best) {
        ++st_.extra;
    } else if (ahead && ahead_score == best) {
        st_.missing += *ahead - cur_;
        ++st_.matched;
        cur_ = *ahead + 1;
        st_.end_packet = cur_;
    } else if (cur_ < n_) {
        ++st_.mismatched;  // in the place of the expected packet, but altered
        ++cur_;
        st_.end_packet = cur_;
    } else {
        ++st_.extra;  // past the end of the source
    }
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
