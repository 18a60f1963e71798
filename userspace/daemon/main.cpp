// oneframed: the oneframe streaming daemon. See README.md and docs/architecture.md.
#include <CLI/CLI.hpp>

#include <pthread.h>
#include <signal.h>

#include <cstdio>
#include <iostream>

#include "common/config.h"
#include "daemon/daemon.h"
#include "daemon/log.h"
#include "libfo/libfo.h"

int main(int argc, char** argv) {
    CLI::App app{"oneframed: video-on-demand streaming server with single-frame failover.\n"
                 "Serves RTSP on the stream IP, paces MPEG-TS assets from io_uring extent reads, and\n"
                 "pairs with a mirror server (seed 004) behind an eBPF egress gate. Administered\n"
                 "with foctl over D-Bus.",
                 "oneframed"};
    std::string config_path = "/etc/oneframe/oneframed.conf";
    bool help_config = false, check = false;
    app.add_option("-c,--config", config_path, "Configuration file (docs/config.md)")->capture_default_str();
    app.add_flag("--help-config", help_config, "Print every configuration key with its default and exit");
    app.add_flag("--check-config", check, "Validate the configuration file and exit");
    app.set_version_flag("--version", ONEFRAME_VERSION);
    CLI11_PARSE(app, argc, argv);

    if (help_config) {
        for (auto& k : of::config_schema())
            printf("%-30s %-34s default %s\n    %s\n", k.key.c_str(), k.type.c_str(), k.default_value.c_str(),
                   k.help.c_str());
        return 0;
    }
    auto config = of::load_config(config_path);
    if (!config) {
        fprintf(stderr, "oneframed: %s\n", config.error().message.c_str());
        return 2;
    }
    if (check) {
        printf("%s: ok\n", config_path.c_str());
        return 0;
    }
    // SIGFAILOVER is read from a signalfd: it must be blocked before any thread exists.
    if (auto s = of::fo::block_signal(); !s) {
        fprintf(stderr, "oneframed: %s\n", s.error().message.c_str());
        return 1;
    }
    // So are SIGTERM and SIGINT (the event loop reads them): a thread started with them unblocked
    // would take the default action, and `systemctl stop` would kill the daemon instead of letting
    // it hand its viewers over.
    sigset_t stop;
    sigemptyset(&stop);
    sigaddset(&stop, SIGTERM);
    sigaddset(&stop, SIGINT);
    pthread_sigmask(SIG_BLOCK, &stop, nullptr);
    auto d = of::daemon::Daemon::create(*config);
    if (!d) {
        of::daemon::log(of::daemon::Level::kErr, "cannot start: " + d.error().message);
        return 1;
    }
    return (*d)->run();
}
