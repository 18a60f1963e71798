// Puts the whole unit-test process into a private network namespace (created on first use, with
// loopback up) so that tests exchange traffic only there; it disappears when the process exits.
#pragma once

#include <net/if.h>
#include <sched.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstring>
#include <string>

namespace of::test {

// Returns an empty string on success, else why it could not be done (for GTEST_SKIP / FAIL).
inline std::string enter_private_netns() {
    static std::string result = [] {
        if (unshare(CLONE_NEWNET) != 0) return std::string("unshare(CLONE_NEWNET): ") + strerror(errno);
        int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        if (fd < 0) return std::string("socket: ") + strerror(errno);
        ifreq ifr{};
        std::strncpy(ifr.ifr_name, "lo", IFNAMSIZ - 1);
        bool ok = ioctl(fd, SIOCGIFFLAGS, &ifr) == 0;
        ifr.ifr_flags |= IFF_UP;
        ok = ok && ioctl(fd, SIOCSIFFLAGS, &ifr) == 0;
        std::string err = ok ? "" : std::string("bring lo up: ") + strerror(errno);
        close(fd);
        return err;
    }();
    return result;
}

}  // namespace of::test
