// fo-verify: the verifying client. Plays an RTSP stream (or listens on a UDP port) and reports what
// a viewer got: lost, duplicated and reordered RTP packets, TR 101 290 continuity errors per PID, the
// largest gaps between datagrams, arrival jitter against the PCR schedule, and optionally whether
// every packet of the source file arrived in order. Exit 0 clean (or not checked), 1 errors found
// with --fail-on-loss, 2 usage or connection errors.
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <csignal>
#include <cstdio>
#include <cstring>
#include <string>

#include <CLI/CLI.hpp>

#include "verify/analyzer.h"
#include "verify/report.h"
#include "verify/session.h"

namespace {

volatile std::sig_atomic_t g_stop = 0;
void on_signal(int) { g_stop = 1; }

bool g_json = false;

// Usage, connection and RTSP errors: exit 2; with --json also one object on stdout, so that a
// script parsing the output always gets JSON.
int fail(const std::string& msg) {
    std::fprintf(stderr, "fo-verify: %s\n", msg.c_str());
    if (g_json) std::printf("{\"ok\":false,\"error\":%s}\n", of::verify::json_quote(msg).c_str());
    return 2;
}

// A read-only mapping of the --compare file.
struct Mapped {
    const uint8_t* data = nullptr;
    size_t size = 0;
    ~Mapped() {
        if (data) munmap(const_cast<uint8_t*>(data), size);
    }
};

}  // namespace

int main(int argc, char** argv) {
    CLI::App app{
        "fo-verify: play an RTSP stream (or listen on a UDP port) and report what arrived: RTP loss,\n"
        "duplicates and reordering, MPEG-TS continuity errors per PID (TR 101 290 1.4), the largest\n"
        "gaps between datagrams, arrival jitter against the PCR schedule, and, with --compare, whether\n"
        "every packet of the source file arrived once, in order.\n\n"
        "Examples:\n"
        "  fo-verify rtsp://10.77.0.1:554/movie.ts --duration 20\n"
        "  fo-verify rtsp://10.77.0.1:554/movie.ts --transport raw --start 30 --json\n"
        "  fo-verify --listen 5000 --compare movie.ts --fail-on-loss\n\n"
        "Exit status: 0 done (clean, or not checked), 1 errors found with --fail-on-loss,\n"
        "2 usage, connection or RTSP errors."};
    app.get_formatter()->column_width(34);

    std::string url_s, transport_s = "rtp", mode_s = "auto", compare_path, save_path;
    std::optional<uint16_t> listen;
    std::optional<double> start;
    double duration = 0, idle = 3, wait_first = 10, keepalive = 0;
    uint64_t packets = 0;
    uint16_t client_port = 0;
    int timeout_ms = 5000;
    std::optional<uint16_t> pcr_pid;
    size_t top_gaps = 5;
    bool json = false, fail_on_loss = false, verbose = false, reconnect = false;

    app.add_option("url", url_s, "RTSP URL: rtsp://HOST[:PORT]/ASSET");
    auto* listen_opt = app.add_option("--listen", listen, "No RTSP: receive on this UDP port (0: any) and analyse")
                           ->check(CLI::Range(0, 65535));
    app.add_option("--transport", transport_s, "rtp: RTP/AVP (MP2T in RTP); raw: RAW/RAW/UDP (bare MP2T)")
        ->check(CLI::IsMember({"rtp", "raw"}))
        ->capture_default_str();
    app.add_option("--mode", mode_s, "With --listen: what the datagrams are (auto: decided by the first)")
        ->check(CLI::IsMember({"auto", "rtp", "raw"}))
        ->capture_default_str();
    app.add_option("--start", start, "PLAY from this NPT in seconds (Range: npt=S-)")->check(CLI::Range(0.0, 1e7));
    app.add_option("--duration", duration, "Stop after this many seconds (0: no limit)")
        ->check(CLI::Range(0.0, 1e7))
        ->capture_default_str();
    app.add_option("--packets", packets, "Stop after this many datagrams (0: no limit)")->capture_default_str();
    app.add_option("--idle-timeout", idle, "The stream has ended when nothing arrived for this many seconds")
        ->check(CLI::Range(0.05, 3600.0))
        ->capture_default_str();
    app.add_option("--wait-first", wait_first, "Give up if the first datagram has not arrived after this many seconds")
        ->check(CLI::Range(0.05, 3600.0))
        ->capture_default_str();
    app.add_option("--client-port", client_port, "Local even UDP port for RTP (RTCP on the next; 0: any free pair)")
        ->check(CLI::Range(0, 65534))
        ->capture_default_str();
    app.add_option("--keepalive", keepalive, "Seconds between RTSP keepalives (0: half the Session timeout)")
        ->check(CLI::Range(0.0, 3600.0))
        ->capture_default_str();
    app.add_flag("--reconnect", reconnect,
                 "Open the RTSP control connection again if the server closes it (counted, and still a\n"
                 "failure for --fail-on-loss); by default a closed or reset connection ends the control");
    app.add_option("--timeout", timeout_ms, "Milliseconds to wait for each RTSP connect and response")
        ->check(CLI::Range(50, 600000))
        ->capture_default_str();
    app.add_option("--pcr-pid", pcr_pid, "PID whose PCRs give the schedule (default: the first PID carrying a PCR)")
        ->check(CLI::Range(0, 8190));
    app.add_option("--top-gaps", top_gaps, "Report this many of the largest gaps between datagrams (timing.top_gaps)")
        ->check(CLI::Range(0, 64))
        ->capture_default_str();
    app.add_option("--compare", compare_path, "Source .ts file: check that every received TS packet is the next one in it")
        ->check(CLI::ExistingFile);
    app.add_option("--save", save_path, "Write the received TS packets to this file");
    app.add_flag("--json", json, "Print the report as one JSON object (fields: docs/fo-verify.md)");
    app.add_flag("--fail-on-loss", fail_on_loss,
                 "Exit 1 if anything was lost, duplicated, reordered, altered, failed the CC check or the compare,\n"
                 "if nothing arrived, or if the RTSP control connection did not last to an answered TEARDOWN");
    app.add_flag("-v,--verbose", verbose, "Print the RTSP exchange and events to stderr");

    try {
        app.parse(argc, argv);
    } catch (const CLI::ParseError& e) {
        int rc = app.exit(e);
        return rc == 0 ? 0 : 2;
    }
    g_json = json;
    if (url_s.empty() == !listen_opt->count())
        return fail("give either an RTSP URL or --listen PORT (see --help)");

    of::verify::RunOptions ro;
    if (!url_s.empty()) {
        auto u = of::verify::parse_url(url_s);
        if (!u) return fail(u.error().message);
        ro.url = *u;
    } else {
        ro.listen_port = *listen;
    }
    ro.transport = transport_s == "raw" ? of::verify::Transport::Raw : of::verify::Transport::Rtp;
    ro.start_npt = start;
    ro.duration_s = duration;
    ro.max_datagrams = packets;
    ro.idle_timeout_s = idle;
    ro.first_timeout_s = wait_first;
    ro.client_port = client_port;
    ro.keepalive_s = keepalive;
    ro.reconnect = reconnect;
    ro.rtsp.connect_timeout_ms = timeout_ms;
    ro.rtsp.response_timeout_ms = timeout_ms;
    ro.stop = &g_stop;
    if (verbose) ro.on_event = [](std::string_view e) { std::fprintf(stderr, "fo-verify: %.*s\n", int(e.size()), e.data()); };

    of::verify::Options ao;
    if (ro.url) ao.mode = ro.transport == of::verify::Transport::Raw ? of::verify::Mode::Raw : of::verify::Mode::Rtp;
    else ao.mode = mode_s == "rtp" ? of::verify::Mode::Rtp : mode_s == "raw" ? of::verify::Mode::Raw : of::verify::Mode::Auto;
    ao.pcr_pid = pcr_pid;
    ao.top_gaps = top_gaps;
    of::verify::Analyzer an(ao);

    Mapped src;
    if (!compare_path.empty()) {
        int fd = open(compare_path.c_str(), O_RDONLY | O_CLOEXEC);
        if (fd < 0) return fail("open " + compare_path + ": " + std::strerror(errno));
        struct stat st {};
        fstat(fd, &st);
        if (st.st_size < 188) {
            close(fd);
            return fail(compare_path + " holds no whole 188-byte TS packet");
        }
        void* p = mmap(nullptr, size_t(st.st_size), PROT_READ, MAP_PRIVATE, fd, 0);
        close(fd);
        if (p == MAP_FAILED) return fail("mmap " + compare_path + ": " + std::strerror(errno));
        src.data = static_cast<const uint8_t*>(p);
        src.size = size_t(st.st_size);
        if (auto s = an.set_source({src.data, src.size}); !s) return fail(s.error().message);
    }

    FILE* save = nullptr;
    bool save_failed = false;
    if (!save_path.empty()) {
        save = std::fopen(save_path.c_str(), "wb");
        if (!save) return fail("open " + save_path + ": " + std::strerror(errno));
        ro.on_payload = [&](std::span<const uint8_t> p) {
            if (!save_failed && std::fwrite(p.data(), 1, p.size(), save) != p.size()) save_failed = true;
        };
    }

    struct sigaction sa {};
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, nullptr);
    sigaction(SIGTERM, &sa, nullptr);

    auto info = of::verify::run(ro, an);
    if (save && std::fclose(save) != 0) save_failed = true;
    if (!info) return fail(info.error().message);
    if (save_failed) return fail("writing " + save_path + " failed");

    auto report = an.report();
    std::string out = json ? of::verify::to_json(report, *info) : of::verify::to_text(report, *info);
    std::fwrite(out.data(), 1, out.size(), stdout);
    std::fflush(stdout);
    if (fail_on_loss && (report.has_errors() || report.datagrams == 0 || !of::verify::control_ok(*info))) return 1;
    return 0;
}
