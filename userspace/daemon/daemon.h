// oneframed's top: owns the event loop, the asset store, the streaming engine, the RTSP server,
// the D-Bus API and the failover controller, and answers the API (dbus::Handler).
#pragma once

#include <systemd/sd-bus.h>
#include <systemd/sd-event.h>

#include <atomic>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "common/config.h"
#include "dbus/server.h"
#include "engine/engine.h"
#include "failover/controller.h"
#include "gate/egress_gate.h"
#include "libfo/libfo.h"
#include "rtsp/server.h"
#include "store/store.h"

namespace of::daemon {

class Daemon : public dbus::Handler, private rtsp::ConnectionObserver {
public:
    static Result<std::unique_ptr<Daemon>> create(const Config& config);
    ~Daemon() override;
    // Runs until SIGTERM/SIGINT; returns the exit code.
    int run();

    // dbus::Handler
    void status(dbus::Reply<dbus::Dict> reply) override;
    void asset_add(dbus::AssetAddRequest request, dbus::Reply<dbus::Dict> reply) override;
    void asset_list(dbus::Reply<dbus::List> reply) override;
    void asset_show(std::string name, dbus::Reply<dbus::Dict> reply) override;
    void asset_remove(std::string name, dbus::Reply<void> reply) override;
    void sessions(bool privileged, dbus::Reply<dbus::List> reply) override;
    void set_config_type(dbus::FailoverConfig config, dbus::Reply<dbus::Dict> reply) override;
    void start_streaming(dbus::Reply<dbus::Dict> reply) override;
    void stop_streaming(dbus::Reply<dbus::Dict> reply) override;
    void report_failure(dbus::FailureReport report, dbus::Reply<dbus::Dict> reply) override;
    void failover_sync(dbus::Reply<dbus::Dict> reply) override;
    void failover_unsync(dbus::Reply<dbus::Dict> reply) override;

private:
    explicit Daemon(const Config& config) : config_(config) {}
    // rtsp::ConnectionObserver: a pair holds each connection in the gate (its FIN and RST never
    // leave unless we close it on purpose) and sends each answer, with the session decisions its
    // request made, to the partner before writing it (docs/tcp-takeover.md).
    void opened(const sockaddr_in& peer) override;
    void closing(const sockaddr_in& peer) override;
    void request(const sockaddr_in& peer) override;
    void answered(const sockaddr_in& peer, uint64_t request_end, uint64_t response_start,
                  std::string_view response) override;
    void on_record(const failover::SessionRecord& r);
    // RTSP listens while this server transmits (failover::transmits): a standby's kernel must not
    // half-open the connections its partner serves. Called on the controller's thread.
    void follow_state(failover::State before, failover::State now);
    void adopt(std::vector<failover::RevivedConnection> revived);
    Status start();
    Status open_bus();
    void reply_failover(const Result<failover::State>& r, dbus::Reply<dbus::Dict>& reply);
    bool join_serving_partner();
    dbus::Dict failover_dict() const;
    std::vector<std::pair<std::string, std::string>> sync_params() const;
    Status apply_sync(const std::vector<std::pair<std::string, std::string>>& params);

    Config config_;
    sd_event* loop_ = nullptr;
    sd_bus* bus_ = nullptr;
    std::unique_ptr<store::AssetStore> store_;
    std::unique_ptr<engine::Engine> engine_;
    std::unique_ptr<gate::Gate> gate_;
    std::unique_ptr<fo::Backend> backend_;
    std::unique_ptr<failover::Controller> failover_;
    std::unique_ptr<rtsp::RtspServer> rtsp_;
    std::unique_ptr<dbus::Server> api_;
    std::atomic<int> ingests_{0};
    int64_t started_ns_ = 0;
    bool carry_connections_ = false;  // a pair with tcp_takeover: connections are held and carried over
    std::thread::id loop_thread_;
    bool in_request_ = false;                 // loop thread: an RTSP request is being handled
    std::vector<failover::SessionRecord> request_records_;  // ... and the decisions it made
};

}  // namespace of::daemon
