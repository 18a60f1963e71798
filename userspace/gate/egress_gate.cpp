#include "gate/egress_gate.h"

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <fcntl.h>
#include <net/if_arp.h>
#include <linux/magic.h>
#include <net/if.h>
#include <sys/file.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <unistd.h>

#include <atomic>
#include <cstdarg>
#include <cstddef>
#include <cstdio>
#include <cstring>
#include <mutex>
#include <vector>

#include "common/clock.h"
#include "gate.skel.h"

namespace of::gate {
namespace {

// The layouts docs/gate-protocol.md publishes; a change here is an ABI change.
static_assert(sizeof(gate_ctl) == 48 && offsetof(gate_ctl, role) == 8 && offsetof(gate_ctl, lease_expiry_ns) == 16 &&
              offsetof(gate_ctl, generation) == 40);
static_assert(sizeof(gate_partner) == 16);
static_assert(sizeof(gate_flow_key) == 8 && offsetof(gate_flow_key, dport) == 4);
static_assert(sizeof(gate_flow_rule) == 8 && offsetof(gate_flow_rule, seq) == 4);
static_assert(sizeof(gate_seen) == 32 && offsetof(gate_seen, packets) == 8 && offsetof(gate_seen, last_ns) == 24);
static_assert(sizeof(gate_fence_token) == 28 && offsetof(gate_fence_token, token) == 12);
static_assert(GATE_COUNTER__COUNT <= GATE_COUNTER_SLOTS);

constexpr const char* kMapNames[] = {GATE_MAP_CTL, GATE_MAP_PARTNER, GATE_MAP_FLOWS, GATE_MAP_SEEN,
                                     GATE_MAP_COUNTERS, GATE_MAP_TCP_HELD, GATE_MAP_FENCE_TOKEN};
constexpr size_t kMaxLibbpfLog = 8192;

// libbpf prints to stderr by default; a library must not. While a Gate loads, libbpf's warnings
// (the verifier log among them) are collected and put into the returned Error instead. The print
// callback is process-global, hence the mutex; messages from other threads meanwhile are dropped.
std::mutex g_libbpf_mu;
thread_local std::string* t_libbpf_log = nullptr;

int collect_libbpf_print(enum libbpf_print_level level, const char* fmt, va_list ap) {
    if (level == LIBBPF_DEBUG || t_libbpf_log == nullptr || t_libbpf_log->size() >= kMaxLibbpfLog)
        return 0;
    char buf[1024];
    int n = vsnprintf(buf, sizeof(buf), fmt, ap);
    if (n > 0) t_libbpf_log->append(buf, std::min(size_t(n), sizeof(buf) - 1));
    return 0;
}

class LibbpfCapture {
public:
    LibbpfCapture() : lock_(g_libbpf_mu) {
        t_libbpf_log = &log_;
        old_ = libbpf_set_print(collect_libbpf_print);
    }
    ~LibbpfCapture() {
        libbpf_set_print(old_);
        t_libbpf_log = nullptr;
    }
    LibbpfCapture(const LibbpfCapture&) = delete;
    LibbpfCapture& operator=(const LibbpfCapture&) = delete;
    Error error(const std::string& what, int err) const {
        Error e = errno_error(what, err);
        if (!log_.empty()) e.message += "\nlibbpf: " + log_;
        return e;
    }

private:
    std::lock_guard<std::mutex> lock_;
    std::string log_;
    libbpf_print_fn_t old_ = nullptr;
};

struct Fd {
    int fd = -1;
    Fd() = default;
    explicit Fd(int f) : fd(f) {}
    Fd(Fd&& o) noexcept : fd(o.fd) { o.fd = -1; }
    Fd& operator=(Fd&& o) noexcept {
        if (this != &o) {
            if (fd >= 0) close(fd);
            fd = o.fd;
            o.fd = -1;
        }
        return *this;
    }
    ~Fd() {
        if (fd >= 0) close(fd);
    }
};

struct NetnsId {
    dev_t dev = 0;
    ino_t ino = 0;
    bool operator==(const NetnsId&) const = default;
};

Result<NetnsId> current_netns() {
    struct stat st{};
    if (stat("/proc/thread-self/ns/net", &st) != 0) return errno_error("stat /proc/thread-self/ns/net");
    return NetnsId{st.st_dev, st.st_ino};
}

Status validate_ifname(const std::string& ifname) {
    if (ifname.empty() || ifname.size() >= IFNAMSIZ || ifname == "." || ifname == ".." ||
        ifname.find_first_of("/ \t\n:") != std::string::npos)
        return make_error(EINVAL, "invalid interface name '" + ifname + "'");
    return {};
}

Status validate_pin_root(const std::string& root) {
    if (root.size() < 2 || root[0] != '/' || root.size() > 200 || root.find("/..") != std::string::npos ||
        root.find("/./") != std::string::npos || root.back() == '/')
        return make_error(EINVAL, "invalid pin root '" + root + "': need an absolute path without . or ..");
    return {};
}

Status validate_stream_ip(in_addr ip) {
    uint32_t h = ntohl(ip.s_addr);
    if (h == 0 || h == 0xffffffffu || (h >> 28) == 0xe || (h >> 24) == 127)
        return make_error(EINVAL, "stream IP must be a unicast, non-loopback IPv4 address");
    return {};
}

bool is_bpffs(const std::string& path) {
    struct statfs s{};
    return statfs(path.c_str(), &s) == 0 && s.f_type == BPF_FS_MAGIC;
}

// bpffs is not mounted at boot on every system: mount it on /sys/fs/bpf when the pin root lives
// there. Any other pin root must already be on bpffs.
Status ensure_bpffs(const std::string& pin_root) {
    std::string probe = pin_root;
    struct stat st{};
    while (stat(probe.c_str(), &st) != 0) {
        if (errno != ENOENT) return errno_error("stat " + probe);
        probe = probe.substr(0, probe.rfind('/'));
        if (probe.empty()) probe = "/";
    }
    if (is_bpffs(probe)) return {};
    const std::string fs = "/sys/fs/bpf";
    if (pin_root.rfind(fs + "/", 0) != 0)
        return make_error(ENOTSUP, "pin root " + pin_root + " is not on a bpf filesystem");
    if (!is_bpffs(fs)) {
        if (mount("bpf", fs.c_str(), "bpf", 0, "mode=0700") != 0 && errno != EBUSY)
            return errno_error("mount bpffs on " + fs);
        if (!is_bpffs(fs)) return make_error(ENOTSUP, fs + " is not a bpf filesystem and mounting one failed");
    }
    return {};
}

Status mkdir_p(const std::string& dir) {
    for (size_t pos = 1; pos <= dir.size(); ++pos) {
        if (pos != dir.size() && dir[pos] != '/') continue;
        std::string part = dir.substr(0, pos);
        if (mkdir(part.c_str(), 0700) != 0 && errno != EEXIST) return errno_error("mkdir " + part);
    }
    return {};
}

Result<Fd> lock_pin_dir(const std::string& dir) {
    Fd fd(open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (fd.fd < 0) return errno_error("open " + dir);
    // One owner per interface: a second daemon (or Gate) would fight over gate_ctl.
    if (flock(fd.fd, LOCK_EX | LOCK_NB) != 0) {
        if (errno == EWOULDBLOCK) return make_error(EBUSY, "another gate owns " + dir);
        return errno_error("flock " + dir);
    }
    return fd;
}

bool path_exists(const std::string& p) {
    struct stat st{};
    return lstat(p.c_str(), &st) == 0;
}

Status unlink_pins(const std::string& dir) {
    for (const char* name : kMapNames) {
        std::string p = dir + "/" + name;
        if (unlink(p.c_str()) != 0 && errno != ENOENT) return errno_error("unlink " + p);
    }
    return {};
}

// A pinned map is reusable when it is what this build would create, and gate_ctl carries our ABI
// version (or none yet: a daemon that died between creating and initialising it).
Status check_pin(const std::string& path, const bpf_map* expect, bool is_ctl) {
    Fd fd(bpf_obj_get(path.c_str()));
    if (fd.fd < 0) return errno_error("open pinned " + path);
    bpf_map_info info{};
    uint32_t len = sizeof(info);
    if (bpf_obj_get_info_by_fd(fd.fd, &info, &len) != 0) return errno_error("inspect pinned " + path);
    if (info.type != uint32_t(bpf_map__type(expect)) || info.key_size != bpf_map__key_size(expect) ||
        info.value_size != bpf_map__value_size(expect) || info.max_entries != bpf_map__max_entries(expect) ||
        info.map_flags != bpf_map__map_flags(expect))
        return make_error(EEXIST, "pinned " + path + " has another layout than this gate (type " +
                                      std::to_string(info.type) + ", value size " +
                                      std::to_string(info.value_size) + ")");
    if (is_ctl) {
        gate_ctl ctl{};
        uint32_t key = 0;
        if (bpf_map_lookup_elem_flags(fd.fd, &key, &ctl, BPF_F_LOCK) != 0)
            return errno_error("read pinned " + path);
        if (ctl.abi_version != 0 && ctl.abi_version != GATE_ABI_VERSION)
            return make_error(EEXIST, "pinned " + path + " was written by gate ABI " +
                                          std::to_string(ctl.abi_version) + ", this is ABI " +
                                          std::to_string(GATE_ABI_VERSION));
    }
    return {};
}

Status check_interface(const std::string& ifname) {
    Fd s(socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
    if (s.fd < 0) return errno_error("socket");
    ifreq ifr{};
    std::memcpy(ifr.ifr_name, ifname.c_str(), ifname.size());
    if (ioctl(s.fd, SIOCGIFHWADDR, &ifr) != 0) return errno_error("SIOCGIFHWADDR " + ifname);
    // The programs parse Ethernet headers.
    if (ifr.ifr_hwaddr.sa_family != ARPHRD_ETHER)
        return make_error(EPROTONOSUPPORT, ifname + " is not an Ethernet interface");
    return {};
}

bpf_tc_hook make_hook(int ifindex, bpf_tc_attach_point point) {
    bpf_tc_hook h{};
    h.sz = sizeof(h);
    h.ifindex = ifindex;
    h.attach_point = point;
    return h;
}

bpf_tc_opts make_tc_opts(int prog_fd, uint32_t flags) {
    bpf_tc_opts o{};
    o.sz = sizeof(o);
    o.prog_fd = prog_fd;
    o.handle = kTcHandle;
    o.priority = kTcPriority;
    o.flags = flags;
    return o;
}

Status detach_filters(int ifindex) {
    for (auto point : {BPF_TC_EGRESS, BPF_TC_INGRESS}) {
        bpf_tc_hook hook = make_hook(ifindex, point);
        bpf_tc_opts opts = make_tc_opts(0, 0);
        int rc = bpf_tc_detach(&hook, &opts);
        // ENOENT: no such filter; EINVAL: no clsact qdisc at all.
        if (rc < 0 && rc != -ENOENT && rc != -EINVAL)
            return errno_error(point == BPF_TC_EGRESS ? "detach gate_egress" : "detach gate_ingress", -rc);
    }
    return {};
}

gate_flow_key flow_key(const Flow& f) {
    gate_flow_key k{};
    k.daddr = f.client.s_addr;
    k.dport = htons(f.port);
    return k;
}

Status validate_flow(const Flow& f) {
    if (f.client.s_addr == 0 || f.port == 0) return make_error(EINVAL, "flow needs a client address and port");
    return {};
}

}  // namespace

struct Gate::Impl {
    gate_bpf* skel = nullptr;
    std::string pin_dir;
    int ifindex = 0;
    NetnsId netns;
    bool created_qdisc = false;
    std::atomic<bool> detached{false};
    Fd dir_lock;
    std::mutex ctl_mu;
    int ncpus = 0;
    ring_buffer* tcp_ring = nullptr;  // gate_tcp_frames, made by the first drain
    std::mutex ring_mu;
    const std::function<void(std::span<const uint8_t>, int64_t)>* ring_sink = nullptr;  // during a drain

    ~Impl() {
        if (tcp_ring) ring_buffer__free(tcp_ring);
        if (skel) gate_bpf__destroy(skel);
    }
    static int on_tcp_frame(void* ctx, void* data, size_t size) {
        auto* self = static_cast<Impl*>(ctx);
        if (size < offsetof(gate_tcp_frame, frame)) return 0;
        auto* r = static_cast<const gate_tcp_frame*>(data);
        size_t len = std::min<size_t>(r->len, size - offsetof(gate_tcp_frame, frame));
        (*self->ring_sink)(std::span<const uint8_t>(r->frame, len), int64_t(r->ns));
        return 0;
    }
    int map_fd(bpf_map* m) const { return bpf_map__fd(m); }
    Status live() const {
        if (detached) return make_error(ENOTCONN, "gate is detached");
        return {};
    }
    Result<gate_ctl> read_ctl() const {
        gate_ctl c{};
        uint32_t key = 0;
        if (bpf_map_lookup_elem_flags(map_fd(skel->maps.gate_ctl), &key, &c, BPF_F_LOCK) != 0)
            return errno_error("read gate_ctl");
        return c;
    }
    static Result<std::unique_ptr<Impl>> load(in_addr stream_ip, uint16_t tcp_port, const std::string& pin_dir,
                                              bool replace_incompatible, const LibbpfCapture& capture);
    template <class F>
    Status update_ctl(F&& change) {
        if (auto s = live(); !s) return s;
        std::lock_guard<std::mutex> lk(ctl_mu);
        auto c = read_ctl();
        if (!c) return c.error();
        gate_ctl next = *c;
        if (auto s = change(next); !s) return s;
        next.lock = {};
        next.abi_version = GATE_ABI_VERSION;
        next.generation = c->generation + 1;
        uint32_t key = 0;
        if (bpf_map_update_elem(map_fd(skel->maps.gate_ctl), &key, &next, BPF_F_LOCK) != 0)
            return errno_error("write gate_ctl");
        return {};
    }
};

// Opens and loads the skeleton; with a pin_dir, maps are reused from or pinned to it.
Result<std::unique_ptr<Gate::Impl>> Gate::Impl::load(in_addr stream_ip, uint16_t tcp_port, const std::string& pin_dir,
                                                     bool replace_incompatible, const LibbpfCapture& capture) {
    auto impl = std::make_unique<Impl>();
    impl->skel = gate_bpf__open();
    if (!impl->skel) return capture.error("open gate BPF object", errno);
    impl->skel->rodata->stream_ip = stream_ip.s_addr;
    impl->skel->rodata->tcp_port = htons(tcp_port);
    if (!pin_dir.empty()) {
        bpf_map* maps[] = {impl->skel->maps.gate_ctl, impl->skel->maps.gate_partner, impl->skel->maps.gate_flows,
                           impl->skel->maps.gate_seen, impl->skel->maps.gate_counters,
                           impl->skel->maps.gate_tcp_held, impl->skel->maps.gate_fence_token};
        bool incompatible = false;
        Error first{};
        for (size_t i = 0; i < std::size(maps); ++i) {
            std::string path = pin_dir + "/" + kMapNames[i];
            if (path_exists(path)) {
                if (auto s = check_pin(path, maps[i], maps[i] == impl->skel->maps.gate_ctl); !s) {
                    if (!incompatible) first = s.error();
                    incompatible = true;
                }
            }
        }
        if (incompatible) {
            if (!replace_incompatible) return first;
            // Start afresh: all maps together, never a mix of old and new.
            if (auto s = unlink_pins(pin_dir); !s) return s.error();
        }
        for (size_t i = 0; i < std::size(maps); ++i) {
            std::string path = pin_dir + "/" + kMapNames[i];
            if (bpf_map__set_pin_path(maps[i], path.c_str()) != 0) return capture.error("pin path " + path, errno);
        }
    }
    if (int rc = gate_bpf__load(impl->skel); rc != 0) return capture.error("load gate BPF programs", -rc);

    // A new gate_ctl is all zero; an initialised one carries the ABI version and is kept as is.
    auto ctl = impl->read_ctl();
    if (!ctl) return ctl.error();
    if (ctl->abi_version == 0) {
        gate_ctl init{};
        init.abi_version = GATE_ABI_VERSION;
        init.role = GATE_ROLE_STANDBY;
        init.fence_grace_ns = uint64_t(kDefaultFenceGrace.count());
        init.generation = 1;
        uint32_t key = 0;
        if (bpf_map_update_elem(bpf_map__fd(impl->skel->maps.gate_ctl), &key, &init, BPF_F_LOCK) != 0)
            return errno_error("initialise gate_ctl");
    }
    impl->ncpus = libbpf_num_possible_cpus();
    if (impl->ncpus <= 0) return errno_error("count possible CPUs", -impl->ncpus);
    return impl;
}

namespace {
// Deletes every entry of a hash map keyed by gate_flow_key. Keys are collected first (deleting
// while walking can restart the walk), bounded by the map's size.
Status delete_all_keys(int fd, size_t max_entries, const char* name) {
    std::vector<gate_flow_key> keys;
    gate_flow_key cur{}, next{};
    const void* prev = nullptr;
    while (keys.size() <= max_entries && bpf_map_get_next_key(fd, prev, &next) == 0) {
        keys.push_back(next);
        cur = next;
        prev = &cur;
    }
    if (errno != ENOENT && keys.size() <= max_entries) return errno_error(std::string("walk ") + name);
    for (const auto& k : keys)
        if (bpf_map_delete_elem(fd, &k) != 0 && errno != ENOENT) return errno_error(std::string("delete from ") + name);
    return {};
}
}  // namespace

Gate::Gate(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Gate::Gate(Gate&&) noexcept = default;
Gate& Gate::operator=(Gate&&) noexcept = default;
Gate::~Gate() = default;

Result<Gate> Gate::load(in_addr stream_ip, uint16_t tcp_port) {
    if (auto s = validate_stream_ip(stream_ip); !s) return s.error();
    LibbpfCapture capture;
    auto impl = Impl::load(stream_ip, tcp_port, "", false, capture);
    if (!impl) return impl.error();
    return Gate(std::move(*impl));
}

Result<Gate> Gate::attach(const std::string& ifname, in_addr stream_ip, const std::string& pin_root,
                          AttachOptions options) {
    if (auto s = validate_ifname(ifname); !s) return s.error();
    if (auto s = validate_pin_root(pin_root); !s) return s.error();
    if (auto s = validate_stream_ip(stream_ip); !s) return s.error();
    int ifindex = int(if_nametoindex(ifname.c_str()));
    if (ifindex == 0) return errno_error("interface " + ifname);
    if (auto s = check_interface(ifname); !s) return s.error();
    auto netns = current_netns();
    if (!netns) return netns.error();
    if (auto s = ensure_bpffs(pin_root); !s) return s.error();
    const std::string dir = pin_root + "/" + ifname;
    if (auto s = mkdir_p(dir); !s) return s.error();
    auto lock = lock_pin_dir(dir);
    if (!lock) return lock.error();

    LibbpfCapture capture;
    auto loaded = Impl::load(stream_ip, options.tcp_port, dir, options.replace_incompatible_pins, capture);
    if (!loaded) return loaded.error();
    std::unique_ptr<Impl> impl = std::move(*loaded);
    impl->pin_dir = dir;
    impl->ifindex = ifindex;
    impl->netns = *netns;
    impl->dir_lock = std::move(*lock);

    bpf_tc_hook hook = make_hook(ifindex, BPF_TC_INGRESS);
    int rc = bpf_tc_hook_create(&hook);
    if (rc < 0 && rc != -EEXIST) return capture.error("create clsact qdisc on " + ifname, -rc);
    impl->created_qdisc = rc == 0;

    // Ingress first: the partner's frames are recorded before our egress decides on the fence.
    // BPF_TC_F_REPLACE swaps a previous gate's filter in one step, so no packet passes ungated.
    struct {
        bpf_tc_attach_point point;
        int fd;
        const char* name;
    } progs[] = {{BPF_TC_INGRESS, bpf_program__fd(impl->skel->progs.gate_ingress), "gate_ingress"},
                 {BPF_TC_EGRESS, bpf_program__fd(impl->skel->progs.gate_egress), "gate_egress"}};
    for (auto& p : progs) {
        bpf_tc_hook h = make_hook(ifindex, p.point);
        bpf_tc_opts o = make_tc_opts(p.fd, BPF_TC_F_REPLACE);
        if (int r = bpf_tc_attach(&h, &o); r < 0) {
            Error e = capture.error(std::string("attach ") + p.name + " to " + ifname, -r);
            // Undo only what this call created; a filter we replaced cannot be restored.
            if (impl->created_qdisc) {
                bpf_tc_hook both = make_hook(ifindex, bpf_tc_attach_point(BPF_TC_INGRESS | BPF_TC_EGRESS));
                bpf_tc_hook_destroy(&both);
            }
            return e;
        }
    }
    return Gate(std::move(impl));
}

Status Gate::remove(const std::string& ifname, const std::string& pin_root) {
    if (auto s = validate_ifname(ifname); !s) return s;
    if (auto s = validate_pin_root(pin_root); !s) return s;
    const std::string dir = pin_root + "/" + ifname;
    Fd lock;
    if (path_exists(dir)) {
        auto l = lock_pin_dir(dir);
        if (!l) return l.error();
        lock = std::move(*l);
    }
    if (int ifindex = int(if_nametoindex(ifname.c_str())); ifindex != 0) {
        LibbpfCapture capture;
        if (auto s = detach_filters(ifindex); !s) return s;
    } else if (errno != ENODEV && errno != ENXIO) {
        return errno_error("interface " + ifname);
    }
    if (lock.fd >= 0) {
        if (auto s = unlink_pins(dir); !s) return s;
        if (rmdir(dir.c_str()) != 0 && errno != ENOENT && errno != ENOTEMPTY) return errno_error("rmdir " + dir);
    }
    return {};
}

Status Gate::detach() {
    if (auto s = impl_->live(); !s) return s;
    if (impl_->ifindex != 0) {
        auto ns = current_netns();
        if (!ns) return ns.error();
        if (!(*ns == impl_->netns))
            return make_error(EXDEV, "detach() must run in the network namespace of attach()");
        LibbpfCapture capture;  // keeps libbpf's netlink chatter off stderr
        if (auto s = detach_filters(impl_->ifindex); !s) return s;
        if (impl_->created_qdisc) {
            bpf_tc_hook both = make_hook(impl_->ifindex, bpf_tc_attach_point(BPF_TC_INGRESS | BPF_TC_EGRESS));
            int rc = bpf_tc_hook_destroy(&both);
            if (rc < 0 && rc != -ENOENT && rc != -EINVAL) return errno_error("destroy clsact qdisc", -rc);
        }
        if (auto s = unlink_pins(impl_->pin_dir); !s) return s;
        if (rmdir(impl_->pin_dir.c_str()) != 0 && errno != ENOENT && errno != ENOTEMPTY)
            return errno_error("rmdir " + impl_->pin_dir);
    }
    impl_->detached = true;
    return {};
}

Status Gate::set_role(Role role) {
    if (role != Role::Standby && role != Role::Active) return make_error(EINVAL, "unknown role");
    return impl_->update_ctl([&](gate_ctl& c) -> Status {
        if (role == Role::Active && c.role != GATE_ROLE_ACTIVE) c.active_since_ns = uint64_t(monotonic_ns());
        c.role = uint32_t(role);
        return {};
    });
}

Status Gate::renew_lease(std::chrono::nanoseconds duration) {
    if (duration.count() <= 0 || duration > kMaxLease)
        return make_error(EINVAL, "lease duration must be in (0, " + std::to_string(kMaxLease.count()) + "] ns");
    return impl_->update_ctl([&](gate_ctl& c) -> Status {
        c.lease_expiry_ns = uint64_t(monotonic_ns() + duration.count());
        return {};
    });
}

Status Gate::set_lease_expiry(int64_t monotonic_ns_abs) {
    if (monotonic_ns_abs < 0) return make_error(EINVAL, "lease expiry must be >= 0");
    return impl_->update_ctl([&](gate_ctl& c) -> Status {
        c.lease_expiry_ns = uint64_t(monotonic_ns_abs);
        return {};
    });
}

Status Gate::set_fence(bool on, std::chrono::nanoseconds grace) {
    if (grace.count() < 0 || grace > kMaxFenceGrace)
        return make_error(EINVAL, "fence grace must be in [0, " + std::to_string(kMaxFenceGrace.count()) + "] ns");
    return impl_->update_ctl([&](gate_ctl& c) -> Status {
        c.fence = on ? 1 : 0;
        c.fence_grace_ns = uint64_t(grace.count());
        return {};
    });
}

Status Gate::rearm_fence() {
    return impl_->update_ctl([&](gate_ctl& c) -> Status {
        c.active_since_ns = uint64_t(monotonic_ns());
        return {};
    });
}

Result<Control> Gate::control() const {
    if (auto s = impl_->live(); !s) return s.error();
    auto c = impl_->read_ctl();
    if (!c) return c.error();
    Control out;
    out.abi_version = c->abi_version;
    out.role = c->role == GATE_ROLE_ACTIVE ? Role::Active : Role::Standby;
    out.fence = c->fence != 0;
    out.lease_expiry_ns = int64_t(c->lease_expiry_ns);
    out.active_since_ns = int64_t(c->active_since_ns);
    out.fence_grace_ns = int64_t(c->fence_grace_ns);
    out.generation = c->generation;
    return out;
}

Result<Partner> Gate::partner() const {
    if (auto s = impl_->live(); !s) return s.error();
    gate_partner p{};
    uint32_t key = 0;
    if (bpf_map_lookup_elem(impl_->map_fd(impl_->skel->maps.gate_partner), &key, &p) != 0)
        return errno_error("read gate_partner");
    return Partner{int64_t(p.tx_ns), int64_t(p.any_ns)};
}

Result<int64_t> Gate::partner_tx_ns() const {
    auto p = partner();
    if (!p) return p.error();
    return p->tx_ns;
}

Result<bool> Gate::fence_tripped() const {
    auto c = control();
    if (!c) return c.error();
    auto p = partner();
    if (!p) return p.error();
    return c->role == Role::Active && c->fence && p->tx_ns > c->active_since_ns + c->fence_grace_ns;
}

Status Gate::set_flow_rule(const Flow& flow, Rule rule, uint16_t seq) {
    if (auto s = impl_->live(); !s) return s;
    if (auto s = validate_flow(flow); !s) return s;
    if (uint32_t(rule) >= GATE_RULE__COUNT) return make_error(EINVAL, "unknown flow rule");
    gate_flow_key k = flow_key(flow);
    gate_flow_rule v{};
    v.rule = uint32_t(rule);
    v.seq = (rule == Rule::PassFrom || rule == Rule::PassBefore) ? seq : 0;
    if (bpf_map_update_elem(impl_->map_fd(impl_->skel->maps.gate_flows), &k, &v, BPF_ANY) != 0) {
        if (errno == E2BIG)
            return make_error(E2BIG, "gate_flows is full (" + std::to_string(GATE_MAX_FLOWS) + " rules)");
        return errno_error("write gate_flows");
    }
    return {};
}

Status Gate::clear_flow_rule(const Flow& flow) {
    if (auto s = impl_->live(); !s) return s;
    if (auto s = validate_flow(flow); !s) return s;
    gate_flow_key k = flow_key(flow);
    if (bpf_map_delete_elem(impl_->map_fd(impl_->skel->maps.gate_flows), &k) != 0 && errno != ENOENT)
        return errno_error("delete from gate_flows");
    return {};
}

Status Gate::clear_flow_rules() {
    if (auto s = impl_->live(); !s) return s;
    return delete_all_keys(impl_->map_fd(impl_->skel->maps.gate_flows), GATE_MAX_FLOWS, GATE_MAP_FLOWS);
}

Result<std::optional<FlowRule>> Gate::flow_rule(const Flow& flow) const {
    if (auto s = impl_->live(); !s) return s.error();
    if (auto s = validate_flow(flow); !s) return s.error();
    gate_flow_key k = flow_key(flow);
    gate_flow_rule v{};
    if (bpf_map_lookup_elem(impl_->map_fd(impl_->skel->maps.gate_flows), &k, &v) != 0) {
        if (errno == ENOENT) return std::optional<FlowRule>{};
        return errno_error("read gate_flows");
    }
    return std::optional<FlowRule>(FlowRule{Rule(v.rule), v.seq});
}

Result<Seen> Gate::seen(const Flow& flow) const {
    if (auto s = impl_->live(); !s) return s.error();
    if (auto s = validate_flow(flow); !s) return s.error();
    gate_flow_key k = flow_key(flow);
    gate_seen v{};
    if (bpf_map_lookup_elem(impl_->map_fd(impl_->skel->maps.gate_seen), &k, &v) != 0) {
        if (errno == ENOENT) return make_error(ENOENT, "the partner sent nothing on this flow");
        return errno_error("read gate_seen");
    }
    Seen out;
    out.rtp = v.flags & GATE_SEEN_RTP;
    out.last_seq = v.last_seq;
    out.high_seq = v.high_seq;
    out.packets = v.packets;
    out.first_ns = int64_t(v.first_ns);
    out.last_ns = int64_t(v.last_ns);
    return out;
}

Status Gate::forget_seen(const Flow& flow) {
    if (auto s = impl_->live(); !s) return s;
    if (auto s = validate_flow(flow); !s) return s;
    gate_flow_key k = flow_key(flow);
    if (bpf_map_delete_elem(impl_->map_fd(impl_->skel->maps.gate_seen), &k) != 0 && errno != ENOENT)
        return errno_error("delete from gate_seen");
    return {};
}

Status Gate::set_fence_token(std::span<const uint8_t, GATE_FENCE_TOKEN_BYTES> token, in_addr addr, uint16_t port) {
    if (auto s = impl_->live(); !s) return s;
    if (port == 0 || addr.s_addr == 0) return make_error(EINVAL, "fence token needs an address and a port");
    gate_fence_token t{};
    t.valid = 1;
    t.daddr = addr.s_addr;
    t.port = htons(port);
    std::memcpy(t.token, token.data(), token.size());
    uint32_t k = 0;
    if (bpf_map_update_elem(impl_->map_fd(impl_->skel->maps.gate_fence_token), &k, &t, BPF_ANY) != 0)
        return errno_error("write gate_fence_token");
    return {};
}

Status Gate::clear_fence_token() {
    if (auto s = impl_->live(); !s) return s;
    gate_fence_token t{};
    uint32_t k = 0;
    if (bpf_map_update_elem(impl_->map_fd(impl_->skel->maps.gate_fence_token), &k, &t, BPF_ANY) != 0)
        return errno_error("write gate_fence_token");
    return {};
}

Status Gate::hold_tcp(const Flow& conn) {
    if (auto s = impl_->live(); !s) return s;
    if (auto s = validate_flow(conn); !s) return s;
    gate_flow_key k = flow_key(conn);
    gate_tcp_hold v{};
    timespec ts{};
    clock_gettime(CLOCK_MONOTONIC, &ts);
    v.since_ns = uint64_t(ts.tv_sec) * 1'000'000'000u + uint64_t(ts.tv_nsec);
    if (bpf_map_update_elem(impl_->map_fd(impl_->skel->maps.gate_tcp_held), &k, &v, BPF_ANY) != 0) {
        if (errno == E2BIG)
            return make_error(E2BIG, "gate_tcp_held is full (" + std::to_string(GATE_MAX_TCP_HELD) + " connections)");
        return errno_error("write gate_tcp_held");
    }
    return {};
}

Status Gate::release_tcp(const Flow& conn) {
    if (auto s = impl_->live(); !s) return s;
    if (auto s = validate_flow(conn); !s) return s;
    gate_flow_key k = flow_key(conn);
    if (bpf_map_delete_elem(impl_->map_fd(impl_->skel->maps.gate_tcp_held), &k) != 0 && errno != ENOENT)
        return errno_error("delete from gate_tcp_held");
    return {};
}

Status Gate::release_all_tcp() {
    if (auto s = impl_->live(); !s) return s;
    return delete_all_keys(impl_->map_fd(impl_->skel->maps.gate_tcp_held), GATE_MAX_TCP_HELD, GATE_MAP_TCP_HELD);
}

Result<bool> Gate::tcp_held(const Flow& conn) const {
    if (auto s = impl_->live(); !s) return s.error();
    if (auto s = validate_flow(conn); !s) return s.error();
    gate_flow_key k = flow_key(conn);
    gate_tcp_hold v{};
    if (bpf_map_lookup_elem(impl_->map_fd(impl_->skel->maps.gate_tcp_held), &k, &v) != 0) {
        if (errno == ENOENT) return false;
        return errno_error("read gate_tcp_held");
    }
    return true;
}

Result<int> Gate::tcp_frames_fd() {
    if (auto s = impl_->live(); !s) return s.error();
    std::lock_guard lk(impl_->ring_mu);
    if (!impl_->tcp_ring) {
        impl_->tcp_ring = ring_buffer__new(impl_->map_fd(impl_->skel->maps.gate_tcp_frames), &Impl::on_tcp_frame,
                                           impl_.get(), nullptr);
        if (!impl_->tcp_ring) return errno_error("open gate_tcp_frames");
    }
    return ring_buffer__epoll_fd(impl_->tcp_ring);
}

Result<size_t> Gate::drain_tcp_frames(const std::function<void(std::span<const uint8_t>, int64_t)>& sink) {
    if (auto fd = tcp_frames_fd(); !fd) return fd.error();
    std::lock_guard lk(impl_->ring_mu);
    impl_->ring_sink = &sink;
    int n = ring_buffer__consume(impl_->tcp_ring);
    impl_->ring_sink = nullptr;
    if (n < 0) return errno_error("read gate_tcp_frames", -n);
    return size_t(n);
}

Result<Counters> Gate::counters() const {
    if (auto s = impl_->live(); !s) return s.error();
    Counters out;
    std::vector<uint64_t> per_cpu(size_t(impl_->ncpus));
    int fd = impl_->map_fd(impl_->skel->maps.gate_counters);
    for (uint32_t i = 0; i < GATE_COUNTER__COUNT; ++i) {
        if (bpf_map_lookup_elem(fd, &i, per_cpu.data()) != 0) return errno_error("read gate_counters");
        uint64_t sum = 0;
        for (uint64_t v : per_cpu) sum += v;
        out.value[i] = sum;
    }
    return out;
}

int Gate::egress_prog_fd() const { return bpf_program__fd(impl_->skel->progs.gate_egress); }
int Gate::ingress_prog_fd() const { return bpf_program__fd(impl_->skel->progs.gate_ingress); }
int Gate::ifindex() const { return impl_->ifindex; }
const std::string& Gate::pin_dir() const { return impl_->pin_dir; }

uint64_t Counters::egress_total() const {
    uint64_t sum = 0;
    for (int i = GATE_EG_PASS_UNGATED; i <= GATE_EG_DROP_NO_CTL; ++i) sum += value[size_t(i)];
    return sum + value[GATE_EG_DROP_TCP_HELD];
}

uint64_t Counters::ingress_total() const { return value[GATE_IN_PARTNER] + value[GATE_IN_PASS]; }

std::vector<std::pair<std::string_view, uint64_t>> Counters::named() const {
    std::vector<std::pair<std::string_view, uint64_t>> out;
    out.reserve(value.size());
    for (size_t i = 0; i < value.size(); ++i) out.emplace_back(counter_name(gate_counter(i)), value[i]);
    return out;
}

std::string_view counter_name(gate_counter c) {
    switch (c) {
        case GATE_EG_PASS_UNGATED: return "eg_pass_ungated";
        case GATE_EG_PASS_ARP_REQUEST: return "eg_pass_arp_request";
        case GATE_EG_PASS_ACTIVE: return "eg_pass_active";
        case GATE_EG_PASS_FLOW: return "eg_pass_flow";
        case GATE_EG_DROP_STANDBY: return "eg_drop_standby";
        case GATE_EG_DROP_FLOW: return "eg_drop_flow";
        case GATE_EG_DROP_LEASE: return "eg_drop_lease";
        case GATE_EG_DROP_FENCE: return "eg_drop_fence";
        case GATE_EG_DROP_GSO_SPLIT: return "eg_drop_gso_split";
        case GATE_EG_DROP_GSO_BAD: return "eg_drop_gso_bad";
        case GATE_EG_DROP_NO_CTL: return "eg_drop_no_ctl";
        case GATE_IN_PARTNER: return "in_partner";
        case GATE_IN_PASS: return "in_pass";
        case GATE_INFO_ARP_REPLY_DROP: return "info_arp_reply_drop";
        case GATE_INFO_MALFORMED: return "info_malformed";
        case GATE_INFO_FRAGMENT: return "info_fragment";
        case GATE_INFO_NOT_RTP: return "info_not_rtp";
        case GATE_INFO_GSO: return "info_gso";
        case GATE_INFO_PARTNER_RULED: return "info_partner_ruled";
        case GATE_INFO_SEEN_FULL: return "info_seen_full";
        case GATE_EG_DROP_TCP_HELD: return "eg_drop_tcp_held";
        case GATE_INFO_TCP_FRAME: return "info_tcp_frame";
        case GATE_INFO_TCP_FRAME_LOST: return "info_tcp_frame_lost";
        case GATE_INFO_FENCE_ANNOUNCE: return "info_fence_announce";
        case GATE_INFO_FENCE_FORGED: return "info_fence_forged";
        case GATE_COUNTER__COUNT: break;
    }
    return "";
}

}  // namespace of::gate
