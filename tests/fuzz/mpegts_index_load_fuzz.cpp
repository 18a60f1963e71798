// libFuzzer target: arbitrary bytes as an index file (of::mpegts::Index::deserialize) and as a
// catalog record (of::store::decode_record). Byte 0 bit 0 set: the length field and CRC are
// recomputed first, so mutations reach the checks behind the checksum. An accepted index must
// re-serialize to the same bytes and have a strictly increasing, invertible time map; an accepted
// record too (a version 1 record: to a current one that decodes to the same record).
#include <cstddef>
#include <cstdint>
#include <vector>

#include "mpegts/crc.h"
#include "mpegts/index.h"
#include "store/record.h"

using namespace of::mpegts;

namespace {

void check(bool ok) {
    if (!ok) __builtin_trap();
}

void fix_length_and_crc(std::vector<uint8_t>& b) {
    if (b.size() < 28) return;
    uint64_t body = b.size() - 28;
    for (int i = 0; i < 8; ++i) b[16 + i] = uint8_t(body >> (8 * i));
    uint32_t c = crc32_file(std::span(b).first(b.size() - 4));
    for (int i = 0; i < 4; ++i) b[b.size() - 4 + i] = uint8_t(c >> (8 * i));
}

void exercise(const Index& ix) {
    const uint64_t n = ix.packet_count();
    const uint64_t step = n > 512 ? n / 512 : 1;
    int64_t prev = -1;
    for (uint64_t p = 0;; p = std::min(p + step, n)) {
        int64_t t = ix.packet_time_ns(p);
        check(t > prev);
        check(ix.packet_at_or_after(t) == p);
        check(ix.rap_at_or_before(p) <= p);
        prev = t;
        if (p == n) break;
    }
    (void)ix.bitrate_bps();
    (void)ix.warnings();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    if (size == 0) return 0;
    std::vector<uint8_t> b(data + 1, data + size);
    if (data[0] & 1) fix_length_and_crc(b);

    auto ix = Index::deserialize(b);
    if (ix.ok()) {
        check(ix->serialize() == b);
        exercise(*ix);
    } else {
        check(ix.error().code == EUCLEAN);
    }

    auto rec = of::store::decode_record(b);
    if (rec.ok()) {
        // A current record re-encodes to its bytes; an older one (version 1, no digest) to the
        // current format, which must decode to the same record.
        auto again = of::store::encode_record(*rec);
        if (b[8] == of::store::kRecordFormatVersion) {
            check(again == b);
        } else {
            auto back = of::store::decode_record(again);
            check(back.ok() && back->name == rec->name && back->disks == rec->disks && back->sha256 == rec->sha256 &&
                  back->extent_size == rec->extent_size && back->index == rec->index);
        }
        check(of::store::validate_asset_name(rec->name).ok());
        exercise(rec->index);
    } else {
        check(rec.error().code == EUCLEAN);
    }
    return 0;
}
