#include "engine/engine.h"

#include <arpa/inet.h>
#include <sys/random.h>

#include <cinttypes>
#include <cstdio>

#include "common/clock.h"

namespace of::engine {
namespace {

// A store asset as the streaming threads see it.
class AssetSource : public streamer::Source {
public:
    explicit AssetSource(std::shared_ptr<const store::Asset> a) : asset_(std::move(a)) {}
    uint64_t packet_count() const override { return asset_->index().packet_count(); }
    int64_t packet_time_ns(uint64_t p) const override { return asset_->index().packet_time_ns(p); }
    uint32_t extent_size() const override { return uint32_t(asset_->extent_size()); }
    streamer::ExtentLocation extent(uint64_t i) const override {
        auto loc = asset_->extent_location(i);
        if (!loc) return {-1, 0, 0};  // never asked: the thread stops at packet_count()
        return {loc->fd, loc->offset, uint32_t(loc->length)};
    }
    const store::Asset& asset() const { return *asset_; }

private:
    std::shared_ptr<const store::Asset> asset_;
};

// Bytes on the wire per datagram beyond the TS payload: RTP 12, UDP 8, IPv4 20, Ethernet 14+4.
constexpr uint64_t kOverheadBytes = 12 + 8 + 20 + 18;

std::string addr_text(const sockaddr_in& a) {
    char ip[INET_ADDRSTRLEN];
    inet_ntop(AF_INET, &a.sin_addr, ip, sizeof ip);
    return std::string(ip) + ":" + std::to_string(ntohs(a.sin_port));
}

sockaddr_in client_of(const failover::SessionRecord& r) {
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr = r.client_ip;
    a.sin_port = htons(r.client_port);
    return a;
}

}  // namespace

struct Engine::Session {
    uint64_t id = 0;
    std::string asset;
    std::shared_ptr<const AssetSource> source;
    sockaddr_in client{};
    uint16_t rtcp_port = 0;
    bool rtp = true;
    uint32_t ssrc = 0;
    uint64_t bitrate_bps = 0;
    streamer::StreamThread* thread = nullptr;
    unsigned slot = 0;
    enum class State { kReady, kPlaying, kPaused } state = State::kReady;
    pacer::Segment seg;           // the current (or last) segment
    uint64_t paused_at = 0;       // resume point after PAUSE
    uint16_t next_seq = 0;        // RTP sequence number of the next segment's first datagram
    uint32_t next_rtp_ts = 0;
};

Engine::Engine(const Config& config, store::AssetStore& store) : config_(config), store_(store) {
    uint64_t seed = 0;
    if (getrandom(&seed, sizeof seed, 0) != sizeof seed) seed = uint64_t(realtime_ns());
    rng_.seed(seed);
}

Engine::~Engine() {
    std::lock_guard lk(mu_);
    for (auto& [id, s] : sessions_) (void)s->thread->remove(s->slot);
    sessions_.clear();
    threads_.clear();
}

Result<std::unique_ptr<Engine>> Engine::create(const Config& config, store::AssetStore& store) {
    std::unique_ptr<Engine> e(new Engine(config, store));
    unsigned per_thread = (config.mpeg_stream_count_limit + config.streaming_threads - 1) / config.streaming_threads;
    for (unsigned i = 0; i < config.streaming_threads; ++i) {
        streamer::StreamThread::Options o;
        o.max_sessions = per_thread;
        o.extent_size = config.extent_size;
        o.rt_priority = int(config.streamer_rt_priority);
        o.source_ip = config.stream_ip;
        o.source_port = config.server_rtp_port;
        auto t = streamer::StreamThread::start(o);
        if (!t) return make_error(t.error().code, "streaming thread " + std::to_string(i) + ": " + t.error().message);
        e->threads_.push_back(std::move(*t));
    }
    return e;
}

std::string Engine::session_name(uint64_t id) {
    char b[17];
    snprintf(b, sizeof b, "%016" PRIx64, id);
    return b;
}

std::optional<uint64_t> Engine::session_number(const std::string& name) {
    if (name.size() != 16) return std::nullopt;
    uint64_t v = 0;
    for (char c : name) {
        int d = (c >= '0' && c <= '9') ? c - '0' : (c >= 'a' && c <= 'f') ? c - 'a' + 10 : -1;
        if (d < 0) return std::nullopt;
        v = v << 4 | uint64_t(d);
    }
    return v;
}

Engine::Session* Engine::find(const std::string& name) {
    auto id = session_number(name);
    if (!id) return nullptr;
    auto it = sessions_.find(*id);
    return it == sessions_.end() ? nullptr : it->second.get();
}

void Engine::set_observer(std::function<void(const failover::SessionRecord&)> observer) {
    std::lock_guard lk(mu_);
    observer_ = std::move(observer);
}

void Engine::emit(const failover::SessionRecord& r) {
    if (observer_) observer_(r);
}

failover::SessionRecord Engine::record_of(const Session& s, failover::SessionOp op) const {
    failover::SessionRecord r;
    r.op = op;
    r.session = s.id;
    r.asset = s.asset;
    r.client_ip = s.client.sin_addr;
    r.client_port = ntohs(s.client.sin_port);
    r.client_rtcp_port = s.rtcp_port;
    r.rtp = s.rtp;
    r.ssrc = s.ssrc;
    r.start_packet = s.seg.start_packet;
    r.start_time_ns = s.seg.start_time_ns;
    r.seq_base = s.seg.seq_base;
    r.rtp_ts_base = s.seg.rtp_ts_base;
    return r;
}

Status Engine::check_limits(uint64_t bitrate_bps) const {
    if (sessions_.size() >= config_.mpeg_stream_count_limit)
        return make_error(ENOSPC, "MPEG_Stream_Count_Limit of " + std::to_string(config_.mpeg_stream_count_limit) +
                                      " streams reached");
    uint64_t mpeg_kbps = (reserved_bps_ + bitrate_bps + 999) / 1000;
    if (mpeg_kbps > config_.mpeg_bandwidth_limit_kbps)
        return make_error(EDQUOT, "MPEG_Bandwidth_Limit_In_KBPS of " + std::to_string(config_.mpeg_bandwidth_limit_kbps) +
                                      " would be exceeded (" + std::to_string(mpeg_kbps) + " kbit/s)");
    uint64_t wire_kbps = mpeg_kbps * (1316 + kOverheadBytes) / 1316;
    if (wire_kbps > config_.server_bandwidth_limit_kbps)
        return make_error(EDQUOT, "Server_Bandwidth_Limit_In_KBPS of " + std::to_string(config_.server_bandwidth_limit_kbps) +
                                      " would be exceeded (" + std::to_string(wire_kbps) + " kbit/s on the wire)");
    return {};
}

Result<rtsp::AssetDescription> Engine::describe(const std::string& asset) {
    auto a = store_.find(asset);
    if (!a) return make_error(ENOENT, "no asset '" + asset + "'");
    return rtsp::AssetDescription{a->index().duration_ns(), a->index().bitrate_bps(), 0};
}

Result<Engine::Session*> Engine::create_session(uint64_t id, const std::string& asset, const sockaddr_in& client,
                                                uint16_t rtcp_port, bool rtp, uint32_t ssrc) {
    auto a = store_.find(asset);
    if (!a) return make_error(ENOENT, "no asset '" + asset + "'");
    if (a->extent_size() > config_.extent_size || a->extent_size() % mpegts::kDatagramSize)
        return make_error(ENOTSUP, "asset '" + asset + "' has extents of " + std::to_string(a->extent_size()) +
                                       " bytes; this server streams extents up to " + std::to_string(config_.extent_size));
    uint64_t bitrate = a->index().bitrate_bps();
    if (auto s = check_limits(bitrate); !s) return s.error();

    streamer::StreamThread* best = nullptr;
    for (auto& t : threads_)
        if (!best || t->totals().sessions < best->totals().sessions) best = t.get();
    auto src = std::make_shared<const AssetSource>(a);
    auto slot = best->add({src, client, rtp, ssrc, rtp ? rtcp_port : uint16_t(0)});
    if (!slot) return make_error(ENOSPC, slot.error().message);

    auto s = std::make_unique<Session>();
    s->id = id;
    s->asset = asset;
    s->source = src;
    s->client = client;
    s->rtcp_port = rtcp_port;
    s->rtp = rtp;
    s->ssrc = ssrc;
    s->bitrate_bps = bitrate;
    s->thread = best;
    s->slot = *slot;
    reserved_bps_ += bitrate;
    Session* raw = s.get();
    sessions_[id] = std::move(s);
    return raw;
}

Result<rtsp::SetupReply> Engine::setup(const rtsp::SetupRequest& req) {
    std::lock_guard lk(mu_);
    if (!req.session.empty()) {
        // A repeated SETUP on an existing session may not change anything we stream.
        Session* s = find(req.session);
        if (!s) return make_error(ESRCH, "no session " + req.session);
        if (s->asset != req.asset) return make_error(EBADFD, "session " + req.session + " streams another asset");
        return rtsp::SetupReply{req.session, config_.server_rtp_port,
                                uint16_t(s->rtp ? config_.server_rtp_port + 1 : 0),
                                s->rtp ? std::optional<uint32_t>(s->ssrc) : std::nullopt};
    }
    bool rtp = req.transport.kind == rtsp::TransportKind::RtpAvp;
    sockaddr_in client = req.client_addr;
    client.sin_port = htons(req.transport.client_port_lo);
    // The id names the session in every RTSP request: unguessable, from the kernel's CSPRNG.
    uint64_t id = 0;
    while (id == 0 || sessions_.count(id))
        if (getrandom(&id, sizeof id, 0) != sizeof id) return errno_error("getrandom (session id)");
    uint16_t rtcp = req.transport.client_port_hi != req.transport.client_port_lo ? req.transport.client_port_hi : 0;
    auto s = create_session(id, req.asset, client, rtcp, rtp, uint32_t(rng_()));
    if (!s) return s.error();
    (*s)->next_seq = uint16_t(rng_());
    (*s)->next_rtp_ts = uint32_t(rng_());
    (*s)->seg.seq_base = (*s)->next_seq;
    (*s)->seg.rtp_ts_base = (*s)->next_rtp_ts;
    emit(record_of(**s, failover::SessionOp::kSetup));
    return rtsp::SetupReply{session_name(id), config_.server_rtp_port, uint16_t(rtp ? config_.server_rtp_port + 1 : 0),
                            rtp ? std::optional<uint32_t>((*s)->ssrc) : std::nullopt};
}

Status Engine::start_segment(Session& s, const pacer::Segment& seg) {
    if (auto st = s.thread->play(s.slot, seg); !st) return st;
    s.seg = seg;
    s.state = Session::State::kPlaying;
    return {};
}

Result<rtsp::PlayReply> Engine::play(const std::string& name, const std::optional<rtsp::Range>& range) {
    std::lock_guard lk(mu_);
    Session* s = find(name);
    if (!s) return make_error(ESRCH, "no session " + name);
    const mpegts::Index& idx = s->source->asset().index();

    uint64_t start;
    if (range && range->start_ns) {
        if (*range->start_ns < 0 || *range->start_ns >= idx.duration_ns())
            return make_error(ERANGE, "range starts outside the asset (duration " +
                                          std::to_string(idx.duration_ns() / 1'000'000) + " ms)");
        // Enter at the random-access point at or before the requested time.
        start = pacer::align_to_datagram(idx.rap_at_or_before(idx.packet_at_or_after(*range->start_ns)));
    } else if (s->state == Session::State::kPlaying) {
        // PLAY without a range while playing changes nothing (RFC 2326 10.5).
        auto c = s->thread->counters(s->slot);
        return rtsp::PlayReply{idx.packet_time_ns(c.next_packet), std::nullopt,
                               pacer::rtp_seq(s->seg, (c.next_packet - s->seg.start_packet) / 7),
                               pacer::rtp_timestamp(*s->source, s->seg, (c.next_packet - s->seg.start_packet) / 7)};
    } else if (s->state == Session::State::kPaused) {
        start = s->paused_at;
    } else {
        start = 0;
    }
    if (s->state == Session::State::kPlaying) {  // a seek: stop where we are, continue the RTP numbering
        auto at = s->thread->pause(s->slot);
        if (!at) return at.error();
        uint64_t j = (*at - s->seg.start_packet) / 7;
        s->next_seq = pacer::rtp_seq(s->seg, j);
        s->next_rtp_ts = pacer::rtp_timestamp(*s->source, s->seg, j);
    }
    pacer::Segment seg{start, realtime_ns() + kStartLeadNs, s->next_seq, s->next_rtp_ts};
    if (auto st = start_segment(*s, seg); !st) return st.error();
    emit(record_of(*s, failover::SessionOp::kPlay));
    return rtsp::PlayReply{idx.packet_time_ns(start), range ? range->end_ns : std::nullopt, seg.seq_base,
                           seg.rtp_ts_base};
}

Status Engine::pause(const std::string& name) {
    std::lock_guard lk(mu_);
    Session* s = find(name);
    if (!s) return make_error(ESRCH, "no session " + name);
    if (s->state != Session::State::kPlaying) return make_error(EBADFD, "session " + name + " is not playing");
    auto at = s->thread->pause(s->slot);
    if (!at) return at.error();
    uint64_t j = (*at - s->seg.start_packet) / 7;
    s->paused_at = *at;
    s->next_seq = pacer::rtp_seq(s->seg, j);
    s->next_rtp_ts = pacer::rtp_timestamp(*s->source, s->seg, j);
    s->state = Session::State::kPaused;
    auto r = record_of(*s, failover::SessionOp::kPause);
    r.start_packet = *at;  // the partner pauses at exactly the same datagram
    emit(r);
    return {};
}

Status Engine::teardown(const std::string& name) {
    std::lock_guard lk(mu_);
    Session* s = find(name);
    if (!s) return make_error(ESRCH, "no session " + name);
    auto r = record_of(*s, failover::SessionOp::kTeardown);
    (void)s->thread->remove(s->slot);
    reserved_bps_ -= s->bitrate_bps;
    sessions_.erase(s->id);
    emit(r);
    return {};
}

Status Engine::apply(const failover::SessionRecord& r) {
    std::lock_guard lk(mu_);
    auto it = sessions_.find(r.session);
    Session* s = it == sessions_.end() ? nullptr : it->second.get();
    switch (r.op) {
    case failover::SessionOp::kSetup: {
        if (s) return make_error(EEXIST, "session " + session_name(r.session) + " exists");
        auto made = create_session(r.session, r.asset, client_of(r), r.client_rtcp_port, r.rtp, r.ssrc);
        if (!made) return made.error();
        (*made)->next_seq = r.seq_base;
        (*made)->next_rtp_ts = r.rtp_ts_base;
        (*made)->seg.seq_base = r.seq_base;
        (*made)->seg.rtp_ts_base = r.rtp_ts_base;
        return {};
    }
    case failover::SessionOp::kPlay: {
        if (!s) {  // joined late ([0090]): a play record carries all a setup does
            auto made = create_session(r.session, r.asset, client_of(r), r.client_rtcp_port, r.rtp, r.ssrc);
            if (!made) return made.error();
            s = *made;
        }
        if (r.start_packet % 7 || r.start_packet >= s->source->packet_count())
            return make_error(EINVAL, "play record starts at a bad packet");
        if (s->state == Session::State::kPlaying && s->seg.start_packet == r.start_packet &&
            s->seg.start_time_ns == r.start_time_ns)
            return {};  // the same decision again (it travels on both paths)
        if (s->state == Session::State::kPlaying) (void)s->thread->pause(s->slot);
        return start_segment(*s, {r.start_packet, r.start_time_ns, r.seq_base, r.rtp_ts_base});
    }
    case failover::SessionOp::kPause: {
        if (!s) return make_error(ESRCH, "no session " + session_name(r.session));
        // Stop exactly where the primary stopped, even if our sender had not got there yet.
        (void)s->thread->pause(s->slot);
        s->paused_at = r.start_packet;
        s->state = Session::State::kPaused;
        return {};
    }
    case failover::SessionOp::kTeardown:
        if (!s) return make_error(ESRCH, "no session " + session_name(r.session));
        (void)s->thread->remove(s->slot);
        reserved_bps_ -= s->bitrate_bps;
        sessions_.erase(it);
        return {};
    }
    return make_error(EINVAL, "unknown session op");
}

std::optional<std::vector<failover::SessionRecord>> Engine::try_snapshot() const {
    std::unique_lock lk(mu_, std::try_to_lock);
    if (!lk.owns_lock()) return std::nullopt;
    std::vector<failover::SessionRecord> out;
    for (auto& [id, s] : sessions_)
        out.push_back(record_of(*s, s->state == Session::State::kPlaying ? failover::SessionOp::kPlay
                                                                         : failover::SessionOp::kSetup));
    return out;
}

std::vector<Engine::Flow> Engine::flows() const {
    std::lock_guard lk(mu_);
    std::vector<Flow> out;
    for (auto& [id, s] : sessions_)
        if (s->state == Session::State::kPlaying)
            out.push_back({id, s->client.sin_addr, ntohs(s->client.sin_port), s->rtp, s->seg,
                           s->thread->counters(s->slot).next_packet});
    return out;
}

Status Engine::hold_all(bool on) {
    for (auto& t : threads_)
        if (auto s = t->hold(on); !s) return s;
    return {};
}

void Engine::set_send_permit(int64_t until_realtime_ns) {
    for (auto& t : threads_) t->set_send_permit(until_realtime_ns);  // threads_ is fixed after create()
}

std::optional<uint64_t> Engine::packet_after_seq(uint64_t session, uint16_t seq) const {
    std::lock_guard lk(mu_);
    auto it = sessions_.find(session);
    if (it == sessions_.end() || it->second->state != Session::State::kPlaying) return std::nullopt;
    const Session& s = *it->second;
    uint64_t our_j = (s.thread->counters(s.slot).next_packet - s.seg.start_packet) / 7;
    // Signed distance from the partner's next datagram to ours: the two are within a few
    // hundred datagrams of each other, far inside 16-bit sequence space.
    int16_t behind = int16_t(uint16_t(pacer::rtp_seq(s.seg, our_j) - uint16_t(seq + 1)));
    int64_t j = int64_t(our_j) - behind;
    if (j < 0) j = 0;
    uint64_t total = pacer::datagram_count(s.source->packet_count(), s.seg.start_packet);
    return pacer::first_packet_of(s.seg, std::min<uint64_t>(uint64_t(j), total));
}

// Smallest j with send_time(j) > t (the segment's datagram count if none): every datagram
// scheduled up to t was sent (datagrams leave at or just after their send time).
template <class EngineSession>  // Engine::Session is private
static uint64_t datagram_after_time(const EngineSession& s, int64_t t) {
    uint64_t lo = 0, hi = pacer::datagram_count(s.source->packet_count(), s.seg.start_packet);
    while (lo < hi) {
        uint64_t mid = lo + (hi - lo) / 2;
        if (pacer::send_time_ns(*s.source, s.seg, mid) > t) hi = mid;
        else lo = mid + 1;
    }
    return lo;
}

std::optional<uint64_t> Engine::packet_after_time(uint64_t session, int64_t t) const {
    std::lock_guard lk(mu_);
    auto it = sessions_.find(session);
    if (it == sessions_.end() || it->second->state != Session::State::kPlaying) return std::nullopt;
    const Session& s = *it->second;
    return pacer::first_packet_of(s.seg, datagram_after_time(s, t));
}

std::optional<uint16_t> Engine::seq_after_time(uint64_t session, int64_t t) const {
    std::lock_guard lk(mu_);
    auto it = sessions_.find(session);
    if (it == sessions_.end() || it->second->state != Session::State::kPlaying || !it->second->rtp) return std::nullopt;
    const Session& s = *it->second;
    uint64_t j = datagram_after_time(s, t);
    if (j >= pacer::datagram_count(s.source->packet_count(), s.seg.start_packet)) return std::nullopt;
    return pacer::rtp_seq(s.seg, j);
}

Status Engine::resume_from(uint64_t session, uint64_t packet) {
    std::lock_guard lk(mu_);
    auto it = sessions_.find(session);
    if (it == sessions_.end()) return make_error(ESRCH, "no session " + session_name(session));
    Session& s = *it->second;
    if (s.state != Session::State::kPlaying) return {};
    if (packet < s.seg.start_packet || (packet - s.seg.start_packet) % 7)
        return make_error(EINVAL, "resume point is not a datagram of the current segment");
    // Same schedule, later start: datagram j of the new segment keeps its original send time
    // and RTP numbering. The session keeps the original segment as its reference.
    uint64_t j = (packet - s.seg.start_packet) / 7;
    pacer::Segment seg{packet, pacer::send_time_ns(*s.source, s.seg, j), pacer::rtp_seq(s.seg, j),
                       pacer::rtp_timestamp(*s.source, s.seg, j)};
    return s.thread->play(s.slot, seg);
}

std::optional<std::vector<failover::Progress>> Engine::try_progress() const {
    std::unique_lock lk(mu_, std::try_to_lock);
    if (!lk.owns_lock()) return std::nullopt;
    std::vector<failover::Progress> out;
    for (auto& [id, s] : sessions_)
        if (s->state == Session::State::kPlaying) out.push_back({id, s->thread->counters(s->slot).next_packet});
    return out;
}

std::vector<SessionView> Engine::sessions() const {
    std::lock_guard lk(mu_);
    std::vector<SessionView> out;
    for (auto& [id, s] : sessions_) {
        SessionView v;
        v.id = session_name(id);
        v.asset = s->asset;
        v.client = addr_text(s->client);
        v.client_ip = s->client.sin_addr;
        v.transport = s->rtp ? "RTP/AVP" : "MP2T/UDP";
        v.counters = s->thread->counters(s->slot);
        v.bitrate_bps = s->bitrate_bps;
        v.position_ns = s->source->asset().index().packet_time_ns(
            s->state == Session::State::kPaused ? s->paused_at : v.counters.next_packet);
        switch (v.counters.state) {
        case streamer::SessionState::kFinished: v.state = "finished"; break;
        case streamer::SessionState::kFailed: v.state = "failed"; break;
        default:
            v.state = s->state == Session::State::kPlaying ? "playing"
                      : s->state == Session::State::kPaused ? "paused" : "ready";
        }
        out.push_back(std::move(v));
    }
    return out;
}

std::pair<uint64_t, int> Engine::read_failures() const {
    std::pair<uint64_t, int> out{0, 0};
    for (auto& t : threads_) {  // fixed after create()
        auto [n, e] = t->read_failures();
        out.first += n;
        if (n) out.second = e;
    }
    return out;
}

Totals Engine::totals() const {
    std::lock_guard lk(mu_);
    Totals t;
    t.sessions = sessions_.size();
    t.reserved_kbps = (reserved_bps_ + 999) / 1000;
    for (auto& th : threads_) {
        auto c = th->totals();
        t.threads.sessions += c.sessions;
        t.threads.datagrams += c.datagrams;
        t.threads.bytes += c.bytes;
        t.threads.deadline_misses += c.deadline_misses;
        t.threads.late_datagrams += c.late_datagrams;
        t.threads.send_errors += c.send_errors;
        t.threads.reads += c.reads;
        t.threads.loops += c.loops;
        t.threads.permit_waits += c.permit_waits;
        t.threads.read_failures += c.read_failures;
        for (size_t i = 0; i < c.lateness.size(); ++i) t.threads.lateness[i] += c.lateness[i];
        t.threads.lateness_max_ns = std::max(t.threads.lateness_max_ns, c.lateness_max_ns);
    }
    return t;
}

void Engine::set_limits(uint32_t stream_count, uint64_t mpeg_kbps, uint64_t server_kbps) {
    std::lock_guard lk(mu_);
    config_.mpeg_stream_count_limit = stream_count;
    config_.mpeg_bandwidth_limit_kbps = mpeg_kbps;
    config_.server_bandwidth_limit_kbps = server_kbps;
}

bool Engine::asset_in_use(const std::string& name) const {
    std::lock_guard lk(mu_);
    for (auto& [id, s] : sessions_)
        if (s->asset == name) return true;
    return false;
}

}  // namespace of::engine
