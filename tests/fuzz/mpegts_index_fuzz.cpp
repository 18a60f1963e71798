// libFuzzer target: arbitrary bytes into the streaming MPEG-TS indexer.
// Byte 0 steers: bit 0 rewrites every 188th byte to 0x47 (so mutations reach past the sync check),
// bits 1-7 pick the chunk size the bytes are fed in. Checked on every input:
//   - chunked feeding and one-shot indexing agree (same error code, or equal indexes);
//   - an accepted index has a strictly increasing, invertible time map, consistent random-access
//     lookups, and survives a serialization round trip byte for byte.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <vector>

#include "mpegts/index.h"
#include "mpegts/indexer.h"

using namespace of::mpegts;

namespace {

void check(bool ok) {
    if (!ok) __builtin_trap();
}

void exercise(const Index& ix) {
    const uint64_t n = ix.packet_count();
    // Every packet for small assets, an even sample plus the ends for large ones.
    uint64_t step = n > 512 ? n / 512 : 1;
    int64_t prev = -1;
    for (uint64_t p = 0;; p = std::min(p + step, n)) {
        int64_t t = ix.packet_time_ns(p);
        check(t > prev);
        check(ix.packet_at_or_after(t) == p);
        if (t > 0) check(ix.packet_at_or_after(t - 1) <= p);
        check(ix.rap_at_or_before(p) <= p);
        prev = t;
        if (p == n) break;
    }
    check(ix.packet_time_ns(n + 1) == ix.duration_ns());  // clamped past the end
    check(ix.packet_time_ns(0) == 0);
    check(ix.packet_at_or_after(ix.duration_ns() + 1) == n);
    (void)ix.bitrate_bps();
    (void)ix.warnings();
    auto bytes = ix.serialize();
    auto back = Index::deserialize(bytes);
    check(back.ok());
    check(*back == ix);
    check(back->serialize() == bytes);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    if (size == 0) return 0;
    uint8_t ctl = data[0];
    std::vector<uint8_t> ts(data + 1, data + size);
    if (ctl & 1)
        for (size_t i = 0; i < ts.size(); i += 188) ts[i] = 0x47;
    size_t chunk = size_t(ctl >> 1) * 37 + 1;  // 1 .. 4700 bytes

    IndexLimits lim;
    lim.max_bytes = 1 << 22;
    lim.max_pcrs = 4096;
    lim.max_raps = 4096;
    lim.max_transport_errors = ctl & 0x80 ? 3 : 0;

    Indexer ix(lim);
    of::Status fed;
    for (size_t off = 0; off < ts.size() && fed.ok(); off += chunk)
        fed = ix.feed(std::span(ts).subspan(off, std::min(chunk, ts.size() - off)));
    auto chunked = fed.ok() ? ix.finish() : of::Result<Index>(fed.error());
    auto whole = index_buffer(ts, lim);
    check(chunked.ok() == whole.ok());
    if (!whole.ok()) {
        check(chunked.error().code == whole.error().code);
        check(index_error_of(whole.error()).has_value());
        check(!whole.error().message.empty());
        return 0;
    }
    check(*chunked == *whole);
    exercise(*whole);
    return 0;
}
