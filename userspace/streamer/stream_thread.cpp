#include "streamer/stream_thread.h"

#include <arpa/inet.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <future>

#include "common/clock.h"
#include "uring/extent_reader.h"

namespace of::streamer {
namespace {
constexpr unsigned kBatch = 64;               // datagrams per sendmmsg
constexpr int64_t kMaxSleepNs = 100'000'000;  // re-check commands at least every 100 ms
constexpr int kSendBufferBytes = 4 << 20;
constexpr int64_t kPermitPollNs = 500'000;     // re-check an exhausted send permit this often
constexpr int64_t kByeDelayNs = 50'000'000;  // after the last datagram, so the BYE never overtakes it

enum class BufState : uint8_t { kEmpty, kReading, kReady };
}  // namespace

struct StreamThread::Slot {
    bool used = false;
    SessionSpec spec;
    uint64_t asset_bytes = 0;
    pacer::Segment seg;
    uint64_t j = 0;         // next datagram of the segment
    uint64_t jcount = 0;    // datagrams in the segment
    int64_t next_send_ns = 0;
    uint32_t gen = 0;       // bumps on every play/pause/remove: stale heap entries are ignored
    bool playing = false;
    bool waiting = false;   // blocked on an extent read
    bool bye_pending = false;  // RTCP BYE due at next_send_ns
    int64_t missed_extent = -1;
    struct Buffer {
        int64_t extent = -1;
        BufState state = BufState::kEmpty;
    } buf[2];

    std::atomic<int> state{int(SessionState::kIdle)};
    std::atomic<uint64_t> datagrams{0}, bytes{0}, misses{0}, late{0}, send_errors{0}, next_packet{0};
    std::atomic<int> error{0};

    bool reading() const { return buf[0].state == BufState::kReading || buf[1].state == BufState::kReading; }
};

struct StreamThread::Command {
    enum Kind { kAdd, kPlay, kPause, kRemove, kHold } kind;
    unsigned slot = 0;
    SessionSpec spec;
    pacer::Segment seg;
    std::promise<Result<uint64_t>> reply;
};

struct StreamThread::HeapEntry {
    int64_t when;
    unsigned slot;
    uint32_t gen;
    bool operator>(const HeapEntry& o) const { return when > o.when; }
};

struct StreamThread::Batch {
    mmsghdr msgs[kBatch];
    iovec iov[kBatch][2];
    uint8_t rtp[kBatch][pacer::kRtpHeaderSize];
    unsigned slot[kBatch];
    int64_t due[kBatch];  // each datagram's send time
    unsigned n = 0;
};

int64_t lateness_quantile_us(const std::array<uint64_t, kLatenessBuckets>& hist, double q) {
    uint64_t total = 0;
    for (uint64_t c : hist) total += c;
    if (total == 0) return 0;
    uint64_t want = uint64_t(q * double(total) + 0.5), seen = 0;
    if (want == 0) want = 1;
    for (size_t i = 0; i < kLatenessBoundsUs.size(); ++i) {
        seen += hist[i];
        if (seen >= want) return kLatenessBoundsUs[i];
    }
    return -1;
}

StreamThread::StreamThread(const Options& o) : options_(o), batch_(std::make_unique<Batch>()) {}

Result<std::unique_ptr<StreamThread>> StreamThread::start(const Options& o) {
    if (o.max_sessions == 0 || o.max_sessions > 8000)
        return make_error(EINVAL, "streaming thread: max_sessions must be 1..8000");
    if (o.extent_size == 0 || o.extent_size % mpegts::kDatagramSize)
        return make_error(EINVAL, "streaming thread: extent size must be a positive multiple of 1316");
    std::unique_ptr<StreamThread> t(new StreamThread(o));

    auto reader = uring::ExtentReader::create(o.max_sessions * 2, o.extent_size);
    if (!reader) return reader.error();
    t->reader_.reset(*reader);

    t->sock_ = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (t->sock_ < 0) return errno_error("streaming thread: socket");
    int one = 1, sndbuf = kSendBufferBytes;
    setsockopt(t->sock_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    setsockopt(t->sock_, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
    if (setsockopt(t->sock_, SOL_SOCKET, SO_SNDBUFFORCE, &sndbuf, sizeof sndbuf) < 0)
        setsockopt(t->sock_, SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof sndbuf);
    int tos = 0x88;  // DSCP AF41: video
    setsockopt(t->sock_, IPPROTO_IP, IP_TOS, &tos, sizeof tos);
    sockaddr_in sa{};
    sa.sin_family = AF_INET;
    sa.sin_addr = o.source_ip;
    sa.sin_port = htons(o.source_port);
    if (bind(t->sock_, reinterpret_cast<sockaddr*>(&sa), sizeof sa) < 0) {
        char ip[INET_ADDRSTRLEN];
        inet_ntop(AF_INET, &o.source_ip, ip, sizeof ip);
        return errno_error(std::string("streaming thread: bind ") + ip + ":" + std::to_string(o.source_port));
    }
    if (o.source_port != 0) {
        // RTCP: only BYE goes out; receiver reports that come in are not read (a small buffer
        // that overflows is all they cost).
        t->rtcp_sock_ = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (t->rtcp_sock_ < 0) return errno_error("streaming thread: RTCP socket");
        setsockopt(t->rtcp_sock_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        setsockopt(t->rtcp_sock_, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
        int small = 4096;
        setsockopt(t->rtcp_sock_, SOL_SOCKET, SO_RCVBUF, &small, sizeof small);
        sockaddr_in ra = sa;
        ra.sin_port = htons(uint16_t(o.source_port + 1));
        if (bind(t->rtcp_sock_, reinterpret_cast<sockaddr*>(&ra), sizeof ra) < 0)
            return errno_error("streaming thread: bind RTCP port " + std::to_string(o.source_port + 1));
    }

    t->slots_.resize(o.max_sessions);
    for (auto& s : t->slots_) s = std::make_unique<Slot>();
    t->heap_.reserve(o.max_sessions * 2);

    std::promise<Status> ready;
    auto started = ready.get_future();
    StreamThread* self = t.get();
    t->thread_ = std::thread([self, &ready] {
        prctl(PR_SET_TIMERSLACK, 1UL);  // wake within a microsecond of the send time
        if (self->options_.cpu >= 0) {
            cpu_set_t set;
            CPU_ZERO(&set);
            CPU_SET(self->options_.cpu, &set);
            pthread_setaffinity_np(pthread_self(), sizeof set, &set);
        }
        if (self->options_.rt_priority > 0) {
            sched_param sp{};
            sp.sched_priority = self->options_.rt_priority;
            if (int rc = pthread_setschedparam(pthread_self(), SCHED_FIFO, &sp); rc != 0) {
                ready.set_value(errno_error("streaming thread: SCHED_FIFO priority " +
                                                std::to_string(sp.sched_priority),
                                            rc));
                return;
            }
        }
        pthread_setname_np(pthread_self(), "of-stream");
        ready.set_value(Status{});
        self->run();
    });
    if (auto s = started.get(); !s) {
        t->thread_.join();
        return s.error();
    }
    return t;
}

StreamThread::~StreamThread() {
    stop_ = true;
    if (reader_) reader_->wake();
    if (thread_.joinable()) thread_.join();
    // Commands posted after the loop ended are answered so no caller waits forever.
    for (Command* c : pending_) c->reply.set_value(make_error(ESHUTDOWN, "streaming thread stopped"));
    if (sock_ >= 0) close(sock_);
    if (rtcp_sock_ >= 0) close(rtcp_sock_);
}

// Hands a command to the streaming thread and waits for its answer.
Result<uint64_t> StreamThread::call(Command& c) {
    auto f = c.reply.get_future();
    {
        std::lock_guard lk(mu_);
        pending_.push_back(&c);
    }
    reader_->wake();
    return f.get();
}

Status StreamThread::post(Command& c) {
    auto r = call(c);
    if (!r) return r.error();
    return {};
}

Result<unsigned> StreamThread::add(SessionSpec spec) {
    if (!spec.source) return make_error(EINVAL, "session without a source");
    if (spec.source->extent_size() > options_.extent_size || spec.source->extent_size() % mpegts::kDatagramSize)
        return make_error(EINVAL, "asset extent size " + std::to_string(spec.source->extent_size()) +
                                      " does not fit this thread's buffers of " + std::to_string(options_.extent_size));
    Command c{Command::kAdd};
    c.spec = std::move(spec);
    auto r = call(c);
    if (!r) return r.error();
    return unsigned(*r);
}

Status StreamThread::play(unsigned slot, const pacer::Segment& segment) {
    Command c{Command::kPlay};
    c.slot = slot;
    c.seg = segment;
    return post(c);
}

Result<uint64_t> StreamThread::pause(unsigned slot) {
    Command c{Command::kPause};
    c.slot = slot;
    return call(c);
}

Status StreamThread::hold(bool on) {
    Command c{Command::kHold};
    c.slot = on ? 1 : 0;
    return post(c);
}

void StreamThread::set_send_permit(int64_t until_realtime_ns) {
    int64_t was = permit_until_.exchange(until_realtime_ns, std::memory_order_acq_rel);
    // Under a permit, ask the kernel to report datagrams that the gate refused (ENOBUFS): sent
    // after a stall that outlasted the lease, they are sent again once the lease is renewed
    // instead of being lost. Without one, the gate's refusals (standby) are expected and silent.
    // A socket option, safe from any thread; flush() copes with either setting.
    if ((was == INT64_MAX) != (until_realtime_ns == INT64_MAX)) {
        int on = until_realtime_ns != INT64_MAX;
        (void)setsockopt(sock_, IPPROTO_IP, IP_RECVERR, &on, sizeof on);
    }
    if (permit_waiting_.load(std::memory_order_acquire)) reader_->wake();
}

Status StreamThread::remove(unsigned slot) {
    Command c{Command::kRemove};
    c.slot = slot;
    return post(c);
}

SessionCounters StreamThread::counters(unsigned slot) const {
    SessionCounters out;
    if (slot >= slots_.size()) return out;
    const Slot& s = *slots_[slot];
    out.state = SessionState(s.state.load(std::memory_order_relaxed));
    out.datagrams = s.datagrams.load(std::memory_order_relaxed);
    out.bytes = s.bytes.load(std::memory_order_relaxed);
    out.deadline_misses = s.misses.load(std::memory_order_relaxed);
    out.late_datagrams = s.late.load(std::memory_order_relaxed);
    out.send_errors = s.send_errors.load(std::memory_order_relaxed);
    out.next_packet = s.next_packet.load(std::memory_order_relaxed);
    out.error = s.error.load(std::memory_order_relaxed);
    return out;
}

ThreadCounters StreamThread::totals() const {
    std::lock_guard lk(retired_mu_);  // a removal moves a slot's counters into retired_ under it
    ThreadCounters t = retired_;
    for (auto& sp : slots_) {
        const Slot& s = *sp;
        t.datagrams += s.datagrams.load(std::memory_order_relaxed);
        t.bytes += s.bytes.load(std::memory_order_relaxed);
        t.deadline_misses += s.misses.load(std::memory_order_relaxed);
        t.late_datagrams += s.late.load(std::memory_order_relaxed);
        t.send_errors += s.send_errors.load(std::memory_order_relaxed);
    }
    t.sessions = sessions_.load(std::memory_order_relaxed);
    t.reads = reads_.load(std::memory_order_relaxed);
    t.loops = loops_.load(std::memory_order_relaxed);
    t.permit_waits = permit_waits_.load(std::memory_order_relaxed);
    t.read_failures = read_failures_.load(std::memory_order_acquire);
    t.last_read_error = last_read_error_.load(std::memory_order_relaxed);
    for (size_t i = 0; i < kLatenessBuckets; ++i) t.lateness[i] = lateness_[i].load(std::memory_order_relaxed);
    t.lateness_max_ns = lateness_max_ns_.load(std::memory_order_relaxed);
    return t;
}

// ---- the loop (runs on the streaming thread only) ----

void StreamThread::handle_commands() {
    std::vector<Command*> cmds;
    {
        std::lock_guard lk(mu_);
        cmds.swap(pending_);
    }
    for (Command* c : cmds) execute(*c);
}

void StreamThread::execute(Command& c) {
    if (c.kind == Command::kAdd) {
        for (unsigned i = 0; i < slots_.size(); ++i) {
            Slot& s = *slots_[i];
            // A removed slot with reads in flight is not reusable until they land in its buffers.
            if (s.used || s.reading()) continue;
            s.used = true;
            s.spec = std::move(c.spec);
            s.asset_bytes = s.spec.source->packet_count() * mpegts::kPacketSize;
            s.playing = s.waiting = s.bye_pending = false;
            s.missed_extent = -1;
            s.buf[0] = s.buf[1] = Slot::Buffer{};
            s.state = int(SessionState::kIdle);
            s.datagrams = s.bytes = s.misses = s.late = s.send_errors = s.next_packet = 0;
            s.error = 0;
            ++s.gen;
            sessions_.fetch_add(1, std::memory_order_relaxed);
            c.reply.set_value(uint64_t(i));
            return;
        }
        c.reply.set_value(make_error(ENOSPC, "streaming thread full (" + std::to_string(slots_.size()) + " sessions)"));
        return;
    }
    if (c.kind == Command::kHold) {
        held_ = c.slot != 0;
        c.reply.set_value(uint64_t(0));
        return;
    }
    if (c.slot >= slots_.size() || !slots_[c.slot]->used) {
        c.reply.set_value(make_error(ESRCH, "no session in slot " + std::to_string(c.slot)));
        return;
    }
    Slot& s = *slots_[c.slot];
    switch (c.kind) {
    case Command::kPlay: {
        if (c.seg.start_packet % mpegts::kPacketsPerDatagram) {
            c.reply.set_value(make_error(EINVAL, "segment start is not on a datagram boundary"));
            return;
        }
        s.seg = c.seg;
        s.j = 0;
        s.jcount = pacer::datagram_count(s.spec.source->packet_count(), c.seg.start_packet);
        s.next_send_ns = c.seg.start_time_ns;
        s.playing = s.jcount > 0;
        s.waiting = s.bye_pending = false;
        s.missed_extent = -1;
        ++s.gen;
        s.next_packet = c.seg.start_packet;
        s.state = int(s.playing ? SessionState::kPlaying : SessionState::kFinished);
        if (s.playing) {
            // Start reading now: the first datagram's send time is the first extent's deadline.
            uint64_t first = c.seg.start_packet * mpegts::kPacketSize / s.spec.source->extent_size();
            ensure_extent(s, c.slot, first, int64_t(first + 1));
            schedule(s, c.slot);
        }
        c.reply.set_value(uint64_t(0));
        return;
    }
    case Command::kPause:
        s.playing = false;
        ++s.gen;
        if (s.state == int(SessionState::kPlaying)) s.state = int(SessionState::kIdle);
        c.reply.set_value(pacer::first_packet_of(s.seg, s.j));
        return;
    case Command::kRemove: {
        std::lock_guard lk(retired_mu_);
        retired_.datagrams += s.datagrams.load(std::memory_order_relaxed);
        retired_.bytes += s.bytes.load(std::memory_order_relaxed);
        retired_.deadline_misses += s.misses.load(std::memory_order_relaxed);
        retired_.late_datagrams += s.late.load(std::memory_order_relaxed);
        retired_.send_errors += s.send_errors.load(std::memory_order_relaxed);
        // The slot's counters start from zero for its next session (kAdd), and retired_ now
        // holds them: read together under retired_mu_ they never count twice.
        s.datagrams = s.bytes = s.misses = s.late = s.send_errors = 0;
    }
        s.playing = false;
        s.used = false;
        ++s.gen;
        s.spec.source.reset();  // in-flight reads target our buffers, not the source's memory
        sessions_.fetch_sub(1, std::memory_order_relaxed);
        c.reply.set_value(uint64_t(0));
        return;
    case Command::kAdd:
    case Command::kHold:
        break;
    }
}

void StreamThread::schedule(Slot& s, unsigned slot_index) {
    heap_.push_back(HeapEntry{s.next_send_ns, slot_index, s.gen});
    std::push_heap(heap_.begin(), heap_.end(), std::greater<>());
}

// Tag of a read: slot, buffer and the extent number it fills.
static uint64_t read_tag(unsigned slot, int b, uint64_t extent) {
    return (uint64_t(slot) << 41) | (uint64_t(b) << 40) | (extent & ((uint64_t(1) << 40) - 1));
}

void StreamThread::on_read(uint64_t tag, int result) {
    unsigned slot_index = unsigned(tag >> 41);
    int b = int((tag >> 40) & 1);
    if (slot_index >= slots_.size()) return;
    Slot& s = *slots_[slot_index];
    Slot::Buffer& buf = s.buf[b];
    reads_.fetch_add(1, std::memory_order_relaxed);
    if (!s.used) {  // session removed while reading: the buffer is simply free now
        buf = Slot::Buffer{};
        return;
    }
    uint32_t expected = s.spec.source->extent(uint64_t(buf.extent)).length;
    if (result < 0 || uint32_t(result) != expected) {
        buf = Slot::Buffer{};
        s.playing = false;
        ++s.gen;
        s.error = result < 0 ? -result : EIO;
        s.state = int(SessionState::kFailed);
        // Seen by the failover controller ([0095] disk failure): errno first, then the count.
        last_read_error_.store(s.error, std::memory_order_relaxed);
        read_failures_.fetch_add(1, std::memory_order_release);
        return;
    }
    buf.state = BufState::kReady;
    if (s.waiting && s.playing) {
        s.waiting = false;
        schedule(s, slot_index);
    }
}

// Makes sure `extent` is in one of the slot's buffers without evicting `keep` (the extent being
// sent from, or the one read ahead). Returns true if it is ready now; otherwise a read is in
// flight and the session waits for it.
bool StreamThread::ensure_extent(Slot& s, unsigned slot_index, uint64_t extent, int64_t keep) {
    for (auto& b : s.buf)
        if (b.extent == int64_t(extent)) return b.state == BufState::kReady;
    int victim = -1;
    for (int i = 0; i < 2; ++i)
        if (s.buf[i].state != BufState::kReading && s.buf[i].extent != keep) victim = i;
    if (victim < 0) return false;  // retried when a read lands
    auto loc = s.spec.source->extent(extent);
    // The ring has one submission entry per buffer, so this cannot run out of entries.
    if (reader_->read(slot_index * 2 + unsigned(victim), loc.fd, loc.offset, loc.length,
                      read_tag(slot_index, victim, extent))) {
        s.buf[victim].extent = int64_t(extent);
        s.buf[victim].state = BufState::kReading;
    }
    return false;
}

// Sends (queues) the slot's next datagram if its extent is in memory. Returns false if the
// session has to wait for a read.
bool StreamThread::produce(Slot& s, unsigned slot_index, int64_t now) {
    const Source& src = *s.spec.source;
    const uint32_t esize = src.extent_size();
    uint64_t packet = pacer::first_packet_of(s.seg, s.j);
    uint64_t offset = packet * mpegts::kPacketSize;
    uint64_t extent = offset / esize;
    uint32_t within = uint32_t(offset % esize);

    if (!ensure_extent(s, slot_index, extent, int64_t(extent + 1))) {
        if (s.missed_extent != int64_t(extent)) {
            s.missed_extent = int64_t(extent);
            s.misses.fetch_add(1, std::memory_order_relaxed);
        }
        return false;
    }
    int b = s.buf[0].extent == int64_t(extent) ? 0 : 1;
    // Read ahead: the next extent must be in memory before its first datagram's send time.
    uint64_t extents = (s.asset_bytes + esize - 1) / esize;
    if (extent + 1 < extents) ensure_extent(s, slot_index, extent + 1, int64_t(extent));

    if (batch_->n == kBatch) flush();
    Batch& bt = *batch_;
    unsigned i = bt.n++;
    uint32_t len = uint32_t(std::min<uint64_t>(mpegts::kDatagramSize, s.asset_bytes - offset));
    int niov = 0;
    if (s.spec.rtp) {
        pacer::write_rtp_header(bt.rtp[i], pacer::rtp_seq(s.seg, s.j), pacer::rtp_timestamp(src, s.seg, s.j),
                                s.spec.ssrc);
        bt.iov[i][niov++] = {bt.rtp[i], pacer::kRtpHeaderSize};
    }
    bt.iov[i][niov++] = {reader_->buffer(slot_index * 2 + unsigned(b)) + within, len};
    msghdr& m = bt.msgs[i].msg_hdr;
    m = msghdr{};
    m.msg_name = &s.spec.destination;
    m.msg_namelen = sizeof s.spec.destination;
    m.msg_iov = bt.iov[i];
    m.msg_iovlen = size_t(niov);
    bt.slot[i] = slot_index;
    bt.due[i] = s.next_send_ns;  // lateness is judged when it is handed to the kernel (flush)

    s.datagrams.fetch_add(1, std::memory_order_relaxed);
    s.bytes.fetch_add(len, std::memory_order_relaxed);
    ++s.j;
    s.next_packet.store(pacer::first_packet_of(s.seg, s.j), std::memory_order_relaxed);
    if (s.j >= s.jcount) {
        s.playing = false;
        s.state = int(SessionState::kFinished);
        if (s.spec.rtp && s.spec.rtcp_port && rtcp_sock_ >= 0) {
            s.bye_pending = true;
            s.next_send_ns = now + kByeDelayNs;
            schedule(s, slot_index);
        }
        return true;
    }
    s.next_send_ns = pacer::send_time_ns(src, s.seg, s.j);
    return true;
}

bool StreamThread::permitted(int64_t now) const {
    int64_t permit = permit_until_.load(std::memory_order_acquire);
    return permit == INT64_MAX || now < permit - kPermitMarginNs;
}

void StreamThread::flush() {
    Batch& bt = *batch_;
    unsigned done = 0;
    int eagain_rounds = 0;
    int async_retries = 0;
    while (done < bt.n) {
        if (stop_.load(std::memory_order_relaxed)) break;  // shutting down: the rest need not go
        // The permit again, right before the send: the loop turn that produced this batch may
        // have begun long ago (a backlog, a stall). Out of permit, the batch waits here: the
        // controller renews the permit or lifts it (Primary_No_Secondary, standby) soon.
        if (!permitted(realtime_ns())) {
            permit_waits_.fetch_add(1, std::memory_order_relaxed);
            while (!permitted(realtime_ns()) && !stop_.load(std::memory_order_relaxed)) {
                timespec t{0, kPermitPollNs / 4};
                nanosleep(&t, nullptr);
            }
        }
        const int64_t sent_at = realtime_ns();
        int r = sendmmsg(sock_, bt.msgs + done, bt.n - done, 0);
        if (r > 0) {
            count_sent(done, unsigned(r), sent_at);
            done += unsigned(r);
            async_retries = 0;
            continue;
        }
        int e = errno;
        if (r < 0 && e == EINTR) continue;
        // Refused by the gate because the lease ran out between our check and the send (the CPU
        // was taken away): wait for the renewed permit above, then send it again.
        if (r < 0 && e == ENOBUFS && !permitted(realtime_ns())) continue;
        if (r < 0 && (e == EAGAIN || e == ENOBUFS) && eagain_rounds < 100) {
            // Socket buffer full (EAGAIN): wait for room rather than lose a datagram. ENOBUFS is
            // the device or the gate refusing it (a fence, a lease the controller is about to
            // renew or give up): the socket has room, so just give it a millisecond, 100 at most.
            if (e == EAGAIN) {
                pollfd p{sock_, POLLOUT, 0};
                poll(&p, 1, 1);
            } else {
                timespec ms{0, 1'000'000};
                nanosleep(&ms, nullptr);
            }
            ++eagain_rounds;
            continue;
        }
        // Under a permit the socket reports ICMP errors (another client's closed port): the first
        // send after one fails with it and sends nothing. Clear the queue and send that datagram
        // again (a few times: more errors can arrive meanwhile).
        bool async = e == ECONNREFUSED || e == EHOSTUNREACH || e == ENETUNREACH || e == EHOSTDOWN;
        if (r < 0 && async && async_retries < 4) {
            drain_error_queue();
            ++async_retries;
            continue;
        }
        // This datagram cannot be sent (no route, ...): count it against its session, go on.
        slots_[bt.slot[done]]->send_errors.fetch_add(1, std::memory_order_relaxed);
        ++done;
        async_retries = 0;
    }
    bt.n = 0;
}

// Lateness of datagrams [from, from + n) of the batch, handed to the kernel at sent_at.
void StreamThread::count_sent(unsigned from, unsigned n, int64_t sent_at) {
    const Batch& bt = *batch_;
    int64_t worst = 0;
    for (unsigned i = from; i < from + n; ++i) {
        int64_t late = sent_at - bt.due[i];
        if (late > options_.late_threshold_ns) slots_[bt.slot[i]]->late.fetch_add(1, std::memory_order_relaxed);
        worst = std::max(worst, late);
        int64_t us = late / 1000;
        size_t b = size_t(std::lower_bound(kLatenessBoundsUs.begin(), kLatenessBoundsUs.end(), us) - kLatenessBoundsUs.begin());
        lateness_[b].fetch_add(1, std::memory_order_relaxed);
    }
    if (worst > lateness_max_ns_.load(std::memory_order_relaxed))
        lateness_max_ns_.store(worst, std::memory_order_relaxed);
}

void StreamThread::drain_error_queue() {
    uint8_t buf[64];
    char ctl[512];
    for (int i = 0; i < 256; ++i) {  // bounded: the queue is bounded by the receive buffer anyway
        iovec iov{buf, sizeof buf};
        msghdr m{};
        m.msg_iov = &iov;
        m.msg_iovlen = 1;
        m.msg_control = ctl;
        m.msg_controllen = sizeof ctl;
        if (recvmsg(sock_, &m, MSG_ERRQUEUE | MSG_DONTWAIT) < 0) return;
    }
}

// RFC 3550 compound packet: an empty receiver report, then BYE for the session's SSRC.
void StreamThread::send_bye(const Slot& s) {
    uint8_t p[16] = {0x80, 201, 0, 1, 0, 0, 0, 0, 0x81, 203, 0, 1, 0, 0, 0, 0};
    for (int i = 0; i < 4; ++i) p[4 + i] = p[12 + i] = uint8_t(s.spec.ssrc >> (24 - 8 * i));
    sockaddr_in to = s.spec.destination;
    to.sin_port = htons(s.spec.rtcp_port);
    (void)sendto(rtcp_sock_, p, sizeof p, MSG_DONTWAIT, reinterpret_cast<sockaddr*>(&to), sizeof to);
}

void StreamThread::service(int64_t now) {
    while (!heap_.empty() && heap_.front().when <= now) {
        std::pop_heap(heap_.begin(), heap_.end(), std::greater<>());
        HeapEntry e = heap_.back();
        heap_.pop_back();
        Slot& s = *slots_[e.slot];
        if (s.used && s.bye_pending && s.gen == e.gen) {
            s.bye_pending = false;
            send_bye(s);
            continue;
        }
        if (!s.used || !s.playing || s.gen != e.gen) continue;
        // Send everything of this session that is due (several datagrams after a stall).
        while (s.playing && s.next_send_ns <= now) {
            if (!produce(s, e.slot, now)) {
                s.waiting = true;
                break;
            }
        }
        if (s.playing && !s.waiting) schedule(s, e.slot);
    }
    flush();
}

void StreamThread::run() {
    auto on_done = [this](const uring::ExtentReader::Completion& c) { on_read(c.tag, c.result); };
    while (!stop_.load(std::memory_order_relaxed)) {
        loops_.fetch_add(1, std::memory_order_relaxed);
        handle_commands();
        int64_t now = realtime_ns();
        bool may_send = permitted(now);
        bool due = !heap_.empty() && heap_.front().when <= now;
        if (!held_ && may_send) service(now);
        // Count each wait for a permit once, not every turn of it.
        bool waiting = !held_ && !may_send && due;
        if (waiting && !permit_waiting_.load(std::memory_order_relaxed))
            permit_waits_.fetch_add(1, std::memory_order_relaxed);
        permit_waiting_.store(waiting, std::memory_order_release);
        int64_t wait = kMaxSleepNs;
        if (!heap_.empty() && !held_) {
            wait = std::clamp<int64_t>(heap_.front().when + options_.batch_window_ns - realtime_ns(), 0, kMaxSleepNs);
            // Out of permit with datagrams due: set_send_permit() wakes us; sleep in short steps
            // anyway, because its wake can race with the flag above.
            if (waiting) wait = kPermitPollNs;
        }
        auto r = reader_->wait(wait, on_done);
        if (!r) {
            // The ring itself failed: nothing can be read any more. Fail every session.
            for (auto& sp : slots_)
                if (sp->used && sp->playing) {
                    sp->playing = false;
                    sp->error = r.error().code;
                    sp->state = int(SessionState::kFailed);
                }
            poll(nullptr, 0, 100);  // do not spin on a broken ring; commands are still answered
        }
    }
    handle_commands();
}

}  // namespace of::streamer
