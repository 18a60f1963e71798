// A streaming thread: one core's worth of sessions, shared-nothing (Seastar style).
//
// The thread owns one io_uring (uring::ExtentReader) with two registered extent buffers per
// session slot, one UDP socket bound to the stream IP's RTP port, and a timer heap of sessions
// ordered by the send time of their next datagram. Each loop turn it sends every datagram that
// is due (in sendmmsg batches), makes sure each session's next extent is being read before the
// current one runs out, and sleeps in the ring until the next send time or a read completion.
//
// Control calls (add/play/pause/remove) are synchronous: they queue a command, wake the ring and
// wait for the thread's answer, so that e.g. pause() returns the exact resume position.
#pragma once

#include <netinet/in.h>

#include <array>
#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "common/result.h"
#include "pacer/schedule.h"
#include "streamer/source.h"

namespace of::uring {
class ExtentReader;
}

namespace of::streamer {

struct SessionSpec {
    std::shared_ptr<const Source> source;
    sockaddr_in destination{};
    bool rtp = true;        // RTP/AVP (RFC 2250) or raw MP2T over UDP
    uint32_t ssrc = 0;
    // The client's RTCP port (RTP only; 0: none). At the end of the asset the session sends an
    // RTCP BYE there, so that players end at once instead of waiting for a timeout.
    uint16_t rtcp_port = 0;
};

// Send lateness (the time the datagram's sendmmsg began minus its send time), a histogram over
// these upper bounds in microseconds; the last bucket holds everything above the last bound.
inline constexpr std::array<int64_t, 12> kLatenessBoundsUs = {25,   50,   100,   200,   500,   1000,
                                                              2000, 5000, 10000, 20000, 50000, 100000};
inline constexpr size_t kLatenessBuckets = kLatenessBoundsUs.size() + 1;

// The smallest bound under which at least a fraction q of the counted datagrams fall (microseconds;
// for the last bucket, -1: "above the last bound"). 0 when nothing was counted.
int64_t lateness_quantile_us(const std::array<uint64_t, kLatenessBuckets>& hist, double q);

enum class SessionState : int { kIdle = 0, kPlaying = 1, kFinished = 2, kFailed = 3 };

struct SessionCounters {
    SessionState state = SessionState::kIdle;
    uint64_t datagrams = 0;
    uint64_t bytes = 0;
    uint64_t deadline_misses = 0;  // extents not in memory when their first datagram was due
    uint64_t late_datagrams = 0;   // sent later than late_threshold_ns after their send time
    uint64_t send_errors = 0;
    uint64_t next_packet = 0;      // absolute TS packet index of the next datagram to send
    int error = 0;                 // errno of a failed read, if state is kFailed
};

struct ThreadCounters {
    uint64_t sessions = 0;
    uint64_t datagrams = 0;
    uint64_t bytes = 0;
    uint64_t deadline_misses = 0;
    uint64_t late_datagrams = 0;
    uint64_t send_errors = 0;
    uint64_t reads = 0;
    uint64_t loops = 0;
    uint64_t permit_waits = 0;     // times datagrams were due but the send permit had run out
    uint64_t read_failures = 0;    // extent reads that failed or came back short (the session failed)
    int last_read_error = 0;       // errno of the latest (EIO for a short read)
    std::array<uint64_t, kLatenessBuckets> lateness{};  // datagrams per send-lateness bucket
    int64_t lateness_max_ns = 0;   // the latest datagram so far
};

class StreamThread {
public:
    struct Options {
        unsigned max_sessions = 64;
        uint32_t extent_size = 1316 * 128;  // the largest extent any served asset uses
        int rt_priority = 0;                // SCHED_FIFO priority; 0 = normal scheduling
        in_addr source_ip{};                // INADDR_ANY allowed
        uint16_t source_port = 0;           // 0 = any; RTCP leaves from source_port + 1
        int64_t late_threshold_ns = 1'000'000;
        // Wake at the first due datagram plus this window and send everything due by then in
        // one batch: fewer wake-ups and system calls, at most this much added lateness.
        int64_t batch_window_ns = 200'000;
        int cpu = -1;                       // pin to this CPU if >= 0
    };

    static Result<std::unique_ptr<StreamThread>> start(const Options& options);
    ~StreamThread();
    StreamThread(const StreamThread&) = delete;
    StreamThread& operator=(const StreamThread&) = delete;

    // Reserves a slot for a session; it sends nothing until play(). ENOSPC when full.
    Result<unsigned> add(SessionSpec spec);
    // Starts (or restarts at a new position: resume, seek, takeover) the session's segment.
    // Datagrams whose send time has passed leave at once, in order.
    Status play(unsigned slot, const pacer::Segment& segment);
    // Stops sending; returns the absolute packet index of the first datagram not sent.
    Result<uint64_t> pause(unsigned slot);
    // Frees the slot (its in-flight reads are drained before it is reused).
    Status remove(unsigned slot);
    // While held, the thread sends nothing at all (reads go on); on release every due datagram
    // goes out in order. A takeover holds, rewinds sessions, opens the gate, releases.
    Status hold(bool on);
    // The send permit: datagrams leave only while CLOCK_REALTIME is before `until` less
    // kPermitMarginNs (INT64_MAX: no limit, the default). A primary transmits inside a lease its
    // secondary granted, and the gate drops whatever leaves after the lease; the thread stops
    // short of it instead, so nothing is dropped: while the permit has run out the thread
    // behaves as held, and once it is renewed every due datagram goes out in order.
    void set_send_permit(int64_t until_realtime_ns);
    // The permit ends this much before the lease, so that a datagram the thread decided to send
    // reaches the gate while the lease still runs: sendmmsg of a batch takes microseconds, but a
    // virtual CPU can be descheduled for milliseconds in between (measured here: 1-5 ms stalls
    // several times a second), and a datagram the gate drops for the lease is lost.
    static constexpr int64_t kPermitMarginNs = 3'000'000;

    SessionCounters counters(unsigned slot) const;
    ThreadCounters totals() const;
    // Extent reads that failed so far and the errno of the latest; lock-free, any thread.
    std::pair<uint64_t, int> read_failures() const {
        uint64_t n = read_failures_.load(std::memory_order_acquire);
        return {n, last_read_error_.load(std::memory_order_relaxed)};
    }
    unsigned max_sessions() const { return options_.max_sessions; }

private:
    struct Slot;
    struct Command;
    struct HeapEntry;
    explicit StreamThread(const Options& o);
    void run();
    void handle_commands();
    void execute(Command& c);
    void on_read(uint64_t tag, int result);
    void service(int64_t now);
    bool produce(Slot& s, unsigned slot_index, int64_t now);
    bool ensure_extent(Slot& s, unsigned slot_index, uint64_t extent, int64_t keep);
    void flush();
    void count_sent(unsigned from, unsigned n, int64_t sent_at);
    bool permitted(int64_t now_realtime_ns) const;
    void drain_error_queue();
    void send_bye(const Slot& s);
    void schedule(Slot& s, unsigned slot_index);
    Result<uint64_t> call(Command& c);
    Status post(Command& c);

    Options options_;
    std::unique_ptr<uring::ExtentReader> reader_;
    int sock_ = -1;
    int rtcp_sock_ = -1;
    std::thread thread_;
    std::atomic<bool> stop_{false};
    bool held_ = false;
    std::atomic<int64_t> permit_until_{INT64_MAX};
    // The loop found the permit run out with datagrams due (set_send_permit() then wakes it).
    std::atomic<bool> permit_waiting_{false};

    std::mutex mu_;
    std::vector<Command*> pending_;

    std::vector<std::unique_ptr<Slot>> slots_;
    std::vector<HeapEntry> heap_;
    struct Batch;
    std::unique_ptr<Batch> batch_;

    std::atomic<uint64_t> sessions_{0}, reads_{0}, loops_{0}, permit_waits_{0}, read_failures_{0};
    std::atomic<int> last_read_error_{0};
    std::array<std::atomic<uint64_t>, kLatenessBuckets> lateness_{};
    std::atomic<int64_t> lateness_max_ns_{0};
    ThreadCounters retired_;  // counters of removed sessions, so totals() never goes down
    mutable std::mutex retired_mu_;
};

}  // namespace of::streamer
