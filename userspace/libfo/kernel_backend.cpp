// The kernel backend: ioctls on /dev/failover (kmod/failover.c).
#include "libfo/libfo.h"
#include "libfo/status_conv.h"

#include <fcntl.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <cerrno>

namespace of::fo {
namespace {

class KernelBackend final : public Backend {
public:
    explicit KernelBackend(int fd) : fd_(fd) {}
    // Closing while registered critical is a critical death, by design (kmod/failover.c).
    ~KernelBackend() override { ::close(fd_); }

    BackendKind kind() const override { return BackendKind::Kernel; }

    of::Result<Status> status() override {
        fo_status st{};
        if (::ioctl(fd_, FO_IOC_GET_STATUS, &st) != 0) return errno_error("FO_IOC_GET_STATUS");
        return from_uapi(st);
    }

    of::Status set_message(const FailoverMessage& m) override {
        auto u = to_uapi(m);
        if (!u) return u.error();
        if (::ioctl(fd_, FO_IOC_SET_MESSAGE, &u.value()) != 0) return errno_error("FO_IOC_SET_MESSAGE");
        return {};
    }

    of::Status clear_message() override {
        fo_message u{};
        if (::ioctl(fd_, FO_IOC_SET_MESSAGE, &u) != 0) return errno_error("FO_IOC_SET_MESSAGE (clear)");
        return {};
    }

protected:
    of::Status do_transition(const fo_transition& t) override {
        if (::ioctl(fd_, FO_IOC_SET_STATE, &t) != 0) return ioctl_error("FO_IOC_SET_STATE");
        return {};
    }
    of::Status do_register(const fo_registration& r) override {
        if (::ioctl(fd_, FO_IOC_REGISTER, &r) != 0) return ioctl_error("FO_IOC_REGISTER");
        return {};
    }
    of::Status do_unregister() override {
        if (::ioctl(fd_, FO_IOC_UNREGISTER) != 0) return ioctl_error("FO_IOC_UNREGISTER");
        return {};
    }
    pid_t notifier_pid() const override { return 0; }

private:
    static Error ioctl_error(const char* what) {
        int e = errno;
        return make_error(e, std::string(what) + ": " + errno_meaning(e));
    }
    int fd_;
};

}  // namespace

of::Result<std::unique_ptr<Backend>> open_kernel_backend(const std::string& device) {
    int fd = ::open(device.c_str(), O_RDWR | O_CLOEXEC);
    if (fd < 0) return errno_error("open " + device + " (is failover.ko loaded?)");
    fo_status st{};
    if (::ioctl(fd, FO_IOC_GET_STATUS, &st) != 0) {
        auto e = errno_error(device + ": FO_IOC_GET_STATUS");
        ::close(fd);
        return e;
    }
    if (st.version != FO_API_VERSION) {
        ::close(fd);
        return make_error(EPROTO, device + ": module API version " + std::to_string(st.version) +
                                      ", libfo speaks " + std::to_string(FO_API_VERSION));
    }
    return std::unique_ptr<Backend>(new KernelBackend(fd));
}

}  // namespace of::fo
