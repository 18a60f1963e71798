#include "dbus/server.h"

#include <arpa/inet.h>
#include <linux/capability.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <mutex>
#include <vector>

#include "dbus/marshal.h"

namespace of::dbus {

namespace detail {
struct Shared {
    std::atomic<uint64_t> calls{0}, refused{0}, invalid{0}, busy{0}, errors{0}, dropped{0}, send_errors{0},
        pending{0};
};
}  // namespace detail

// ---------------------------------------------------------------------------------------------
// Replies

ReplyBase::ReplyBase(detail::Pending p)
    : call_(std::exchange(p.call, nullptr)), shared_(std::move(p.shared)), caller_(std::move(p.caller)) {
    if (call_) shared_->pending++;
}

ReplyBase::ReplyBase(ReplyBase&& o) noexcept
    : call_(std::exchange(o.call_, nullptr)), shared_(std::move(o.shared_)), caller_(std::move(o.caller_)) {}

ReplyBase& ReplyBase::operator=(ReplyBase&& o) noexcept {
    if (this != &o) {
        if (call_) {
            shared_->dropped++;
            fail(make_error(EIO, "internal error: the daemon dropped this request"));
        }
        call_ = std::exchange(o.call_, nullptr);
        shared_ = std::move(o.shared_);
        caller_ = std::move(o.caller_);
    }
    return *this;
}

ReplyBase::~ReplyBase() {
    if (call_) {
        shared_->dropped++;
        fail(make_error(EIO, "internal error: the daemon dropped this request"));
    }
}

sd_bus_message* ReplyBase::take() {
    // Counters settle before the answer leaves, so a caller that has its answer sees them final.
    shared_->pending--;
    return std::exchange(call_, nullptr);
}

void ReplyBase::send(const std::function<Status(sd_bus_message*)>& fill) {
    if (!call_) return;
    if (sd_bus_message_get_expect_reply(call_) == 0) {  // sent with NO_REPLY_EXPECTED
        sd_bus_message_unref(take());
        return;
    }
    sd_bus_message* reply = nullptr;
    int r = sd_bus_message_new_method_return(call_, &reply);
    if (r < 0) return fail(errno_error("could not build the reply", -r));
    if (Status s = fill(reply); !s) {
        sd_bus_message_unref(reply);
        return fail(make_error(EIO, "could not encode the reply: " + s.error().message));
    }
    sd_bus_message* call = take();
    r = sd_bus_send(nullptr, reply, nullptr);
    if (r < 0) shared_->send_errors++;
    sd_bus_message_unref(reply);
    sd_bus_message_unref(call);
}

void ReplyBase::send_dict(const Dict& d) {
    send([&](sd_bus_message* m) { return append_dict(m, d); });
}

void ReplyBase::send_list(const List& l) {
    send([&](sd_bus_message* m) { return append_list(m, l); });
}

void ReplyBase::send_empty() {
    send([](sd_bus_message*) { return Status{}; });
}

void ReplyBase::fail(const Error& e) {
    if (!call_) return;
    const std::string name = error_name(e.code);
    const std::string text =
        utf8_sanitize(e.message.empty() ? std::string(std::strerror(e.code > 0 ? e.code : EIO)) : e.message);
    shared_->errors++;
    sd_bus_message* call = take();
    if (sd_bus_reply_method_errorf(call, name.c_str(), "%s", text.c_str()) < 0) shared_->send_errors++;
    sd_bus_message_unref(call);
}

// ---------------------------------------------------------------------------------------------
// Argument checks and dispatch

namespace {

using detail::Pending;

// Reads the call's arguments; the first problem is kept and later reads return empty values.
class Args {
public:
    explicit Args(sd_bus_message* m) : m_(m) {}

    std::string string(const char* what, size_t min_bytes, size_t max_bytes) {
        if (err_) return {};
        const char* s = nullptr;
        int r = sd_bus_message_read_basic(m_, 's', &s);
        if (r <= 0) return bad(EINVAL, std::string(what) + ": missing");
        std::string v(s);
        if (v.size() < min_bytes) return bad(EINVAL, std::string(what) + " is empty");
        if (v.size() > max_bytes)
            return bad(EINVAL, std::string(what) + " is " + std::to_string(v.size()) + " bytes long; the limit is " +
                                   std::to_string(max_bytes));
        return v;
    }

    Dict dict(const char* what, const ReadLimits& lim) {
        if (err_) return {};
        auto d = read_dict(m_, lim);
        if (!d) {
            bad(d.error().code == E2BIG ? E2BIG : EINVAL, std::string(what) + ": " + d.error().message);
            return {};
        }
        return std::move(*d);
    }

    std::string bad(int code, std::string message) {
        if (!err_) err_ = make_error(code, std::move(message));
        return {};
    }

    // If an argument was refused: answers the call with that error and returns true.
    bool refused(Pending& p, detail::Shared& shared) {
        if (!err_) return false;
        shared.invalid++;
        Reply<void>(std::move(p)).fail(*err_);
        return true;
    }

private:
    sd_bus_message* m_;
    std::optional<Error> err_;
};

std::string path_arg(Args& a) {
    std::string p = a.string("path", 1, kMaxPathBytes);
    if (!p.empty() && p[0] != '/') return a.bad(EINVAL, "path '" + p + "' is not absolute");
    return p;
}

std::string name_arg(Args& a) { return a.string("name", 1, kMaxNameBytes); }

bool ip_literal(const std::string& s) {
    unsigned char buf[sizeof(in6_addr)];
    return inet_pton(AF_INET, s.c_str(), buf) == 1 || inet_pton(AF_INET6, s.c_str(), buf) == 1;
}

std::optional<uint32_t> bounded_uint(Args& a, const std::string& key, const Value& v, uint64_t max) {
    uint64_t n;
    if (auto u = std::get_if<uint64_t>(&v)) {
        n = *u;
    } else if (auto i = std::get_if<int64_t>(&v); i && *i >= 0) {
        n = uint64_t(*i);
    } else {
        a.bad(EINVAL, "setting " + key + " must be a non-negative integer");
        return std::nullopt;
    }
    if (n < 1 || n > max) {
        a.bad(EINVAL, "setting " + key + " = " + std::to_string(n) + " is out of range 1.." + std::to_string(max));
        return std::nullopt;
    }
    return uint32_t(n);
}

std::optional<std::string> address_setting(Args& a, const std::string& key, const Value& v) {
    auto s = std::get_if<std::string>(&v);
    if (!s) {
        a.bad(EINVAL, "setting " + key + " must be a string");
        return std::nullopt;
    }
    if (!ip_literal(*s)) {
        a.bad(EINVAL, "setting " + key + " = '" + *s + "' is not an IPv4 or IPv6 address");
        return std::nullopt;
    }
    return *s;
}

FailureReport failure_report_args(Args& a) {
    FailureReport r;
    r.cause = a.string("cause", 1, 16);
    if (!r.cause.empty() && std::find_if(kFailureCauses.begin(), kFailureCauses.end(),
                                         [&](const char* c) { return r.cause == c; }) == kFailureCauses.end())
        a.bad(EINVAL, "cause '" + r.cause + "' is not one of disk, software, health, operator");
    r.detail = a.string("detail", 1, kMaxFailureDetailBytes);
    // It goes into the log, the status and the failover message: one line of text.
    if (std::any_of(r.detail.begin(), r.detail.end(), [](char c) { return (unsigned char)c < 0x20 || c == 0x7f; }))
        a.bad(EINVAL, "detail has control characters");
    return r;
}

FailoverConfig failover_config_args(Args& a) {
    FailoverConfig c;
    const std::string role = a.string("role", 1, 32);
    if (role == "primary") {
        c.role = Role::Primary;
    } else if (role == "secondary") {
        c.role = Role::Secondary;
    } else if (!role.empty()) {
        a.bad(EINVAL, "role '" + role + "' is neither primary nor secondary");
    }
    const Dict settings =
        a.dict("settings", ReadLimits{.max_entries = 16, .max_items = 0, .max_key_bytes = 64,
                                      .max_string_bytes = kMaxAddressBytes});
    for (const auto& [key, v] : settings) {
        if (key == setting::PartnerAdmin) {
            c.partner_admin = address_setting(a, key, v);
        } else if (key == setting::PartnerPrivate) {
            c.partner_private = address_setting(a, key, v);
        } else if (key == setting::HeartbeatMs) {
            c.heartbeat_ms = bounded_uint(a, key, v, kMaxHeartbeatMs);
        } else if (key == setting::MaxMissed) {
            c.max_missed = bounded_uint(a, key, v, kMaxMissedHeartbeats);
        } else {
            a.bad(EINVAL, "unknown setting '" + key + "' (known: partner_admin, partner_private, heartbeat_ms, max_missed)");
        }
    }
    return c;
}

using Invoke = void (*)(Handler&, Args&, Pending&&, detail::Shared&);

struct Entry {
    const Method* method;
    Invoke invoke;
};

// One entry per Method of api.h: read and check the arguments, then call the Handler.
const Entry kEntries[] = {
    {&method::Status, [](Handler& h, Args&, Pending&& p, detail::Shared&) { h.status(Reply<Dict>(std::move(p))); }},
    {&method::AssetAdd,
     [](Handler& h, Args& a, Pending&& p, detail::Shared& s) {
         AssetAddRequest req;
         req.path = path_arg(a);
         req.name = name_arg(a);
         if (!a.refused(p, s)) h.asset_add(std::move(req), Reply<Dict>(std::move(p)));
     }},
    {&method::AssetList, [](Handler& h, Args&, Pending&& p, detail::Shared&) { h.asset_list(Reply<List>(std::move(p))); }},
    {&method::AssetShow,
     [](Handler& h, Args& a, Pending&& p, detail::Shared& s) {
         std::string name = name_arg(a);
         if (!a.refused(p, s)) h.asset_show(std::move(name), Reply<Dict>(std::move(p)));
     }},
    {&method::AssetRemove,
     [](Handler& h, Args& a, Pending&& p, detail::Shared& s) {
         std::string name = name_arg(a);
         if (!a.refused(p, s)) h.asset_remove(std::move(name), Reply<void>(std::move(p)));
     }},
    {&method::Sessions,
     [](Handler& h, Args&, Pending&& p, detail::Shared&) {
         bool privileged = p.privileged;
         h.sessions(privileged, Reply<List>(std::move(p)));
     }},
    {&method::SetConfigType,
     [](Handler& h, Args& a, Pending&& p, detail::Shared& s) {
         FailoverConfig c = failover_config_args(a);
         if (!a.refused(p, s)) h.set_config_type(std::move(c), Reply<Dict>(std::move(p)));
     }},
    {&method::StartStreaming,
     [](Handler& h, Args&, Pending&& p, detail::Shared&) { h.start_streaming(Reply<Dict>(std::move(p))); }},
    {&method::StopStreaming,
     [](Handler& h, Args&, Pending&& p, detail::Shared&) { h.stop_streaming(Reply<Dict>(std::move(p))); }},
    {&method::FailoverSync,
     [](Handler& h, Args&, Pending&& p, detail::Shared&) { h.failover_sync(Reply<Dict>(std::move(p))); }},
    {&method::FailoverUnsync,
     [](Handler& h, Args&, Pending&& p, detail::Shared&) { h.failover_unsync(Reply<Dict>(std::move(p))); }},
    {&method::ReportFailure,
     [](Handler& h, Args& a, Pending&& p, detail::Shared& s) {
         FailureReport r = failure_report_args(a);
         if (!a.refused(p, s)) h.report_failure(std::move(r), Reply<Dict>(std::move(p)));
     }},
};

const Entry* find_entry(std::string_view member) {
    for (const Entry& e : kEntries)
        if (member == e.method->name) return &e;
    return nullptr;
}

// Root, or CAP_NET_ADMIN in the effective set. Only credentials the bus vouches for count: with
// dbus-daemon that is the euid taken with SO_PEERCRED when the caller connected. Capabilities
// could only be read from /proc/PID, which races with PID reuse (the reason sd-bus marks such
// data "augmented" and refuses it for authorization), so they count only on a bus that passes them.
struct Identity {
    Caller caller;
    bool privileged = false;
};

Result<Identity> identify(sd_bus_message* m) {
    Identity id;
    if (const char* s = sd_bus_message_get_sender(m)) id.caller.sender = s;
    sd_bus_creds* creds = nullptr;
    int r = sd_bus_query_sender_creds(m, SD_BUS_CREDS_EUID | SD_BUS_CREDS_PID | SD_BUS_CREDS_EFFECTIVE_CAPS, &creds);
    if (r < 0) return errno_error("cannot learn the caller's credentials", -r);
    const uint64_t augmented = sd_bus_creds_get_augmented_mask(creds);
    uid_t euid;
    if (!(augmented & SD_BUS_CREDS_EUID) && sd_bus_creds_get_euid(creds, &euid) >= 0) id.caller.uid = euid;
    pid_t pid;
    if (sd_bus_creds_get_pid(creds, &pid) >= 0) id.caller.pid = pid;
    const bool cap = !(augmented & SD_BUS_CREDS_EFFECTIVE_CAPS) && sd_bus_creds_has_effective_cap(creds, CAP_NET_ADMIN) > 0;
    sd_bus_creds_unref(creds);
    id.privileged = (id.caller.uid && *id.caller.uid == 0) || cap;
    return id;
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Server

struct Server::Impl {
    sd_bus* bus = nullptr;
    Handler* handler = nullptr;
    ServerOptions options;
    std::shared_ptr<detail::Shared> shared = std::make_shared<detail::Shared>();
    std::vector<std::string> arg_names;  // storage for the vtable's names fields
    std::vector<sd_bus_vtable> vtable;
    sd_bus_slot* slot = nullptr;
    bool own_name = false;
    int efd = -1;
    sd_event_source* post_source = nullptr;
    std::mutex mu;
    std::vector<std::unique_ptr<Task>> queue;

    ~Impl() {
        if (own_name) sd_bus_release_name(bus, kBusName);
        sd_bus_slot_unref(slot);
        sd_event_source_disable_unref(post_source);
        if (efd >= 0) close(efd);
        sd_bus_unref(bus);
    }

    Status build_vtable();
    static int on_call(sd_bus_message* m, void* userdata, sd_bus_error* error);
    static int on_post(sd_event_source* s, int fd, uint32_t revents, void* userdata);
};

Status Server::Impl::build_vtable() {
    // Names first: the vtable points into these strings, which must not move afterwards.
    arg_names.reserve(kMethods.size());
    for (const Method* m : kMethods) {
        std::string names;
        std::string_view list = m->arg_names;
        while (!list.empty()) {
            const size_t sp = list.find(' ');
            names.append(list.substr(0, sp));
            names.push_back('\0');
            list = sp == std::string_view::npos ? std::string_view{} : list.substr(sp + 1);
        }
        if (m->returns != Returns::Nothing) names.append("result").push_back('\0');
        arg_names.push_back(std::move(names));
    }
    sd_bus_vtable start{};
    start.type = _SD_BUS_VTABLE_START;
    start.x.start.element_size = sizeof(sd_bus_vtable);
    start.x.start.features = _SD_BUS_VTABLE_PARAM_NAMES;
    start.x.start.vtable_format_reference = &sd_bus_object_vtable_format;
    vtable.push_back(start);
    for (size_t i = 0; i < kMethods.size(); ++i) {
        const Method* m = kMethods[i];
        if (!find_entry(m->name)) return make_error(EINVAL, std::string("no dispatch entry for method ") + m->name);
        sd_bus_vtable v{};
        v.type = _SD_BUS_VTABLE_METHOD;
        // sd-bus's own check would demand CAP_SYS_ADMIN; on_call applies this API's rule instead.
        v.flags = SD_BUS_VTABLE_UNPRIVILEGED;
        v.x.method.member = m->name;
        v.x.method.signature = m->signature;
        v.x.method.result = reply_signature(m->returns);
        v.x.method.handler = &Impl::on_call;
        v.x.method.offset = 0;
        v.x.method.names = arg_names[i].c_str();
        vtable.push_back(v);
    }
    sd_bus_vtable end{};
    end.type = _SD_BUS_VTABLE_END;
    vtable.push_back(end);
    return {};
}

int Server::Impl::on_call(sd_bus_message* m, void* userdata, sd_bus_error*) {
    auto* self = static_cast<Impl*>(userdata);
    detail::Shared& shared = *self->shared;
    shared.calls++;
    const char* member = sd_bus_message_get_member(m);
    const Entry* e = find_entry(member ? member : "");
    Pending p(sd_bus_message_ref(m), self->shared);
    if (const char* s = sd_bus_message_get_sender(m)) p.caller.sender = s;
    if (!e) {  // cannot happen: sd-bus only calls us for vtable members
        Reply<void>(std::move(p)).fail(make_error(EOPNOTSUPP, "unknown method"));
        return 1;
    }
    if (shared.pending >= self->options.max_pending) {
        shared.busy++;
        Reply<void>(std::move(p)).fail(make_error(
            E2BIG, std::to_string(self->options.max_pending) + " requests are in progress; try again when one has finished"));
        return 1;
    }
    if (e->method->access == Access::Change) {
        auto id = identify(m);
        if (!id) {
            shared.refused++;
            Reply<void>(std::move(p)).fail(make_error(EACCES, std::string(e->method->name) + " refused: " + id.error().message));
            return 1;
        }
        p.caller = id->caller;
        if (!id->privileged) {
            shared.refused++;
            const std::string who = id->caller.uid ? "uid " + std::to_string(*id->caller.uid) : "the caller";
            Reply<void>(std::move(p)).fail(make_error(
                EPERM, std::string(e->method->name) + " changes the server and needs root or CAP_NET_ADMIN; " + who +
                           " has neither"));
            return 1;
        }
    }
    if (e->method == &method::Sessions) {
        // Open to everyone, but session ids (which let their holder control a session) only to
        // the privileged.
        auto id = identify(m);
        p.privileged = id && id->privileged;
    } else if (e->method->access == Access::Change) {
        p.privileged = true;  // checked above
    }
    Args args(m);
    try {
        e->invoke(*self->handler, args, std::move(p), shared);
    } catch (...) {
        // The Reply, if the handler had not stored it, was destroyed while unwinding and has
        // answered Failed; an exception must not unwind through sd-bus's C frames.
    }
    if (p.call) {  // a throw before the Pending became a Reply
        Reply<void>(std::move(p)).fail(make_error(EIO, "internal error"));
    }
    return 1;
}

int Server::Impl::on_post(sd_event_source*, int fd, uint32_t, void* userdata) {
    auto* self = static_cast<Impl*>(userdata);
    uint64_t n;
    if (read(fd, &n, sizeof n) < 0 && errno != EAGAIN) return 0;
    std::vector<std::unique_ptr<Task>> tasks;
    {
        std::lock_guard lock(self->mu);
        tasks.swap(self->queue);
    }
    for (auto& t : tasks) {
        try {
            t->run();
        } catch (...) {
            // Same reason as in on_call; a Reply the task held has answered Failed.
        }
    }
    return 0;
}

Server::Server(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Server::~Server() = default;

Result<std::unique_ptr<Server>> Server::create(sd_bus* bus, Handler& handler, ServerOptions options) {
    if (!bus) return make_error(EINVAL, "no bus");
    sd_event* event = sd_bus_get_event(bus);
    if (!event) return make_error(EINVAL, "the bus is not attached to an sd-event loop");
    auto impl = std::make_unique<Impl>();
    impl->bus = sd_bus_ref(bus);
    impl->handler = &handler;
    impl->options = options;
    if (options.max_pending == 0) return make_error(EINVAL, "max_pending must be at least 1");
    if (auto s = impl->build_vtable(); !s) return s.error();

    impl->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (impl->efd < 0) return errno_error("eventfd");
    int r = sd_event_add_io(event, &impl->post_source, impl->efd, EPOLLIN, &Impl::on_post, impl.get());
    if (r < 0) return errno_error("sd_event_add_io", -r);

    r = sd_bus_add_object_vtable(bus, &impl->slot, kObjectPath, kInterface, impl->vtable.data(), impl.get());
    if (r < 0) return errno_error(std::string("cannot publish ") + kObjectPath, -r);

    if (options.request_name) {
        r = sd_bus_request_name(bus, kBusName, 0);
        if (r == -EEXIST)
            return make_error(EEXIST, std::string(kBusName) + " is owned by another connection (is oneframed already running?)");
        if (r < 0 && r != -EALREADY) return errno_error(std::string("cannot own ") + kBusName, -r);
        impl->own_name = true;
    }
    return std::unique_ptr<Server>(new Server(std::move(impl)));
}

void Server::post_task(std::unique_ptr<Task> task) {
    {
        std::lock_guard lock(impl_->mu);
        impl_->queue.push_back(std::move(task));
    }
    const uint64_t one = 1;
    // Only fails with EAGAIN when the counter is near 2^64, i.e. never; the loop reads it down.
    [[maybe_unused]] ssize_t n = write(impl_->efd, &one, sizeof one);
}

ServerCounters Server::counters() const {
    const detail::Shared& s = *impl_->shared;
    return ServerCounters{s.calls, s.refused, s.invalid, s.busy, s.errors, s.dropped, s.send_errors, s.pending};
}

}  // namespace of::dbus
