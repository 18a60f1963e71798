// fo-floor: what this host allows any streamer, measured beside oneframe by tools/bench.
//   send  the CPU one UDP datagram costs the kernel: RTP-sized datagrams (12 + 1316 bytes) as fast
//         as one thread can, in sendmmsg batches from one unconnected socket to N destination
//         ports; CPU = getrusage of this thread (user + system). Run from the server's namespace
//         it crosses the same interface, egress gate and counter as the streaming thread, so the
//         thread's CPU per datagram over this floor is what pacing, reads and wake-ups add.
//   wake  how late a sleeping real-time thread is: SCHED_FIFO, a 1 ns timer slack as the streaming
//         thread has, a "datagram" due every period; it sleeps until the next one is due and, on
//         waking, "sends" every one due by then, each late by (now - due). So a stall of S ms
//         makes S / period samples late, as it does to a stream's datagrams: the distribution is
//         comparable with a viewer's arrival jitter, which cannot be better than its sender's.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sched.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "common/clock.h"

namespace {

using of::monotonic_ns;

// wake ends early on SIGINT or SIGTERM and reports what it measured so far.
volatile std::sig_atomic_t g_stop = 0;
void on_stop(int) { g_stop = 1; }

double thread_cpu_s() {
    rusage r{};
    getrusage(RUSAGE_THREAD, &r);
    return double(r.ru_utime.tv_sec + r.ru_stime.tv_sec) + double(r.ru_utime.tv_usec + r.ru_stime.tv_usec) / 1e6;
}

struct SendOptions {
    std::string to;
    unsigned ports = 100, batch = 64, size = 1328;
    unsigned base_port = 30000;
    double seconds = 3;
};

int run_send(const SendOptions& o, bool json) {
    if (o.base_port + 2ull * (o.ports - 1) > 65535) {
        std::fprintf(stderr, "fo-floor send: --base-port %u + 2 x (--ports %u - 1) passes port 65535\n", o.base_port,
                     o.ports);
        return 2;
    }
    in_addr ip{};
    if (inet_pton(AF_INET, o.to.c_str(), &ip) != 1) {
        std::fprintf(stderr, "fo-floor send: --to %s is not an IPv4 address\n", o.to.c_str());
        return 2;
    }
    int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (s < 0) {
        std::fprintf(stderr, "fo-floor send: socket: %s\n", std::strerror(errno));
        return 2;
    }
    int sndbuf = 4 << 20;  // as the streaming thread's socket
    if (setsockopt(s, SOL_SOCKET, SO_SNDBUFFORCE, &sndbuf, sizeof sndbuf) < 0)
        (void)setsockopt(s, SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof sndbuf);

    std::vector<sockaddr_in> dst(o.ports);
    for (unsigned i = 0; i < o.ports; ++i) {
        dst[i].sin_family = AF_INET;
        dst[i].sin_addr = ip;
        dst[i].sin_port = htons(uint16_t(o.base_port + 2 * i));
    }
    std::vector<uint8_t> payload(o.size, 0x47);
    std::vector<mmsghdr> msgs(o.batch);
    std::vector<iovec> iov(o.batch);
    unsigned next = 0;
    uint64_t sent = 0, errors = 0;
    int last_error = 0;
    const int64_t w0 = monotonic_ns(), end = w0 + int64_t(o.seconds * 1e9);
    const double c0 = thread_cpu_s();
    while (monotonic_ns() < end) {
        for (unsigned i = 0; i < o.batch; ++i) {
            iov[i] = {payload.data(), payload.size()};
            msgs[i] = mmsghdr{};
            msgs[i].msg_hdr.msg_name = &dst[next];
            msgs[i].msg_hdr.msg_namelen = sizeof dst[next];
            msgs[i].msg_hdr.msg_iov = &iov[i];
            msgs[i].msg_hdr.msg_iovlen = 1;
            next = next + 1 == o.ports ? 0 : next + 1;
        }
        int r = sendmmsg(s, msgs.data(), o.batch, 0);
        if (r > 0) {
            sent += unsigned(r);
        } else if (r < 0 && errno != EINTR) {
            ++errors;  // ENOBUFS and the like: counted; the figure is CPU per datagram sent
            last_error = errno;
            if (errors > 1000 && sent == 0) break;
        }
    }
    const double cpu = thread_cpu_s() - c0, wall = double(monotonic_ns() - w0) / 1e9;
    close(s);
    if (sent == 0) {
        std::fprintf(stderr, "fo-floor send: nothing sent (%s)\n", std::strerror(last_error));
        return 1;
    }
    const double us = cpu * 1e6 / double(sent);
    if (json)
        std::printf("{\"datagrams\":%llu,\"errors\":%llu,\"wall_s\":%.3f,\"cpu_s\":%.3f,\"us_per_datagram\":%.3f,"
                    "\"datagrams_per_cpu_s\":%.0f,\"bytes\":%u,\"batch\":%u,\"ports\":%u}\n",
                    (unsigned long long)sent, (unsigned long long)errors, wall, cpu, us, double(sent) / cpu, o.size,
                    o.batch, o.ports);
    else
        std::printf("%llu datagrams in %.2f s, %.2f CPU-s: %.2f us of CPU each (%.0f k per CPU-second), %llu errors\n",
                    (unsigned long long)sent, wall, cpu, us, double(sent) / cpu / 1e3, (unsigned long long)errors);
    return 0;
}

struct WakeOptions {
    unsigned period_us = 1000;
    double seconds = 8;
    int rt_priority = 40;
    double stall_ms = 0;  // > 0: list every wake-up later than this, with when it happened
};

constexpr size_t kMaxStalls = 4096;  // listed at most; the count goes on

int run_wake(const WakeOptions& o, bool json) {
    if (o.rt_priority > 0) {
        sched_param sp{};
        sp.sched_priority = o.rt_priority;
        if (int rc = pthread_setschedparam(pthread_self(), SCHED_FIFO, &sp); rc != 0) {
            std::fprintf(stderr, "fo-floor wake: SCHED_FIFO priority %d: %s\n", o.rt_priority, std::strerror(rc));
            return 2;
        }
    }
    prctl(PR_SET_TIMERSLACK, 1UL);
    const int64_t period = int64_t(o.period_us) * 1000;
    const size_t n = size_t(o.seconds * 1e9 / double(period));
    std::vector<int64_t> late;
    late.reserve(n);
    struct Stall {
        int64_t at_ns, late_ns;  // CLOCK_REALTIME of the late wake-up, and how late it was
    };
    std::vector<Stall> stalls;
    size_t stall_count = 0;
    const int64_t stall_ns = int64_t(o.stall_ms * 1e6);
    struct sigaction sa {};
    sa.sa_handler = on_stop;
    sigaction(SIGINT, &sa, nullptr);
    sigaction(SIGTERM, &sa, nullptr);
    int64_t due = monotonic_ns() + period;
    size_t wakes = 0;
    while (late.size() < n && !g_stop) {
        timespec ts = of::ns_to_timespec(due);
        while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, nullptr) == EINTR) {
        }
        ++wakes;
        const int64_t now = monotonic_ns();
        if (stall_ns > 0 && now - due > stall_ns) {
            ++stall_count;
            if (stalls.size() < kMaxStalls) stalls.push_back({of::realtime_ns(), now - due});
        }
        for (; due <= now && late.size() < n; due += period) late.push_back(now - due);
    }
    if (late.empty()) {
        std::fprintf(stderr, "fo-floor wake: no samples (--seconds shorter than --period-us)\n");
        return 2;
    }
    std::vector<int64_t> v = late;
    std::sort(v.begin(), v.end());
    auto q = [&](double p) { return double(v[size_t(p * double(v.size() - 1) + 0.5)]) / 1e6; };
    size_t over = size_t(std::count_if(v.begin(), v.end(), [](int64_t x) { return x > 1'000'000; }));
    double over_pct = 100.0 * double(over) / double(v.size());
    if (json) {
        std::printf("{\"samples\":%zu,\"wakes\":%zu,\"period_us\":%u,\"rt_priority\":%d,\"p50_ms\":%.4f,"
                    "\"p99_ms\":%.4f,\"p999_ms\":%.4f,\"max_ms\":%.4f,\"over_1ms_pct\":%.4f",
                    v.size(), wakes, o.period_us, o.rt_priority, q(0.5), q(0.99), q(0.999), q(1.0), over_pct);
        if (stall_ns > 0) {
            std::printf(",\"stall_over_ms\":%.3f,\"stall_count\":%zu,\"stalls\":[", o.stall_ms, stall_count);
            for (size_t i = 0; i < stalls.size(); ++i)
                std::printf("%s{\"at_ns\":%lld,\"ms\":%.3f}", i ? "," : "", (long long)stalls[i].at_ns,
                            double(stalls[i].late_ns) / 1e6);
            std::printf("]");
        }
        std::printf("}\n");
    } else {
        std::printf("%zu due every %u us (%zu wakes): late p50 %.3f ms, p99 %.3f ms, p99.9 %.3f ms, max %.3f ms; "
                    "%.3f %% over 1 ms\n",
                    v.size(), o.period_us, wakes, q(0.5), q(0.99), q(0.999), q(1.0), over_pct);
        if (stall_ns > 0) {
            std::printf("%zu wake-ups later than %.3f ms\n", stall_count, o.stall_ms);
            for (auto& st : stalls) std::printf("  at %lld ns: %.3f ms late\n", (long long)st.at_ns, double(st.late_ns) / 1e6);
        }
    }
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    CLI::App app{"fo-floor: what this host allows any streamer (CPU per datagram sent; real-time wake-up lateness)"};
    app.require_subcommand(1);
    bool json = false;
    app.add_flag("--json", json, "one JSON object on stdout");

    SendOptions so;
    auto* send = app.add_subcommand("send", "unpaced sendmmsg of RTP-sized datagrams: CPU per datagram");
    send->add_option("--to", so.to, "destination IPv4 address")->required();
    send->add_option("--ports", so.ports, "destinations: ports BASE, BASE+2, ... (one per simulated session)")
        ->check(CLI::Range(1u, 10000u))
        ->capture_default_str();
    send->add_option("--base-port", so.base_port, "first destination port")
        ->check(CLI::Range(1u, 65535u))
        ->capture_default_str();
    send->add_option("--seconds", so.seconds, "how long to send")->check(CLI::Range(0.5, 60.0))->capture_default_str();
    send->add_option("--batch", so.batch, "datagrams per sendmmsg")->check(CLI::Range(1u, 1024u))->capture_default_str();
    send->add_option("--size", so.size, "UDP payload bytes (RTP header + 7 TS packets = 1328)")
        ->check(CLI::Range(1u, 65000u))
        ->capture_default_str();

    WakeOptions wo;
    auto* wake = app.add_subcommand("wake", "how late a sleeping SCHED_FIFO thread sends something due every period");
    wake->add_option("--period-us", wo.period_us, "one due time every this many microseconds")
        ->check(CLI::Range(100u, 100000u))
        ->capture_default_str();
    wake->add_option("--seconds", wo.seconds, "how long to measure (SIGINT or SIGTERM ends it early, reporting)")->check(CLI::Range(0.5, 900.0))->capture_default_str();
    wake->add_option("--stalls-over-ms", wo.stall_ms,
                     "also list every wake-up later than this (CLOCK_REALTIME at_ns and ms), to match a viewer's gaps\n"
                     "against the host's stalls at the same moment (at most 4096 listed)")
        ->check(CLI::Range(0.0, 10000.0));
    wake->add_option("--rt-priority", wo.rt_priority, "SCHED_FIFO priority (0: normal scheduling)")
        ->check(CLI::Range(0, 99))
        ->capture_default_str();

    CLI11_PARSE(app, argc, argv);
    if (*send) return run_send(so, json);
    return run_wake(wo, json);
}
