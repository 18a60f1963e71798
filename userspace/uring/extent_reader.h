// One io_uring per streaming thread, reading extents into registered (pinned) buffers.
//
// The arena holds `buffers` buffers of `buffer_size` bytes, registered once with the ring so
// each read is IORING_OP_READ_FIXED (no per-read page pinning). The ring also watches an eventfd
// so that another thread can wake the owner (wake()) while it waits for the next send time.
#pragma once

#include <liburing.h>

#include <cstdint>
#include <functional>

#include "common/result.h"

namespace of::uring {

class ExtentReader {
public:
    struct Completion {
        uint64_t tag;   // what the caller passed to read()
        int result;     // bytes read, or -errno
    };

    static Result<ExtentReader*> create(unsigned buffers, uint32_t buffer_size);
    ~ExtentReader();
    ExtentReader(const ExtentReader&) = delete;
    ExtentReader& operator=(const ExtentReader&) = delete;

    uint8_t* buffer(unsigned index) const { return arena_ + size_t(index) * buffer_size_; }
    unsigned buffer_count() const { return buffers_; }
    uint32_t buffer_size() const { return buffer_size_; }

    // Queues a read of `length` bytes at `offset` of `fd` into buffer `index`. Submitted at the
    // next wait(). Fails with EBUSY if the submission queue is full even after a submit.
    Status read(unsigned index, int fd, uint64_t offset, uint32_t length, uint64_t tag);

    // Submits queued reads and waits until a completion arrives, wake() is called, or
    // `timeout_ns` (relative, < 0 = do not wait) passes; calls `done` for every completion.
    // Returns the number of read completions handled, or an error from the ring.
    Result<unsigned> wait(int64_t timeout_ns, const std::function<void(const Completion&)>& done);

    // Thread-safe: makes a concurrent wait() return.
    void wake();

private:
    ExtentReader() = default;
    Status arm_wakeup();

    io_uring ring_{};
    bool ring_ok_ = false;
    int event_fd_ = -1;
    uint64_t event_buf_ = 0;
    uint8_t* arena_ = nullptr;
    size_t arena_bytes_ = 0;
    unsigned buffers_ = 0;
    uint32_t buffer_size_ = 0;
    unsigned queued_ = 0;
};

}  // namespace of::uring
