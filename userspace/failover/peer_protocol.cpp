#include "failover/peer_protocol.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include <algorithm>
#include <cstring>
#include <fstream>
#include <sstream>

namespace of::failover {
namespace {

class Writer {
public:
    void u8(uint8_t v) { b_.push_back(v); }
    void u16(uint16_t v) { put(v, 2); }
    void u32(uint32_t v) { put(v, 4); }
    void u64(uint64_t v) { put(v, 8); }
    void str(const std::string& s) {
        u16(uint16_t(s.size()));
        b_.insert(b_.end(), s.begin(), s.end());
    }
    std::vector<uint8_t>& bytes() { return b_; }

private:
    void put(uint64_t v, int n) {
        for (int i = n - 1; i >= 0; --i) b_.push_back(uint8_t(v >> (8 * i)));
    }
    std::vector<uint8_t> b_;
};

// Bounds-checked reader: after any overrun every read returns 0 and ok() is false.
class Reader {
public:
    explicit Reader(std::span<const uint8_t> b) : b_(b) {}
    uint8_t u8() { return uint8_t(get(1)); }
    uint16_t u16() { return uint16_t(get(2)); }
    uint32_t u32() { return uint32_t(get(4)); }
    uint64_t u64() { return get(8); }
    std::string str(size_t max) {
        size_t n = u16();
        if (n > max || pos_ + n > b_.size()) {
            ok_ = false;
            return {};
        }
        std::string s(reinterpret_cast<const char*>(b_.data() + pos_), n);
        pos_ += n;
        return s;
    }
    bool ok() const { return ok_; }
    bool done() const { return ok_ && pos_ == b_.size(); }

private:
    uint64_t get(size_t n) {
        if (!ok_ || pos_ + n > b_.size()) {
            ok_ = false;
            return 0;
        }
        uint64_t v = 0;
        for (size_t i = 0; i < n; ++i) v = v << 8 | b_[pos_ + i];
        pos_ += n;
        return v;
    }
    std::span<const uint8_t> b_;
    size_t pos_ = 0;
    bool ok_ = true;
};

std::array<uint8_t, kPeerTagSize> tag_of(std::span<const uint8_t> data, std::span<const uint8_t> key) {
    std::array<uint8_t, kPeerTagSize> out{};
    unsigned len = 0;
    HMAC(EVP_sha256(), key.data(), int(key.size()), data.data(), data.size(), out.data(), &len);
    return out;
}

bool printable(const std::string& s) {
    for (unsigned char c : s)
        if (c < 0x20 || c > 0x7e) return false;
    return true;
}

Error malformed(const std::string& why) { return make_error(EBADMSG, "peer message: " + why); }

void put_record(Writer& body, const SessionRecord& r) {
    body.u8(uint8_t(r.op));
    body.u64(r.session);
    body.str(r.asset);
    body.u32(ntohl(r.client_ip.s_addr));
    body.u16(r.client_port);
    body.u16(r.client_rtcp_port);
    body.u8(r.rtp ? 1 : 0);
    body.u32(r.ssrc);
    body.u64(r.start_packet);
    body.u64(uint64_t(r.start_time_ns));
    body.u16(r.seq_base);
    body.u32(r.rtp_ts_base);
}

Result<SessionRecord> get_record(Reader& r) {
    SessionRecord x;
    uint8_t op = r.u8();
    if (op < 1 || op > 4) return malformed("unknown session op " + std::to_string(op));
    x.op = SessionOp(op);
    x.session = r.u64();
    x.asset = r.str(kMaxNameLength);
    x.client_ip.s_addr = htonl(r.u32());
    x.client_port = r.u16();
    x.client_rtcp_port = r.u16();
    uint8_t rtp = r.u8();
    if (rtp > 1) return malformed("bad transport flag");
    x.rtp = rtp == 1;
    x.ssrc = r.u32();
    x.start_packet = r.u64();
    x.start_time_ns = int64_t(r.u64());
    x.seq_base = r.u16();
    x.rtp_ts_base = r.u32();
    if (!printable(x.asset)) return malformed("unprintable asset name");
    return x;
}

}  // namespace

MsgType type_of(const Body& b) {
    static constexpr MsgType kTypes[] = {MsgType::kHeartbeat, MsgType::kHeartbeatAck, MsgType::kFailover,
                                         MsgType::kStop,      MsgType::kSession,      MsgType::kSyncRequest,
                                         MsgType::kSyncReply, MsgType::kReply,        MsgType::kHandOver,
                                         MsgType::kHandOverAck, MsgType::kHandOverCancel};
    static_assert(std::size(kTypes) == std::variant_size_v<Body>);
    return kTypes[b.index()];
}

Result<std::vector<uint8_t>> encode(const Message& m, std::span<const uint8_t> key) {
    if (key.size() < kMinKeyBytes || key.size() > kMaxKeyBytes) return make_error(EINVAL, "peer key has a bad length");
    Writer body;
    if (auto* h = std::get_if<Heartbeat>(&m.body)) {
        if (h->progress.size() > kMaxProgressEntries) return make_error(EMSGSIZE, "too many progress entries");
        body.u8(h->state);
        body.u32(h->sessions);
        body.u32(h->progress_offset);
        body.u16(uint16_t(h->progress.size()));
        for (auto& p : h->progress) {
            body.u64(p.session);
            body.u64(p.next_packet);
        }
    } else if (auto* a = std::get_if<HeartbeatAck>(&m.body)) {
        body.u8(a->state);
        body.u64(a->lease_until_ns);
        body.u32(a->fence_gen);
    } else if (auto* f = std::get_if<FailoverNotice>(&m.body)) {
        if (f->detail.size() > 256) return make_error(EMSGSIZE, "failover detail too long");
        body.u8(f->reason);
        body.str(f->detail);
    } else if (auto* s = std::get_if<StopOrder>(&m.body)) {
        body.u64(s->takeover_ns);
    } else if (auto* r = std::get_if<SessionRecord>(&m.body)) {
        if (r->asset.size() > kMaxNameLength) return make_error(EMSGSIZE, "asset name too long");
        put_record(body, *r);
    } else if (auto* c = std::get_if<ConnReply>(&m.body)) {
        if (c->records.size() > kMaxReplyRecords) return make_error(EMSGSIZE, "too many records in a reply");
        if (c->response.size() > kPeerMaxDatagram) return make_error(EMSGSIZE, "reply too long");
        body.u32(ntohl(c->client_ip.s_addr));
        body.u16(c->client_port);
        body.u64(c->request_end);
        body.u64(c->response_start);
        body.str(c->response);
        body.u8(uint8_t(c->records.size()));
        for (auto& rec : c->records) {
            if (rec.asset.size() > kMaxNameLength) return make_error(EMSGSIZE, "asset name too long");
            put_record(body, rec);
        }
    } else if (auto* o = std::get_if<HandOver>(&m.body)) {
        if (o->entries.size() > kMaxHandOverEntries) return make_error(EMSGSIZE, "too many flows in a hand-over part");
        body.u64(o->id);
        body.u64(uint64_t(o->at_ns));
        body.u16(o->part);
        body.u16(o->parts);
        body.u16(uint16_t(o->entries.size()));
        for (auto& e : o->entries) {
            body.u32(ntohl(e.client.s_addr));
            body.u16(e.port);
            body.u16(e.seq);
        }
    } else if (auto* k = std::get_if<HandOverAck>(&m.body)) {
        body.u64(k->id);
        body.u16(k->part);
        body.u16(k->accepted);
    } else if (auto* x = std::get_if<HandOverCancel>(&m.body)) {
        body.u64(x->id);
    } else if (auto* q = std::get_if<SyncRequest>(&m.body)) {
        body.u64(q->nonce);
    } else if (auto* y = std::get_if<SyncReply>(&m.body)) {
        body.u64(y->nonce);
        body.u64(uint64_t(y->primary_time_ns));
        body.u16(uint16_t(y->params.size()));
        for (auto& [k, v] : y->params) {
            if (k.size() > kMaxNameLength || v.size() > 512) return make_error(EMSGSIZE, "sync parameter too long");
            body.str(k);
            body.str(v);
        }
    }
    size_t total = kPeerHeaderSize + body.bytes().size() + kPeerTagSize;
    if (total > kPeerMaxDatagram) return make_error(EMSGSIZE, "peer message of " + std::to_string(total) + " bytes too large");

    Writer out;
    out.u32(kPeerMagic);
    out.u8(kPeerVersion);
    out.u8(uint8_t(type_of(m.body)));
    out.u16(uint16_t(body.bytes().size()));
    out.u64(m.epoch);
    out.u64(m.seq);
    out.u64(uint64_t(m.sent_ns));
    auto& b = out.bytes();
    b.insert(b.end(), body.bytes().begin(), body.bytes().end());
    auto tag = tag_of(b, key);
    b.insert(b.end(), tag.begin(), tag.end());
    return std::move(b);
}

Result<Message> decode(std::span<const uint8_t> d, std::span<const uint8_t> key) {
    if (d.size() < kPeerHeaderSize + kPeerTagSize || d.size() > kPeerMaxDatagram)
        return malformed("size " + std::to_string(d.size()) + " out of range");
    if (key.size() < kMinKeyBytes || key.size() > kMaxKeyBytes) return make_error(EINVAL, "peer key has a bad length");
    Reader h(d.first(kPeerHeaderSize));
    uint32_t magic = h.u32();
    uint8_t version = h.u8(), type = h.u8();
    uint16_t body_len = h.u16();
    if (magic != kPeerMagic) return malformed("bad magic");
    if (version != kPeerVersion) return malformed("unsupported version " + std::to_string(version));
    if (kPeerHeaderSize + body_len + kPeerTagSize != d.size()) return malformed("length field does not match size");
    auto signed_part = d.first(kPeerHeaderSize + body_len);
    auto tag = tag_of(signed_part, key);
    if (CRYPTO_memcmp(tag.data(), d.data() + signed_part.size(), kPeerTagSize) != 0)
        return make_error(EPERM, "peer message: authentication failed");

    Message m;
    m.epoch = h.u64();
    m.seq = h.u64();
    m.sent_ns = int64_t(h.u64());
    if (m.seq == 0) return malformed("sequence number 0");
    Reader r(d.subspan(kPeerHeaderSize, body_len));
    switch (MsgType(type)) {
    case MsgType::kHeartbeat: {
        Heartbeat x;
        x.state = r.u8();
        x.sessions = r.u32();
        x.progress_offset = r.u32();
        size_t n = r.u16();
        if (n > kMaxProgressEntries) return malformed("too many progress entries");
        for (size_t i = 0; i < n && r.ok(); ++i) x.progress.push_back({r.u64(), r.u64()});
        m.body = std::move(x);
        break;
    }
    case MsgType::kHeartbeatAck: {
        HeartbeatAck x;
        x.state = r.u8();
        x.lease_until_ns = r.u64();
        x.fence_gen = r.u32();
        m.body = x;
        break;
    }
    case MsgType::kFailover: {
        FailoverNotice x;
        x.reason = r.u8();
        x.detail = r.str(256);
        if (!printable(x.detail)) return malformed("unprintable failover detail");
        m.body = std::move(x);
        break;
    }
    case MsgType::kStop:
        m.body = StopOrder{r.u64()};
        break;
    case MsgType::kSession: {
        auto x = get_record(r);
        if (!x) return x.error();
        m.body = std::move(*x);
        break;
    }
    case MsgType::kReply: {
        ConnReply x;
        x.client_ip.s_addr = htonl(r.u32());
        x.client_port = r.u16();
        x.request_end = r.u64();
        x.response_start = r.u64();
        x.response = r.str(kPeerMaxDatagram);
        size_t n = r.u8();
        if (n > kMaxReplyRecords) return malformed("too many records in a reply");
        for (size_t i = 0; i < n && r.ok(); ++i) {
            auto rec = get_record(r);
            if (!rec) return rec.error();
            x.records.push_back(std::move(*rec));
        }
        if (x.client_port == 0 || x.request_end == 0) return malformed("reply names no request");
        m.body = std::move(x);
        break;
    }
    case MsgType::kHandOver: {
        HandOver x;
        x.id = r.u64();
        x.at_ns = int64_t(r.u64());
        x.part = r.u16();
        x.parts = r.u16();
        size_t n = r.u16();
        if (n > kMaxHandOverEntries) return malformed("too many flows in a hand-over part");
        for (size_t i = 0; i < n && r.ok(); ++i) {
            HandOverEntry e;
            e.client.s_addr = htonl(r.u32());
            e.port = r.u16();
            e.seq = r.u16();
            if (e.port == 0) return malformed("hand-over flow without a port");
            x.entries.push_back(e);
        }
        if (x.parts == 0 || x.part >= x.parts) return malformed("hand-over part out of range");
        m.body = std::move(x);
        break;
    }
    case MsgType::kHandOverAck: {
        HandOverAck x;
        x.id = r.u64();
        x.part = r.u16();
        x.accepted = r.u16();
        m.body = x;
        break;
    }
    case MsgType::kHandOverCancel:
        m.body = HandOverCancel{r.u64()};
        break;
    case MsgType::kSyncRequest:
        m.body = SyncRequest{r.u64()};
        break;
    case MsgType::kSyncReply: {
        SyncReply x;
        x.nonce = r.u64();
        x.primary_time_ns = int64_t(r.u64());
        size_t n = r.u16();
        for (size_t i = 0; i < n && r.ok(); ++i) {
            std::string k = r.str(kMaxNameLength), v = r.str(512);
            if (!printable(k) || !printable(v)) return malformed("unprintable sync parameter");
            x.params.emplace_back(std::move(k), std::move(v));
        }
        m.body = std::move(x);
        break;
    }
    default:
        return malformed("unknown type " + std::to_string(type));
    }
    if (!r.ok()) return malformed("body truncated");
    if (!r.done()) return malformed("trailing bytes in body");
    return m;
}

ReplayGuard::Verdict ReplayGuard::check(const Message& m, int64_t now_ns) {
    int64_t skew = m.sent_ns - now_ns;
    if (skew > kMaxClockSkewNs || skew < -kMaxClockSkewNs) return Verdict::kClockSkew;
    if (!any_ || m.epoch != epoch_) {
        // A new epoch (the partner restarted) must be newer than anything accepted so far, so an
        // old epoch's recorded messages cannot be replayed.
        if (any_ && m.sent_ns <= last_sent_ns_) return Verdict::kStale;
        any_ = true;
        epoch_ = m.epoch;
        highest_ = m.seq;
        window_ = 1;
        last_sent_ns_ = m.sent_ns;
        return Verdict::kAccept;
    }
    if (m.seq > highest_) {
        uint64_t shift = m.seq - highest_;
        window_ = shift >= 64 ? 1 : (window_ << shift) | 1;
        highest_ = m.seq;
    } else {
        uint64_t back = highest_ - m.seq;
        if (back >= 64) return Verdict::kStale;
        if (window_ & (uint64_t(1) << back)) return Verdict::kReplay;
        window_ |= uint64_t(1) << back;
    }
    if (m.sent_ns > last_sent_ns_) last_sent_ns_ = m.sent_ns;
    return Verdict::kAccept;
}

std::array<uint8_t, 16> fence_token(std::span<const uint8_t> key, uint64_t epoch, uint32_t generation) {
    Writer w;
    for (char c : std::string_view("oneframe fence")) w.u8(uint8_t(c));
    w.u64(epoch);
    w.u32(generation);
    auto t = tag_of(w.bytes(), key);
    std::array<uint8_t, 16> out{};
    std::copy_n(t.begin(), out.size(), out.begin());
    return out;
}

std::vector<uint8_t> path_key(std::span<const uint8_t> key, PeerPath path) {
    std::string label = path == PeerPath::kPrivate ? "oneframe peer path private" : "oneframe peer path stream LAN";
    auto k = tag_of(std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(label.data()), label.size()), key);
    return {k.begin(), k.end()};
}

Result<std::vector<uint8_t>> parse_key_hex(const std::string& text) {
    std::string hex;
    for (char c : text)
        if (!isspace(static_cast<unsigned char>(c))) hex += c;
    if (hex.size() % 2 || hex.size() < 2 * kMinKeyBytes || hex.size() > 2 * kMaxKeyBytes)
        return make_error(EINVAL, "peer key must be 32..128 hex digits (16..64 bytes)");
    std::vector<uint8_t> key;
    for (size_t i = 0; i < hex.size(); i += 2) {
        auto nib = [](char c) -> int {
            if (c >= '0' && c <= '9') return c - '0';
            if (c >= 'a' && c <= 'f') return c - 'a' + 10;
            if (c >= 'A' && c <= 'F') return c - 'A' + 10;
            return -1;
        };
        int hi = nib(hex[i]), lo = nib(hex[i + 1]);
        if (hi < 0 || lo < 0) return make_error(EINVAL, "peer key contains a non-hex character");
        key.push_back(uint8_t(hi << 4 | lo));
    }
    return key;
}

Result<std::vector<uint8_t>> load_key_file(const std::string& path) {
    std::ifstream f(path);
    if (!f) return errno_error("cannot read peer key file " + path);
    std::ostringstream ss;
    ss << f.rdbuf();
    if (ss.str().size() > 4096) return make_error(EINVAL, path + ": peer key file too large");
    auto k = parse_key_hex(ss.str());
    if (!k) return make_error(EINVAL, path + ": " + k.error().message);
    return k;
}

}  // namespace of::failover
