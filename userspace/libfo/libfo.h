// libfo: the C++ API over the kernel-held failover state of seed 004 [0093]-[0098].
//
// Two backends with one API and one set of rules (the Fig. 5 table in
// kmod/include/uapi/linux/failover_fsm.h, compiled into both):
//   kernel     /dev/failover, the module failover.ko (kmod/);
//   userspace  a "holder" process (Holder, holder.h; the fo-holder program) that keeps the
//              state and watches registered processes over a unix socket, for kernels
//              without the module. What it cannot do is listed in docs/libfo.md.
// open_backend(Choice::Auto) takes the kernel backend when /dev/failover exists, else the
// userspace one.
//
// Notifications: both backends deliver each change as a real-time signal (SIGFAILOVER unless
// chosen otherwise) whose si_value carries the new type, state, cause and generation. libfo
// reads them from a signalfd: poll notify_fd() in your event loop and call dispatch(), which
// runs the callback once per change, in order. The signal must be blocked in every thread of
// the process: call block_signal() in main() before any thread starts.
#pragma once

#include "common/result.h"

#include <netinet/in.h>
#include <signal.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include <uapi/linux/failover.h>

namespace of::fo {

enum class Type : uint8_t { Undef = FOTYPE_UNDEF, Master = FOTYPE_MASTER, Slave = FOTYPE_SLAVE };

enum class State : uint8_t {
    Undef = FOSTATE_UNDEF,
    Live = FOSTATE_LIVE,
    Failed = FOSTATE_FAILED,
    Syncing = FOSTATE_SYNCING,
    Synced = FOSTATE_SYNCED,
    NoPartner = FOSTATE_NOPARTNER,
    None = FOSTATE_NONE,
};

enum class Cause : uint8_t { None = FO_CAUSE_NONE, Set = FO_CAUSE_SET, Critical = FO_CAUSE_CRITICAL };

// One (failover_type, failover_state) pair: a state of Fig. 5.
struct FoState {
    Type type = Type::Undef;
    State state = State::Undef;
    bool operator==(const FoState&) const = default;
};

const char* to_string(Type t);
const char* to_string(State s);
const char* to_string(Cause c);
// The Fig. 5 name ("Primary", "Secondary_No_Primary", ...) or nullptr if not a state.
const char* fsm_name(FoState s);
// True if (type, state) is one of the states of the table.
bool is_valid(FoState s);
// True if the table allows the move (a same-state "move" is not an edge).
bool transition_allowed(FoState from, FoState to);
// Every state of the table, in a fixed order.
std::vector<FoState> all_states();

struct Status {
    FoState now;
    Cause last_cause = Cause::None;
    uint64_t generation = 0;      // changes since the module was loaded / the holder started
    bool message_armed = false;   // a prebuilt failover message waits to be sent
    uint32_t registered = 0;      // registrations (notify and/or critical)
    uint32_t critical = 0;
    uint64_t messages_sent = 0;
    uint64_t message_errors = 0;
    uint64_t signals_dropped = 0; // notifications the sender could not queue
    uint64_t critical_deaths = 0;
};

// One notification.
struct Change {
    FoState now;
    Cause cause = Cause::None;
    uint32_t generation = 0;  // low 32 bits of Status::generation after this change
    uint32_t missed = 0;      // changes between the previous notification and this one that
                              // were not delivered (receiver's queue full): re-read status()
};

// The prebuilt failover message the backend sends to the partner when a critical process
// dies. The payload is opaque here: the daemon builds and authenticates it.
struct FailoverMessage {
    sockaddr_in dest{};  // partner's private address and UDP port; not 0, multicast, broadcast
    sockaddr_in src{};   // optional source address/port (AF_UNSPEC or zero: chosen by routing)
    std::vector<uint8_t> payload;  // 1..FO_MESSAGE_MAX bytes
};

using ChangeCallback = std::function<void(const Change&)>;

enum class BackendKind { Kernel, Userspace };
const char* to_string(BackendKind k);

// Blocks signo in the calling thread (and so in threads it creates afterwards).
of::Status block_signal(int signo = SIGFAILOVER);

class Backend {
public:
    virtual ~Backend();
    Backend(const Backend&) = delete;
    Backend& operator=(const Backend&) = delete;

    virtual BackendKind kind() const = 0;
    virtual of::Result<Status> status() = 0;

    // Moves to `to` if the table allows it from the current state: EPROTO if not, EINVAL if
    // `to` is not a state, EPERM without CAP_NET_ADMIN. Setting the current state is a no-op.
    of::Status set_state(FoState to);
    // The same, but only if the current state is `expect` (ESTALE otherwise): a
    // compare-and-set that two writers cannot race through.
    of::Status transition(FoState expect, FoState to);

    // Registers this process as critical: if it dies or drops its backend without
    // unregister()/unregister_critical(), the server moves to Failed, every registered process
    // is notified and the prebuilt message is sent.
    of::Status register_critical();
    of::Status unregister_critical();

    // Registers for notifications: cb runs from dispatch() once per change. Returns the status
    // read right after registering (the baseline for generations). Blocks signo in the calling
    // thread and, if its disposition is the default (terminate), installs a no-op handler so
    // that a thread which forgot to block it does not kill the process.
    of::Result<Status> register_notify(ChangeCallback cb, int signo = SIGFAILOVER);
    // Ends every registration of this backend (critical and notify), gracefully.
    of::Status unregister();

    // The prebuilt failover message; replaces an earlier one and arms it. It is sent once.
    virtual of::Status set_message(const FailoverMessage& m) = 0;
    virtual of::Status clear_message() = 0;

    // signalfd to poll for POLLIN after register_notify(); -1 before.
    int notify_fd() const { return sigfd_; }
    // Reads every pending notification and runs the callback for each; returns how many ran.
    // Signals of the same number from anyone but the backend are dropped (counted in
    // foreign_signals()).
    of::Result<size_t> dispatch();
    uint64_t foreign_signals() const { return foreign_; }

protected:
    Backend() = default;
    virtual of::Status do_transition(const fo_transition& t) = 0;
    virtual of::Status do_register(const fo_registration& r) = 0;
    virtual of::Status do_unregister() = 0;
    // Who sends our notifications: 0 for the kernel, the holder's pid for userspace.
    virtual pid_t notifier_pid() const = 0;

private:
    of::Status reregister();
    uint32_t flags_ = 0;
    int signo_ = 0;
    int sigfd_ = -1;
    ChangeCallback cb_;
    uint32_t last_gen_ = 0;
    uint64_t foreign_ = 0;
};

enum class Choice { Auto, Kernel, Userspace };
of::Result<Choice> parse_choice(const std::string& s);  // "auto" | "kernel" | "userspace"

struct BackendOptions {
    std::string device = FO_DEVICE_PATH;            // kernel backend
    std::string holder_socket = "/run/oneframe/failover.sock";  // userspace backend
    int timeout_ms = 2000;  // bound on one request to the holder
};

// Auto: the kernel backend if `device` exists, else the userspace backend (which needs a
// running holder at holder_socket: ENOENT / ECONNREFUSED otherwise).
of::Result<std::unique_ptr<Backend>> open_backend(Choice choice, const BackendOptions& opts = {});

of::Result<std::unique_ptr<Backend>> open_kernel_backend(const std::string& device = FO_DEVICE_PATH);
of::Result<std::unique_ptr<Backend>> open_userspace_backend(const std::string& socket_path,
                                                            int timeout_ms = 2000);

// Checks a message the way both backends do: EINVAL with a reason if it would be refused.
of::Status validate_message(const FailoverMessage& m);
// Converts to the uapi struct (validated).
of::Result<fo_message> to_uapi(const FailoverMessage& m);

}  // namespace of::fo
