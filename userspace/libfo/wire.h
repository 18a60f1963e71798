// The request/reply format between the userspace backend and the holder (a unix SEQPACKET
// socket, one request or reply per packet). Requests reuse the uapi structs of the ioctls, so
// that both backends validate the same fields the same way.
#pragma once

#include "common/result.h"

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <string>

#include <uapi/linux/failover.h>

namespace of::fo::wire {

inline constexpr uint32_t kMagic = 0x4f464f31;  // "OFO1"

enum class Op : uint32_t { GetStatus = 1, SetState = 2, Register = 3, Unregister = 4, SetMessage = 5 };

struct Header {
    uint32_t magic;
    uint32_t op;
    uint32_t seq;  // echoed in the reply: a reply that arrives after its caller gave up is dropped
};

struct Reply {
    uint32_t magic;
    int32_t err;  // 0 or a positive errno
    uint32_t seq;
    uint32_t reserved;
    fo_status status;
};

struct Request {
    Op op{};
    uint32_t seq = 0;
    fo_transition transition{};
    fo_registration registration{};
    fo_message message{};
};

// The largest request: anything longer is refused.
inline constexpr size_t kMaxRequest = sizeof(Header) + sizeof(fo_message);

// Parses one packet: magic, a known op, and exactly the size of that op's body. Field values
// are checked later by whoever acts on them (as the module checks ioctl arguments).
// Header-only so that the fuzz flavour (which does not build libfo) can fuzz it.
inline of::Result<Request> parse_request(std::span<const uint8_t> pkt) {
    Header h{};
    if (pkt.size() < sizeof(h)) return make_error(EINVAL, "request shorter than its header");
    std::memcpy(&h, pkt.data(), sizeof(h));
    if (h.magic != kMagic) return make_error(EINVAL, "request: bad magic");
    Request r;
    auto body = pkt.subspan(sizeof(h));
    auto take = [&](void* dst, size_t n) -> of::Status {
        if (body.size() != n) return make_error(EINVAL, "request: body size does not match its op");
        if (n) std::memcpy(dst, body.data(), n);
        return {};
    };
    of::Status st;
    switch (Op(h.op)) {
    case Op::GetStatus: st = take(nullptr, 0); break;
    case Op::SetState: st = take(&r.transition, sizeof(r.transition)); break;
    case Op::Register: st = take(&r.registration, sizeof(r.registration)); break;
    case Op::Unregister: st = take(nullptr, 0); break;
    case Op::SetMessage: st = take(&r.message, sizeof(r.message)); break;
    default: return make_error(EINVAL, "request: unknown op " + std::to_string(h.op));
    }
    if (!st) return st.error();
    r.op = Op(h.op);
    r.seq = h.seq;
    return r;
}


}  // namespace of::fo::wire
