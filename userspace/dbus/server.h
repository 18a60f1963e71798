// The daemon side of the D-Bus API: oneframed implements `Handler`, owns the sd-bus connection and
// its sd-event loop, and attaches a `Server` to them.
//
// Every Handler method receives a `Reply` that it completes exactly once, either at once or later
// (an ingest runs on a worker thread, and the bus keeps serving other callers meanwhile). A Reply
// must be completed on the event-loop thread; a worker thread hands the completion over with
// `Server::post`. A Reply destroyed without completion answers org.oneframe.Error.Failed, so a
// caller never waits for its timeout because of a lost request.
//
// Arguments are validated before the Handler sees them (bounds in api.h), and Access::Change
// methods reach the Handler only for a caller that is root or holds CAP_NET_ADMIN according to
// credentials the bus vouches for (see docs/dbus-api.md, "Privilege").
#pragma once

#include <systemd/sd-bus.h>
#include <systemd/sd-event.h>
#include <sys/types.h>

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <type_traits>
#include <utility>

#include "common/result.h"
#include "dbus/api.h"
#include "dbus/value.h"

namespace of::dbus {

// Who called. uid and pid are filled for Access::Change methods (the check needs them); for
// read-only methods they stay empty, which saves a round trip to the bus per call.
struct Caller {
    std::string sender;  // unique bus name, e.g. ":1.42"
    std::optional<uid_t> uid;
    std::optional<pid_t> pid;
};

namespace detail {
struct Shared;
// A call the Server has accepted and not yet turned into a Reply. Move-only: the reference to the
// call message travels with it.
struct Pending {
    Pending(sd_bus_message* c, std::shared_ptr<Shared> s) : call(c), shared(std::move(s)) {}
    Pending(Pending&& o) noexcept
        : call(std::exchange(o.call, nullptr)), shared(std::move(o.shared)), caller(std::move(o.caller)),
          privileged(o.privileged) {}
    Pending& operator=(Pending&&) = delete;
    ~Pending() { sd_bus_message_unref(call); }

    sd_bus_message* call = nullptr;  // owned reference
    std::shared_ptr<Shared> shared;
    Caller caller;
    bool privileged = false;  // root or CAP_NET_ADMIN, as the bus vouches (checked for Change and Sessions)
};
}  // namespace detail

class ReplyBase {
public:
    ReplyBase(ReplyBase&& o) noexcept;
    ReplyBase& operator=(ReplyBase&& o) noexcept;
    ReplyBase(const ReplyBase&) = delete;
    ReplyBase& operator=(const ReplyBase&) = delete;
    ~ReplyBase();

    // True until the reply has been sent (or failed).
    bool pending() const { return call_ != nullptr; }
    const Caller& caller() const { return caller_; }
    // Answers with the D-Bus error for e.code (api.h) and e.message. No-op once completed.
    void fail(const Error& e);

protected:
    explicit ReplyBase(detail::Pending p);
    void send_dict(const Dict& d);
    void send_list(const List& l);
    void send_empty();

private:
    sd_bus_message* take();
    void send(const std::function<Status(sd_bus_message*)>& fill);
    sd_bus_message* call_ = nullptr;
    std::shared_ptr<detail::Shared> shared_;
    Caller caller_;
};

template <class T>
class Reply;

template <>
class Reply<Dict> : public ReplyBase {
public:
    explicit Reply(detail::Pending p) : ReplyBase(std::move(p)) {}
    void ok(const Dict& d) { send_dict(d); }
    void complete(const Result<Dict>& r) { r ? ok(*r) : fail(r.error()); }
};

template <>
class Reply<List> : public ReplyBase {
public:
    explicit Reply(detail::Pending p) : ReplyBase(std::move(p)) {}
    void ok(const List& l) { send_list(l); }
    void complete(const Result<List>& r) { r ? ok(*r) : fail(r.error()); }
};

template <>
class Reply<void> : public ReplyBase {
public:
    explicit Reply(detail::Pending p) : ReplyBase(std::move(p)) {}
    void ok() { send_empty(); }
    void complete(const Status& s) { s ? ok() : fail(s.error()); }
};

struct AssetAddRequest {
    std::string path;  // absolute, at most kMaxPathBytes
    std::string name;  // 1..kMaxNameBytes bytes; the store applies its own naming rules
};

enum class Role { Primary, Secondary };

// set_config_type of seed 004 [0079]/[0081]. Absent settings keep the daemon's current value.
struct FailureReport {
    std::string cause;   // one of kFailureCauses
    std::string detail;  // 1..kMaxFailureDetailBytes bytes of UTF-8
};

struct FailoverConfig {
    Role role = Role::Primary;
    std::optional<std::string> partner_admin;    // an IPv4 or IPv6 address literal
    std::optional<std::string> partner_private;  // an IPv4 or IPv6 address literal
    std::optional<uint32_t> heartbeat_ms;        // 1..kMaxHeartbeatMs
    std::optional<uint32_t> max_missed;          // 1..kMaxMissedHeartbeats
};

// Implemented by oneframed. Called on the event-loop thread. Reply keys: docs/dbus-api.md.
class Handler {
public:
    virtual ~Handler() = default;
    virtual void status(Reply<Dict> reply) = 0;
    virtual void asset_add(AssetAddRequest request, Reply<Dict> reply) = 0;
    virtual void asset_list(Reply<List> reply) = 0;
    virtual void asset_show(std::string name, Reply<Dict> reply) = 0;
    virtual void asset_remove(std::string name, Reply<void> reply) = 0;
    // privileged: the caller may see what identifies a session (its id lets one control it).
    virtual void sessions(bool privileged, Reply<List> reply) = 0;
    virtual void set_config_type(FailoverConfig config, Reply<Dict> reply) = 0;
    virtual void start_streaming(Reply<Dict> reply) = 0;
    virtual void stop_streaming(Reply<Dict> reply) = 0;
    virtual void report_failure(FailureReport report, Reply<Dict> reply) = 0;
    virtual void failover_sync(Reply<Dict> reply) = 0;
    virtual void failover_unsync(Reply<Dict> reply) = 0;
};

struct ServerOptions {
    bool request_name = true;  // take kBusName once the object is in place
    size_t max_pending = 64;   // requests a Handler may hold at once; more are refused (E2BIG)
};

struct ServerCounters {
    uint64_t calls = 0;        // method calls on kInterface
    uint64_t refused = 0;      // Access::Change calls from unprivileged callers
    uint64_t invalid = 0;      // arguments refused before the Handler
    uint64_t busy = 0;         // refused because max_pending requests were in progress
    uint64_t errors = 0;       // replies that were D-Bus errors (all causes)
    uint64_t dropped = 0;      // Replies destroyed without completion
    uint64_t send_errors = 0;  // replies the bus did not take (caller gone, bus closed)
    uint64_t pending = 0;      // requests in progress now
};

class Server {
public:
    // The bus must be attached to an sd-event loop (sd_bus_attach_event); the Server must live
    // shorter than the bus, the loop and the handler. With options.request_name, fails with EEXIST
    // if another connection owns kBusName.
    static Result<std::unique_ptr<Server>> create(sd_bus* bus, Handler& handler, ServerOptions options = {});
    ~Server();
    Server(const Server&) = delete;
    Server& operator=(const Server&) = delete;

    // Runs f on the event-loop thread. Safe from any thread, as long as the Server exists. Tasks
    // still queued when the Server is destroyed are destroyed without running.
    template <class F>
    void post(F&& f) {
        struct Impl final : Task {
            explicit Impl(F&& fn) : fn_(std::forward<F>(fn)) {}
            void run() override { fn_(); }
            std::decay_t<F> fn_;
        };
        post_task(std::make_unique<Impl>(std::forward<F>(f)));
    }

    ServerCounters counters() const;  // safe from any thread

    struct Task {
        virtual ~Task() = default;
        virtual void run() = 0;
    };

private:
    struct Impl;
    explicit Server(std::unique_ptr<Impl> impl);
    void post_task(std::unique_ptr<Task> task);
    std::unique_ptr<Impl> impl_;
};

}  // namespace of::dbus
