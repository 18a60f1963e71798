#include "tcp_takeover/segment.h"

#include <cstring>

namespace of::tcp_takeover {
namespace {

constexpr size_t kEthHeader = 14;
constexpr uint16_t kEthIp = 0x0800, kEthVlan = 0x8100, kEthQinq = 0x88a8;
constexpr uint8_t kProtoTcp = 6;

uint16_t be16(const uint8_t* p) { return uint16_t(p[0] << 8 | p[1]); }
uint32_t be32(const uint8_t* p) { return uint32_t(p[0]) << 24 | uint32_t(p[1]) << 16 | uint32_t(p[2]) << 8 | p[3]; }

Error bad(const char* why) { return make_error(EBADMSG, why); }

// Ones' complement sum over the IPv4 pseudo-header and the TCP segment.
bool checksum_ok(const uint8_t* ip, std::span<const uint8_t> tcp) {
    uint64_t sum = 0;
    for (int i = 12; i < 20; i += 2) sum += be16(ip + i);  // source and destination address
    sum += kProtoTcp;
    sum += tcp.size();
    size_t i = 0;
    for (; i + 1 < tcp.size(); i += 2) sum += be16(tcp.data() + i);
    if (i < tcp.size()) sum += uint16_t(tcp[i] << 8);
    while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
    return sum == 0xffff;
}

// TCP options between the fixed header and the data offset. A malformed option list ends the
// parse of options (the kernel does the same: it ignores what follows), it does not fail the frame.
void parse_options(std::span<const uint8_t> opt, Segment& s) {
    size_t i = 0;
    while (i < opt.size()) {
        uint8_t kind = opt[i];
        if (kind == 0) break;  // end of list
        if (kind == 1) {       // no-op
            ++i;
            continue;
        }
        if (i + 1 >= opt.size()) break;
        uint8_t len = opt[i + 1];
        if (len < 2 || i + len > opt.size()) break;
        const uint8_t* v = opt.data() + i + 2;
        switch (kind) {
            case 2: if (len == 4) s.mss = be16(v); break;
            case 3: if (len == 3) s.wscale = v[0]; break;
            case 4: if (len == 2) s.sack_permitted = true; break;
            case 8:
                if (len == 10) {
                    s.ts_val = be32(v);
                    s.ts_ecr = be32(v + 4);
                }
                break;
            default: break;
        }
        i += len;
    }
}

}  // namespace

Result<Segment> parse_frame(std::span<const uint8_t> f, bool verify_checksum) {
    if (f.size() < kEthHeader) return bad("frame shorter than an Ethernet header");
    size_t off = 12;
    uint16_t type = be16(f.data() + off);
    for (int tags = 0; (type == kEthVlan || type == kEthQinq) && tags < 2; ++tags) {
        if (f.size() < off + 6) return bad("truncated VLAN tag");
        off += 4;
        type = be16(f.data() + off);
    }
    off += 2;
    if (type != kEthIp) return make_error(ENOENT, "not IPv4");
    if (f.size() < off + 20) return bad("truncated IPv4 header");
    const uint8_t* ip = f.data() + off;
    if ((ip[0] >> 4) != 4) return bad("IP version is not 4");
    size_t ihl = size_t(ip[0] & 0x0f) * 4;
    if (ihl < 20) return bad("IPv4 header length under 20");
    if (ip[9] != kProtoTcp) return make_error(ENOENT, "not TCP");
    size_t total = be16(ip + 2);
    if (total < ihl || off + total > f.size()) return bad("IPv4 total length outside the frame");
    if (be16(ip + 6) & 0x3fff) return bad("IPv4 fragment");  // MF or an offset
    std::span<const uint8_t> tcp = f.subspan(off + ihl, total - ihl);
    if (tcp.size() < 20) return bad("truncated TCP header");
    size_t doff = size_t(tcp[12] >> 4) * 4;
    if (doff < 20 || doff > tcp.size()) return bad("TCP data offset outside the segment");
    if (verify_checksum && !checksum_ok(ip, tcp)) return bad("TCP checksum");

    Segment s;
    std::memcpy(&s.saddr, ip + 12, 4);
    std::memcpy(&s.daddr, ip + 16, 4);
    s.sport = be16(tcp.data());
    s.dport = be16(tcp.data() + 2);
    s.seq = be32(tcp.data() + 4);
    s.ack = be32(tcp.data() + 8);
    s.flags = tcp[13];
    s.window = be16(tcp.data() + 14);
    parse_options(tcp.subspan(20, doff - 20), s);
    s.payload = tcp.subspan(doff);
    return s;
}

}  // namespace of::tcp_takeover
