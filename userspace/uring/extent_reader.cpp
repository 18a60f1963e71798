#include "uring/extent_reader.h"

#include <sys/eventfd.h>
#include <sys/mman.h>
#include <unistd.h>

#include <memory>
#include <vector>

namespace of::uring {
namespace {
constexpr uint64_t kWakeTag = ~uint64_t(0);
constexpr unsigned kMaxBuffers = 16384;  // IORING_MAX_REG_BUFFERS
}  // namespace

Result<ExtentReader*> ExtentReader::create(unsigned buffers, uint32_t buffer_size) {
    if (buffers == 0 || buffers > kMaxBuffers || buffer_size == 0)
        return make_error(EINVAL, "extent reader: need 1.." + std::to_string(kMaxBuffers) + " buffers of >0 bytes");
    std::unique_ptr<ExtentReader> r(new ExtentReader());
    r->buffers_ = buffers;
    r->buffer_size_ = buffer_size;
    r->arena_bytes_ = size_t(buffers) * buffer_size;
    void* p = mmap(nullptr, r->arena_bytes_, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) return errno_error("extent reader: mmap " + std::to_string(r->arena_bytes_) + " bytes");
    r->arena_ = static_cast<uint8_t*>(p);

    // Room for one read per buffer plus the wake-up read.
    unsigned entries = 64;
    while (entries < buffers + 1 && entries < 32768) entries *= 2;
    if (int rc = io_uring_queue_init(entries, &r->ring_, 0); rc < 0) return errno_error("io_uring_queue_init", -rc);
    r->ring_ok_ = true;

    std::vector<iovec> iov(buffers);
    for (unsigned i = 0; i < buffers; ++i) iov[i] = {r->buffer(i), buffer_size};
    if (int rc = io_uring_register_buffers(&r->ring_, iov.data(), buffers); rc < 0)
        return errno_error("io_uring_register_buffers (" + std::to_string(r->arena_bytes_) + " bytes)", -rc);

    r->event_fd_ = eventfd(0, EFD_CLOEXEC);  // blocking: io_uring arms a poll for the read
    if (r->event_fd_ < 0) return errno_error("eventfd");
    if (auto s = r->arm_wakeup(); !s) return s.error();
    return r.release();
}

ExtentReader::~ExtentReader() {
    if (ring_ok_) io_uring_queue_exit(&ring_);
    if (event_fd_ >= 0) close(event_fd_);
    if (arena_) munmap(arena_, arena_bytes_);
}

Status ExtentReader::arm_wakeup() {
    io_uring_sqe* sqe = io_uring_get_sqe(&ring_);
    if (!sqe) {
        io_uring_submit(&ring_);
        sqe = io_uring_get_sqe(&ring_);
        if (!sqe) return make_error(EBUSY, "extent reader: submission queue full");
    }
    io_uring_prep_read(sqe, event_fd_, &event_buf_, sizeof event_buf_, 0);
    io_uring_sqe_set_data64(sqe, kWakeTag);
    ++queued_;
    return {};
}

Status ExtentReader::read(unsigned index, int fd, uint64_t offset, uint32_t length, uint64_t tag) {
    if (index >= buffers_ || length > buffer_size_ || tag == kWakeTag)
        return make_error(EINVAL, "extent reader: bad buffer index, length or tag");
    io_uring_sqe* sqe = io_uring_get_sqe(&ring_);
    if (!sqe) {
        io_uring_submit(&ring_);
        queued_ = 0;
        sqe = io_uring_get_sqe(&ring_);
        if (!sqe) return make_error(EBUSY, "extent reader: submission queue full");
    }
    io_uring_prep_read_fixed(sqe, fd, buffer(index), length, offset, int(index));
    io_uring_sqe_set_data64(sqe, tag);
    ++queued_;
    return {};
}

Result<unsigned> ExtentReader::wait(int64_t timeout_ns, const std::function<void(const Completion&)>& done) {
    io_uring_cqe* cqe = nullptr;
    int rc;
    if (timeout_ns < 0) {
        rc = io_uring_submit(&ring_);
    } else {
        __kernel_timespec ts{timeout_ns / 1'000'000'000, timeout_ns % 1'000'000'000};
        rc = io_uring_submit_and_wait_timeout(&ring_, &cqe, 1, &ts, nullptr);
        if (rc == -ETIME || rc == -EINTR) rc = 0;
    }
    if (rc < 0) return errno_error("io_uring submit", -rc);
    queued_ = 0;

    unsigned handled = 0, head, seen = 0;
    bool rearm = false;
    io_uring_for_each_cqe(&ring_, head, cqe) {
        ++seen;
        uint64_t tag = io_uring_cqe_get_data64(cqe);
        if (tag == kWakeTag) {
            rearm = true;
            continue;
        }
        done(Completion{tag, cqe->res});
        ++handled;
    }
    io_uring_cq_advance(&ring_, seen);
    if (rearm)
        if (auto s = arm_wakeup(); !s) return s.error();
    return handled;
}

void ExtentReader::wake() {
    uint64_t one = 1;
    // Only an overflowing counter could fail, and then a wake-up is pending anyway.
    ssize_t n = ::write(event_fd_, &one, sizeof one);
    (void)n;
}

}  // namespace of::uring
