// The VM test binary's entry point: the libfo suite (tests/unit/libfo_test.cpp built with
// OF_LIBFO_VM against the kernel backend), plus helper modes that tests/vm/init needs.
//   libfo-vm-test [gtest flags]     run the suite
//   libfo-vm-test --hold FILE       register for notifications, write FILE, wait to be killed
#include "libfo/libfo.h"

#include <gtest/gtest.h>

#include <fcntl.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>

int main(int argc, char** argv) {
    if (argc == 3 && std::strcmp(argv[1], "--hold") == 0) {
        auto b = of::fo::open_kernel_backend();
        if (!b) {
            std::fprintf(stderr, "hold: %s\n", b.error().message.c_str());
            return 1;
        }
        auto r = (*b)->register_notify([](const of::fo::Change&) {});
        if (!r) {
            std::fprintf(stderr, "hold: %s\n", r.error().message.c_str());
            return 1;
        }
        int fd = ::open(argv[2], O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        if (fd < 0) return 1;
        ::close(fd);
        for (;;) pause();
    }
    ::testing::InitGoogleTest(&argc, argv);
    return RUN_ALL_TESTS();
}
