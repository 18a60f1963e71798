// The holder: the userspace backend's stand-in for failover.ko on kernels without the module.
//
// It keeps failover_type/failover_state (moved only along the Fig. 5 table that the module
// uses), serves a unix SEQPACKET socket that open_userspace_backend() connects to, notifies
// registered processes with a real-time signal (pidfd_send_signal, si_code FO_SI_CODE, the
// same si_value as the module), and watches critical processes through a pidfd each passes
// when it registers and through its connection: a critical process that exits or closes its
// connection without unregistering moves the server to Failed, and the holder sends the
// prebuilt failover message to the partner, then notifies.
//
// Run it in its own process (the fo-holder program, or a child the daemon forks): if it runs
// inside the process it watches, nothing is left to send the message when that process dies.
// Single-threaded: poll fd() and call dispatch(). Never logs.
#pragma once

#include "common/result.h"
#include "libfo/libfo.h"

#include <cstdint>
#include <map>
#include <memory>
#include <string>

namespace of::fo {

struct HolderOptions {
    std::string socket_path = "/run/oneframe/failover.sock";
    unsigned socket_mode = 0600;    // who may connect at all; changes need CAP_NET_ADMIN too
    uint32_t max_connections = 128; // connections beyond this are closed at once
};

class Holder {
public:
    // Binds socket_path (EADDRINUSE if a holder already answers there; a stale socket file is
    // replaced). The message socket is created in this process's network namespace.
    static of::Result<std::unique_ptr<Holder>> create(const HolderOptions& opts);
    ~Holder();
    Holder(const Holder&) = delete;
    Holder& operator=(const Holder&) = delete;

    // An epoll descriptor: readable when dispatch() has something to do.
    int fd() const { return ep_; }
    // Handles what is ready, waiting at most timeout_ms (0: do not wait). Returns the number
    // of events handled. Errors of one client never stop the holder; they are that client's.
    of::Result<size_t> dispatch(int timeout_ms = 0);

    Status status() const;
    const std::string& socket_path() const { return opts_.socket_path; }
    size_t connections() const { return conns_.size(); }

private:
    struct Conn {
        int fd = -1;
        int pidfd = -1;       // registering process, while registered
        pid_t owner = 0;
        uint32_t flags = 0;   // FO_REG_*
        int signo = 0;
    };
    explicit Holder(const HolderOptions& opts) : opts_(opts) {}
    void accept_all();
    void on_conn_readable(uint64_t id);
    void on_pidfd(uint64_t id);
    void registration_ended(Conn& c);
    void close_conn(uint64_t id);
    void unregister(Conn& c);
    void critical_death(Conn& c);
    void change(uint8_t type, uint8_t state, uint8_t cause);
    void notify_all();
    void send_message();
    int handle(Conn& c, uint64_t id, const uint8_t* pkt, size_t len, pid_t sender, int passed_fd);
    int do_register(Conn& c, uint64_t id, const fo_registration& r, pid_t sender, int passed_fd);
    int do_set_message(const fo_message& m);
    void reply(Conn& c, int err, uint32_t seq);
    fo_status uapi_status() const;

    HolderOptions opts_;
    int ep_ = -1;
    int listen_fd_ = -1;
    uint64_t next_id_ = 1;
    std::map<uint64_t, Conn> conns_;

    uint8_t type_ = FOTYPE_UNDEF, state_ = FOSTATE_UNDEF, last_cause_ = FO_CAUSE_NONE;
    uint64_t generation_ = 0;
    uint32_t registered_ = 0, critical_ = 0;
    uint64_t signals_dropped_ = 0, critical_deaths_ = 0;

    int msg_fd_ = -1;  // UDP socket connected to the partner
    fo_message msg_{};
    bool msg_armed_ = false;
    uint64_t msg_sent_ = 0, msg_errors_ = 0;
};

}  // namespace of::fo
