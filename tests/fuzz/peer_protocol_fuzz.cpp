// Feeds arbitrary datagrams to the peer-message decoder. With a fixed key, a fuzzer rarely forges
// a valid tag, so the input's first byte chooses whether to re-sign the rest before decoding: that
// way the body parser behind the tag check is fuzzed too.
#include <openssl/hmac.h>

#include <cstdint>
#include <vector>

#include "failover/peer_protocol.h"

using namespace of::failover;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    static const std::vector<uint8_t> key(32, 0x42);
    if (size < 1) return 0;
    std::vector<uint8_t> d(data + 1, data + size);
    if ((data[0] & 1) && d.size() >= kPeerHeaderSize + kPeerTagSize) {
        unsigned len = 0;
        size_t signed_len = d.size() - kPeerTagSize;
        HMAC(EVP_sha256(), key.data(), int(key.size()), d.data(), signed_len, d.data() + signed_len, &len);
    }
    auto m = decode(d, key);
    if (m.ok()) {
        auto again = encode(*m, key);
        if (!again.ok()) __builtin_trap();  // whatever decodes must encode
        auto back = decode(*again, key);
        if (!back.ok() || back->body.index() != m->body.index()) __builtin_trap();
        ReplayGuard g;
        g.check(*m, m->sent_ns);
    }
    return 0;
}
