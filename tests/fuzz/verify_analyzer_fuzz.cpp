// libFuzzer target: the verifying client's analysis of received datagrams (RTP header, TS packets,
// PCRs, the source compare). Input: byte 0 = mode (0 auto, 1 RTP, 2 raw) | 0x80 with a source;
// with a source, a 2-byte length and that many source bytes; then records of
// [2-byte length][2-byte arrival step in µs][datagram].
#include <cstddef>
#include <cstdint>
#include <vector>

#include "verify/analyzer.h"
#include "verify/report.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    if (size < 1) return 0;
    using namespace of::verify;
    Options opt;
    uint8_t m = data[0] & 0x03;
    opt.mode = m == 1 ? Mode::Rtp : m == 2 ? Mode::Raw : Mode::Auto;
    size_t pos = 1;
    std::vector<uint8_t> source;
    if (data[0] & 0x80) {
        if (size < pos + 2) return 0;
        size_t n = size_t(data[pos]) << 8 | data[pos + 1];
        pos += 2;
        if (n > size - pos) n = size - pos;
        source.assign(data + pos, data + pos + n);
        pos += n;
    }
    Analyzer a(opt);
    if (!source.empty()) (void)a.set_source(source);
    int64_t t = 1'700'000'000'000'000'000;
    while (pos + 4 <= size) {
        size_t n = size_t(data[pos]) << 8 | data[pos + 1];
        t += int64_t(data[pos + 2] << 8 | data[pos + 3]) * 1000;
        pos += 4;
        if (n > size - pos) n = size - pos;
        a.add({data + pos, n}, t);
        pos += n;
    }
    Report r = a.report();
    RunInfo info;
    (void)to_json(r, info);
    (void)to_text(r, info);
    return 0;
}
