// fo-holder: runs libfo's userspace failover backend (of::fo::Holder) for kernels without
// failover.ko. Run it as its own service, beside oneframed, so that it outlives the processes
// it watches: see docs/libfo.md.
#include "libfo/holder.h"

#include <poll.h>
#include <signal.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

int main(int argc, char** argv) {
    of::fo::HolderOptions opts;
    for (int i = 1; i < argc; ++i) {
        std::string a = argv[i];
        if (a == "--socket" && i + 1 < argc) {
            opts.socket_path = argv[++i];
        } else if (a == "--mode" && i + 1 < argc) {
            opts.socket_mode = unsigned(std::strtoul(argv[++i], nullptr, 8)) & 0777;
        } else if (a == "-h" || a == "--help") {
            std::printf("usage: fo-holder [--socket PATH] [--mode OCTAL]\n"
                        "Holds the failover state for libfo's userspace backend (default socket %s).\n",
                        opts.socket_path.c_str());
            return 0;
        } else {
            std::fprintf(stderr, "fo-holder: unknown argument %s (try --help)\n", a.c_str());
            return 2;
        }
    }
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigprocmask(SIG_BLOCK, &set, nullptr);
    int sfd = signalfd(-1, &set, SFD_CLOEXEC);
    if (sfd < 0) {
        std::perror("fo-holder: signalfd");
        return 1;
    }
    auto h = of::fo::Holder::create(opts);
    if (!h) {
        std::fprintf(stderr, "fo-holder: %s\n", h.error().message.c_str());
        return 1;
    }
    for (;;) {
        pollfd p[2] = {{(*h)->fd(), POLLIN, 0}, {sfd, POLLIN, 0}};
        if (poll(p, 2, -1) < 0) continue;
        if (p[1].revents) break;  // SIGTERM / SIGINT: the socket file is removed on the way out
        auto r = (*h)->dispatch(0);
        if (!r) {
            std::fprintf(stderr, "fo-holder: %s\n", r.error().message.c_str());
            return 1;
        }
    }
    return 0;
}
