// The streaming engine: the daemon's sessions. It is the RTSP server's SessionBackend, holds the
// stream limits of seed 004 [0083], places sessions on streaming threads, and turns PLAY / PAUSE
// into pacer segments.
//
// Every decision a session needs to be reproduced elsewhere (id, client, ports, SSRC, segment
// start packet and time, RTP sequence base) is made here once and reported to an observer as a
// failover::SessionRecord; apply() runs a session from such a record. That is how the secondary
// of a failover pair runs the primary's sessions packet for packet.
#pragma once

#include <netinet/in.h>

#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <optional>
#include <vector>

#include "common/config.h"
#include "common/result.h"
#include "failover/peer_protocol.h"
#include "rtsp/server.h"
#include "store/store.h"
#include "streamer/stream_thread.h"

namespace of::engine {

struct SessionView {
    std::string id;
    std::string asset;
    std::string client;        // ip:port
    in_addr client_ip{};       // where it streams (only that address may control it over RTSP)
    std::string transport;     // "RTP/AVP" or "MP2T/UDP"
    std::string state;         // ready, playing, paused, finished, failed
    uint64_t bitrate_bps = 0;
    int64_t position_ns = 0;   // npt of the next datagram
    streamer::SessionCounters counters;
};

struct Totals {
    uint64_t sessions = 0;
    uint64_t reserved_kbps = 0;
    streamer::ThreadCounters threads;
};

class Engine : public rtsp::SessionBackend {
public:
    // Time between a PLAY and its first datagram: room for the first extent read and for the
    // record to reach the secondary before the first send time.
    static constexpr int64_t kStartLeadNs = 30'000'000;

    static Result<std::unique_ptr<Engine>> create(const Config& config, store::AssetStore& store);
    ~Engine() override;

    // rtsp::SessionBackend
    Result<rtsp::AssetDescription> describe(const std::string& asset) override;
    Result<rtsp::SetupReply> setup(const rtsp::SetupRequest& request) override;
    Result<rtsp::PlayReply> play(const std::string& session, const std::optional<rtsp::Range>& range) override;
    Status pause(const std::string& session) override;
    Status teardown(const std::string& session) override;

    // Replication: every decision, in order, as the record the partner needs.
    void set_observer(std::function<void(const failover::SessionRecord&)> observer);
    // Runs a decision made by the partner (setup, play, pause, teardown).
    Status apply(const failover::SessionRecord& record);
    // Every session's current play record (for a partner that comes online later), or nullopt
    // at once if the engine is busy: the failover thread, its only caller, must never wait for
    // the engine's lock, which is held across calls into a streaming thread that may itself be
    // waiting for the lease only the failover thread renews.
    std::optional<std::vector<failover::SessionRecord>> try_snapshot() const;
    // What a takeover needs to know of each playing session.
    struct Flow {
        uint64_t session = 0;
        in_addr client{};
        uint16_t port = 0;            // host order
        bool rtp = true;
        pacer::Segment segment;       // the current segment
        uint64_t next_packet = 0;     // where our own sender is
    };
    std::vector<Flow> flows() const;
    // Holds (or releases) every streaming thread: nothing is sent while held. See StreamThread::hold.
    Status hold_all(bool on);
    // Every streaming thread's send permit (StreamThread::set_send_permit); INT64_MAX: no limit.
    void set_send_permit(int64_t until_realtime_ns);
    // The first datagram after the one with RTP sequence `seq` (the last one the partner sent),
    // unwrapped around our own position. nullopt if the session is not playing.
    std::optional<uint64_t> packet_after_seq(uint64_t session, uint16_t seq) const;
    // The first datagram whose send time is after `realtime_ns` (the partner's last send).
    std::optional<uint64_t> packet_after_time(uint64_t session, int64_t realtime_ns) const;
    // The RTP sequence number of the first datagram due after `realtime_ns`: where a planned
    // hand-over switches an RTP session (nullopt: not playing, not RTP, or it ends before then).
    std::optional<uint16_t> seq_after_time(uint64_t session, int64_t realtime_ns) const;
    // Restarts a playing session from `packet` (a datagram boundary) on its original schedule:
    // datagrams already due go out at once, in order. Used at takeover (under hold_all) to send
    // what the old primary did not put on the wire.
    Status resume_from(uint64_t session, uint64_t packet);
    // Where each playing session's sender is (absolute packet index of its next datagram), or
    // nullopt at once if the engine is busy (see try_snapshot).
    std::optional<std::vector<failover::Progress>> try_progress() const;

    // Stream limits changed (failover_sync brings the primary's): applies to new sessions.
    void set_limits(uint32_t stream_count, uint64_t mpeg_kbps, uint64_t server_kbps);

    std::vector<SessionView> sessions() const;
    Totals totals() const;
    // Extent reads that failed on any streaming thread so far, and the errno of one of the
    // latest ([0095] disk failure). Never takes the engine's lock: the failover thread polls it.
    std::pair<uint64_t, int> read_failures() const;
    bool asset_in_use(const std::string& name) const;

    static std::string session_name(uint64_t id);
    static std::optional<uint64_t> session_number(const std::string& name);

private:
    struct Session;
    Engine(const Config& config, store::AssetStore& store);
    Session* find(const std::string& name);
    Status check_limits(uint64_t bitrate_bps) const;
    Result<Session*> create_session(uint64_t id, const std::string& asset, const sockaddr_in& client,
                                    uint16_t rtcp_port, bool rtp, uint32_t ssrc);
    Status start_segment(Session& s, const pacer::Segment& seg);
    void emit(const failover::SessionRecord& r);
    failover::SessionRecord record_of(const Session& s, failover::SessionOp op) const;

    Config config_;
    store::AssetStore& store_;
    std::vector<std::unique_ptr<streamer::StreamThread>> threads_;
    std::map<uint64_t, std::unique_ptr<Session>> sessions_;
    uint64_t reserved_bps_ = 0;
    std::mt19937_64 rng_;
    std::function<void(const failover::SessionRecord&)> observer_;
    mutable std::mutex mu_;  // sessions_ is read by status calls from the D-Bus side too
};

}  // namespace of::engine
