// Feeds arbitrary frames, as a standby's tap would from the hub, to the frame parser and the hub
// view (with the RTSP framers), and peer replies among them, then asks for a takeover plan. The
// input is a sequence of chunks, each a 2-byte big-endian length and that many bytes; a chunk
// whose first byte is 0xff is a reply (client port, offsets, answer bytes), any other a frame.
// Invariants: nothing crashes, every revival's offsets and bytes hang together.
#include <cstdint>
#include <cstring>
#include <span>

#include "rtsp/framing.h"
#include "tcp_takeover/hub_view.h"
#include "tcp_takeover/segment.h"

using namespace of::tcp_takeover;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    HubViewOptions o;
    o.server.s_addr = htonl(0x0a4d0001);  // 10.77.0.1
    o.server_port = 554;
    o.max_connections = 8;
    o.max_bytes = 4096;
    o.request_framer = [] { return of::rtsp::make_request_framer({}); };
    o.response_framer = [] { return of::rtsp::make_response_framer(); };
    HubView view(o);
    int64_t now = 1;
    size_t off = 0;
    while (off + 2 <= size) {
        size_t len = size_t(data[off]) << 8 | data[off + 1];
        off += 2;
        if (len > size - off) len = size - off;
        std::span<const uint8_t> chunk(data + off, len);
        off += len;
        now += 1'000'000;
        if (!chunk.empty() && chunk[0] == 0xff) {
            if (chunk.size() < 7) continue;
            Reply r;
            r.key.client.s_addr = htonl(0x0a4d0065);  // 10.77.0.101
            r.key.port = uint16_t(chunk[1] << 8 | chunk[2]);
            r.request_end = chunk[3] << 8 | chunk[4];
            r.response_start = chunk[5] << 8 | chunk[6];
            r.response.assign(reinterpret_cast<const char*>(chunk.data() + 7), chunk.size() - 7);
            view.add_reply(std::move(r));
            continue;
        }
        auto seg = parse_frame(chunk, (chunk.size() & 1) != 0);
        if (seg) {
            if (seg->payload.data() < chunk.data() || seg->payload.data() + seg->payload.size() > chunk.data() + chunk.size())
                __builtin_trap();  // the payload must lie inside the frame
            view.add(*seg, now);
        }
    }
    auto plan = view.plan(now);
    if (plan.revive.size() + plan.lost.size() > o.max_connections) __builtin_trap();
    for (auto& r : plan.revive) {
        if (r.unacked.size() > o.max_bytes || r.pending.size() > o.max_bytes) __builtin_trap();
        if (r.out_offset < r.unsent.size()) __builtin_trap();
        if (r.replayed == 0 && !r.unsent.empty()) __builtin_trap();
    }
    return 0;
}
