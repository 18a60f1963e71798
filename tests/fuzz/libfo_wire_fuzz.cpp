// Fuzzes the holder's request parser (libfo/wire.h) and the Fig. 5 lookups it feeds: any
// packet a local client sends must parse or be refused, never read out of bounds.
#include "libfo/wire.h"

#include <uapi/linux/failover_fsm.h>

#include <cstdint>
#include <cstdlib>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    auto r = of::fo::wire::parse_request(std::span<const uint8_t>(data, size));
    if (!r) return 0;
    using of::fo::wire::Op;
    switch (r->op) {
    case Op::SetState: {
        const fo_transition& t = r->transition;
        // the same lookups the holder and the module make, on any byte values
        (void)fo_fsm_state_name(t.type, t.state);
        (void)fo_fsm_state_name(t.expect_type, t.expect_state);
        (void)fo_fsm_find(t.expect_type, t.expect_state, t.type, t.state);
        break;
    }
    case Op::SetMessage:
        if (size != sizeof(of::fo::wire::Header) + sizeof(fo_message)) std::abort();
        break;
    case Op::GetStatus:
    case Op::Unregister:
        if (size != sizeof(of::fo::wire::Header)) std::abort();
        break;
    case Op::Register:
        break;
    default:
        std::abort();  // parse_request accepted an unknown op
    }
    return 0;
}
