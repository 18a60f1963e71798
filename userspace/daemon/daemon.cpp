#include "daemon/daemon.h"

#include <arpa/inet.h>
#include <signal.h>
#include <sys/stat.h>
#include <systemd/sd-daemon.h>

#include <array>
#include <filesystem>
#include <optional>
#include <sstream>
#include <thread>

#include "common/clock.h"
#include "daemon/log.h"
#include "rtsp/framing.h"

namespace of::daemon {
namespace {

constexpr int kMaxConcurrentIngests = 2;

std::string ip_text(in_addr a) {
    char b[INET_ADDRSTRLEN];
    inet_ntop(AF_INET, &a, b, sizeof b);
    return b;
}

dbus::Dict asset_dict(const store::AssetInfo& a) {
    return {{"name", a.name},
            {"bytes", a.bytes},
            {"packets", a.packets},
            {"duration_ms", uint64_t(a.duration_ns / 1'000'000)},
            {"bitrate_bps", a.bitrate_bps},
            {"pcr_pid", uint64_t(a.pcr_pid)},
            {"pcr_count", a.pcr_count},
            {"rap_count", a.rap_count},
            {"extent_size", a.extent_size},
            {"extents", a.extents},
            {"disks", uint64_t(a.disks)},
            {"sha256", a.sha256.empty() ? std::string("unknown") : a.sha256}};
}

Status make_dir(const std::string& d) {
    std::error_code ec;
    std::filesystem::create_directories(d, ec);
    if (ec) return make_error(ec.value(), "cannot create " + d + ": " + ec.message());
    return {};
}

// A lateness quantile as an upper bound: "<=200", or ">100000" past the last bucket, "0" if none.
std::string lateness_text(const std::array<uint64_t, streamer::kLatenessBuckets>& h, double q) {
    int64_t us = streamer::lateness_quantile_us(h, q);
    if (us < 0) return ">" + std::to_string(streamer::kLatenessBoundsUs.back());
    return us == 0 ? "0" : "<=" + std::to_string(us);
}
// "le25=N le50=N ... gt100000=N": counts since start, for scripts that difference two readings.
std::string lateness_histogram(const std::array<uint64_t, streamer::kLatenessBuckets>& h) {
    std::string out;
    for (size_t i = 0; i < h.size(); ++i) {
        if (!out.empty()) out += ' ';
        out += i < streamer::kLatenessBoundsUs.size() ? "le" + std::to_string(streamer::kLatenessBoundsUs[i])
                                                       : "gt" + std::to_string(streamer::kLatenessBoundsUs.back());
        out += '=' + std::to_string(h[i]);
    }
    return out;
}
}  // namespace

Result<std::unique_ptr<Daemon>> Daemon::create(const Config& config) {
    std::unique_ptr<Daemon> d(new Daemon(config));
    if (auto s = d->start(); !s) return s.error();
    return d;
}

Daemon::~Daemon() {
    api_.reset();
    // A pair's partner carries the connections on (it took over when we stopped): no FIN.
    if (rtsp_ && carry_connections_) rtsp_->drop_connections_silently();
    rtsp_.reset();
    if (engine_) engine_->set_observer(nullptr);
    failover_.reset();
    engine_.reset();
    if (backend_) (void)backend_->unregister();  // a clean exit is not a critical death
    backend_.reset();
    gate_.reset();  // the attached gate stays in force (closed if we were standby)
    store_.reset();
    if (bus_) sd_bus_flush_close_unref(bus_);
    if (loop_) sd_event_unref(loop_);
}

Status Daemon::open_bus() {
    int r;
    if (config_.dbus_address == "system") {
        r = sd_bus_open_system(&bus_);
        if (r < 0) return errno_error("connect to the system bus", -r);
    } else {
        if ((r = sd_bus_new(&bus_)) < 0) return errno_error("sd_bus_new", -r);
        if ((r = sd_bus_set_address(bus_, config_.dbus_address.c_str())) < 0)
            return errno_error("D-Bus address " + config_.dbus_address, -r);
        sd_bus_set_bus_client(bus_, 1);
        if ((r = sd_bus_start(bus_)) < 0) return errno_error("connect to D-Bus at " + config_.dbus_address, -r);
    }
    if ((r = sd_bus_attach_event(bus_, loop_, SD_EVENT_PRIORITY_NORMAL)) < 0) return errno_error("attach bus", -r);
    return {};
}

Status Daemon::start() {
    started_ns_ = realtime_ns();
    for (auto& d : config_.disks)
        if (auto s = make_dir(d); !s) return s;
    if (auto s = make_dir(config_.catalog_dir); !s) return s;
    if (auto s = make_dir(config_.run_dir); !s) return s;

    store::StoreConfig sc;
    sc.catalog_dir = config_.catalog_dir;
    sc.disks = config_.disks;
    sc.extent_size = config_.extent_size;
    sc.limits.max_bytes = config_.max_asset_bytes;
    auto store = store::AssetStore::open(sc);
    if (!store) return make_error(store.error().code, "asset store: " + store.error().message);
    store_ = std::move(*store);
    for (auto& p : store_->problems())
        log(Level::kWarning, "asset store: skipped " + p.path + ": " + p.error.message, {{"PATH", p.path}});

    auto engine = engine::Engine::create(config_, *store_);
    if (!engine) return engine.error();
    engine_ = std::move(*engine);

    if (config_.egress_gate) {
        gate::AttachOptions ao;
        ao.replace_incompatible_pins = true;
        // A pair carrying RTSP connections over watches them through the gate (docs/tcp-takeover.md).
        bool pair = config_.partner_private_ip.s_addr || config_.partner_admin_ip.s_addr;
        if (pair && config_.tcp_takeover) ao.tcp_port = config_.rtsp_port;
        auto g = gate::Gate::attach(config_.stream_interface, config_.stream_ip, config_.bpf_pin_root, ao);
        if (!g) return make_error(g.error().code, "egress gate on " + config_.stream_interface + ": " + g.error().message);
        gate_ = std::make_unique<gate::Gate>(std::move(*g));
    }

    if (config_.failover_backend != "none") {
        auto choice = fo::parse_choice(config_.failover_backend);
        if (!choice) return choice.error();
        fo::BackendOptions bo;
        bo.holder_socket = config_.run_dir + "/failover.sock";
        auto b = fo::open_backend(*choice, bo);
        if (!b)
            return make_error(b.error().code, "failover backend '" + config_.failover_backend + "': " + b.error().message +
                                                  " (load failover.ko, or start fo-holder --socket " + bo.holder_socket +
                                                  ", or set failover_backend = none)");
        backend_ = std::move(*b);
        if (auto s = backend_->register_critical(); !s)
            return make_error(s.error().code, "register as a critical process: " + s.error().message);
        log(Level::kInfo, std::string("failover backend: ") + fo::to_string(backend_->kind()));
    }

    failover::ControllerOptions fo;
    fo.heartbeat_ms = config_.failover_heartbeat_freq_ms;
    fo.max_missed = config_.max_missed_heartbeats;
    fo.peer_port = config_.peer_port;
    if (config_.partner_private_ip.s_addr) fo.partner_private = config_.partner_private_ip;
    if (config_.partner_admin_ip.s_addr) fo.partner_admin = config_.partner_admin_ip;
    if (config_.admin_ip.s_addr) fo.admin_ip = config_.admin_ip;
    if (config_.stream_ip.s_addr) fo.stream_ip = config_.stream_ip;
    if (!config_.peer_key_file.empty()) {
        auto key = failover::load_key_file(config_.peer_key_file);
        if (!key) return key.error();
        fo.key = std::move(*key);
    }
    fo.rt_priority = int(config_.failover_rt_priority);
    fo.stream_interface = config_.stream_interface;
    fo.sync_params = [this] { return sync_params(); };
    fo.apply_sync = [this](const auto& params) { return apply_sync(params); };
    carry_connections_ = (fo.partner_private || fo.partner_admin) && gate_ && config_.tcp_takeover;
    if (carry_connections_) {
        // The RTSP connections are carried over at a takeover (docs/tcp-takeover.md).
        tcp_takeover::HubViewOptions hv;
        hv.server = config_.stream_ip;
        hv.server_port = config_.rtsp_port;
        rtsp::ParserLimits pl;  // the RTSP server's, so both split requests alike
        hv.request_framer = [pl] { return rtsp::make_request_framer(pl); };
        hv.response_framer = [] { return rtsp::make_response_framer(); };
        fo.tcp = hv;
        // Nothing held by an earlier run is ours any more.
        if (auto s = gate_->release_all_tcp(); !s) return make_error(s.error().code, "egress gate: " + s.error().message);
    }
    auto ctl = failover::Controller::create(fo, *engine_, gate_.get(), backend_.get());
    if (!ctl) return ctl.error();
    failover_ = std::move(*ctl);
    loop_thread_ = std::this_thread::get_id();
    engine_->set_observer([this](const failover::SessionRecord& r) { on_record(r); });

    int r = sd_event_default(&loop_);
    if (r < 0) return errno_error("sd_event_default", -r);
    sd_event_set_watchdog(loop_, true);
    sigset_t ss;
    sigemptyset(&ss);
    sigaddset(&ss, SIGTERM);
    sigaddset(&ss, SIGINT);
    sigprocmask(SIG_BLOCK, &ss, nullptr);
    sd_event_add_signal(loop_, nullptr, SIGTERM, nullptr, nullptr);
    sd_event_add_signal(loop_, nullptr, SIGINT, nullptr, nullptr);

    rtsp::Limits lim;
    lim.max_connections = config_.rtsp_max_connections;
    lim.max_connections_per_address = config_.rtsp_max_per_client;
    lim.max_sessions_per_address = config_.rtsp_max_per_client;
    lim.max_sessions = config_.mpeg_stream_count_limit * 2;
    lim.session_timeout_usec = uint64_t(config_.session_timeout_s) * 1'000'000;
    sockaddr_in la{};
    la.sin_family = AF_INET;
    la.sin_addr = config_.stream_ip;
    la.sin_port = htons(config_.rtsp_port);
    auto rtsp = rtsp::RtspServer::create(loop_, *engine_, lim);
    if (!rtsp) return rtsp.error();
    rtsp_ = std::move(*rtsp);
    if (carry_connections_) rtsp_->set_observer(this);

    if (auto s = open_bus(); !s) return s;
    auto api = dbus::Server::create(bus_, *this);
    if (!api) return make_error(api.error().code, "D-Bus API: " + api.error().message);
    api_ = std::move(*api);

    failover_->on_state([this](failover::State before, failover::State now) { follow_state(before, now); });
    failover_->on_takeover([this](std::vector<failover::RevivedConnection> r) { adopt(std::move(r)); });

    // Start-up role (seed 004 [0079]-[0081]): the same commands an operator would give.
    if (config_.failover_role != "standalone" || config_.autostart) {
        failover::Controller::TypeSettings ts;
        auto role = failover_->set_config_type(config_.failover_role != "secondary", ts);
        if (!role) return make_error(role.error().code, "set_config_type at start-up: " + role.error().message);
        if (config_.autostart && config_.failover_role != "secondary" && !join_serving_partner()) {
            auto on = failover_->start_streaming();
            if (!on) return make_error(on.error().code, "start_streaming at start-up: " + on.error().message);
        }
    }
    // The state may come from the failover backend (it outlives us) rather than from a command.
    if (failover::transmits(failover_->state()) && !rtsp_->listening()) {
        auto fd = rtsp::listen_tcp(la);
        if (!fd) return make_error(fd.error().code, "RTSP on " + ip_text(config_.stream_ip) + ":" +
                                                        std::to_string(config_.rtsp_port) + ": " + fd.error().message);
        if (auto s = rtsp_->start_listening(*fd, true); !s) return s;
    }
    log(Level::kNotice, "serving rtsp://" + ip_text(config_.stream_ip) + ":" + std::to_string(config_.rtsp_port) +
                            "/ in state " + std::string(failover::name(failover_->state())) +
                            (rtsp_->listening() ? "" : " (not listening: standby)"));
    return {};
}

void Daemon::follow_state(failover::State before, failover::State now) {
    bool was = failover::transmits(before), is = failover::transmits(now);
    if (is == was || !rtsp_) return;
    // Commands (start-up, D-Bus) change the state on the loop thread: act at once. A takeover or
    // the failover backend change it on the controller's thread: hand it to the loop.
    auto run = [this](auto fn) {
        if (std::this_thread::get_id() == loop_thread_) fn();
        else if (api_) api_->post(std::move(fn));
    };
    if (is) {
        // The socket is made here, before the gate opens (a takeover): a client connecting at that
        // moment meets a listener, not a refusal.
        sockaddr_in la{};
        la.sin_family = AF_INET;
        la.sin_addr = config_.stream_ip;
        la.sin_port = htons(config_.rtsp_port);
        auto fd = rtsp::listen_tcp(la);
        run([this, fd] {
            if (!fd) return log(Level::kErr, "RTSP: cannot listen: " + fd.error().message);
            if (auto s = rtsp_->start_listening(*fd, true); !s) log(Level::kErr, "RTSP: " + s.error().message);
        });
    } else {
        // Standing down: the partner serves the connections now, or is about to.
        run([this] {
            rtsp_->stop_listening();
            if (carry_connections_) rtsp_->drop_connections_silently();
        });
    }
}

void Daemon::adopt(std::vector<failover::RevivedConnection> revived) {
    auto shared = std::make_shared<std::vector<failover::RevivedConnection>>(std::move(revived));
    api_->post([this, shared] {
        // The RTSP front end owns the sessions now, so keepalives and timeouts apply.
        for (auto& v : engine_->sessions())
            (void)rtsp_->adopt_session(v.id, v.asset,
                                       v.transport == "RTP/AVP" ? rtsp::TransportKind::RtpAvp : rtsp::TransportKind::RawUdp,
                                       v.client_ip);
        size_t adopted = 0;
        for (auto& r : *shared) {
            rtsp::AdoptedConnection a;
            a.fd = r.fd;
            a.peer.sin_family = AF_INET;
            a.peer.sin_addr = r.state.key.client;
            a.peer.sin_port = htons(r.state.key.port);
            a.in_offset = r.state.in_offset;
            a.pending = std::move(r.state.pending);
            a.out_offset = r.state.out_offset;
            a.unsent = std::move(r.state.unsent);
            if (auto s = rtsp_->adopt_connection(std::move(a)); s) ++adopted;
            else log(Level::kWarning, "RTSP: adopt a revived connection: " + s.error().message);
        }
        auto st = failover_->status();
        log(Level::kNotice,
            "took over as primary: " + st.last_takeover_cause + "; " + std::to_string(adopted) + " RTSP connections carried on" +
                (st.connections_lost ? ", " + std::to_string(st.connections_lost) + " lost (last: " + st.last_connection_lost + ")"
                                     : ""),
            {{"DETECTED_NS", std::to_string(st.last_detection_ns)},
             {"GATE_OPEN_NS", std::to_string(st.last_takeover_ns)},
             {"CONNECTIONS", std::to_string(adopted)}});
    });
}

void Daemon::opened(const sockaddr_in& peer) {
    if (!gate_) return;
    if (auto s = gate_->hold_tcp({peer.sin_addr, ntohs(peer.sin_port)}); !s)
        log(Level::kWarning, "RTSP connection not protected against a takeover: " + s.error().message);
}

void Daemon::closing(const sockaddr_in& peer) {
    if (gate_) (void)gate_->release_tcp({peer.sin_addr, ntohs(peer.sin_port)});
}

void Daemon::request(const sockaddr_in&) {
    in_request_ = true;
    request_records_.clear();
}

void Daemon::answered(const sockaddr_in& peer, uint64_t request_end, uint64_t response_start, std::string_view response) {
    failover::ConnReply r;
    r.client_ip = peer.sin_addr;
    r.client_port = ntohs(peer.sin_port);
    r.request_end = request_end;
    r.response_start = response_start;
    r.response.assign(response);
    r.records = std::move(request_records_);
    request_records_.clear();
    in_request_ = false;
    if (r.request_end == 0) {  // (an answer to nothing framed: a timeout's 408 before any request)
        for (auto& rec : r.records) failover_->replicate(rec);
        return;
    }
    failover_->replicate_reply(r);
}

// The engine's decisions: those of an RTSP request travel with its answer (one message).
void Daemon::on_record(const failover::SessionRecord& r) {
    // (The thread first: in_request_ belongs to the loop thread.)
    if (std::this_thread::get_id() == loop_thread_ && in_request_ && request_records_.size() < failover::kMaxReplyRecords) {
        request_records_.push_back(r);
        return;
    }
    failover_->replicate(r);
}

int Daemon::run() {
    sd_notify(0, "READY=1\nSTATUS=serving");
    int r = sd_event_loop(loop_);
    sd_notify(0, "STOPPING=1");
    // A primary that is told to stop (systemctl stop, an upgrade) hands its viewers to an online
    // secondary between two datagrams (a planned hand-over); if that cannot be, at once, as at a
    // failure: the secondary takes over from what it saw on the hub.
    if (failover_ && failover_->state_is(failover::State::kPrimary)) {
        auto h = failover_->hand_over();
        if (h) log(Level::kNotice, "stopping: handed every session to the secondary");
        else log(Level::kWarning, "stopping: " + h.error().message + "; failing over instead");
    }
    if (failover_ && failover::transmits(failover_->state()))
        failover_->local_failure(failover::FailureReason::kOperator, "oneframed stopped");
    if (r < 0) {
        log(Level::kErr, "event loop: " + errno_error("", -r).message);
        return 1;
    }
    return 0;
}

std::vector<std::pair<std::string, std::string>> Daemon::sync_params() const {
    std::vector<std::pair<std::string, std::string>> p = {
        {"stream_ip", ip_text(config_.stream_ip)},
        {"rtsp_port", std::to_string(config_.rtsp_port)},
        {"server_rtp_port", std::to_string(config_.server_rtp_port)},
        {"mpeg_stream_count_limit", std::to_string(config_.mpeg_stream_count_limit)},
        {"mpeg_bandwidth_limit_kbps", std::to_string(config_.mpeg_bandwidth_limit_kbps)},
        {"server_bandwidth_limit_kbps", std::to_string(config_.server_bandwidth_limit_kbps)},
        {"failover_heartbeat_freq_ms", std::to_string(config_.failover_heartbeat_freq_ms)},
        {"max_missed_heartbeats", std::to_string(config_.max_missed_heartbeats)},
        {"load_balance_active", config_.load_balance_active ? "yes" : "no"},
        {"load_balance_group_id", std::to_string(config_.load_balance_group_id)},
        {"extent_size", std::to_string(config_.extent_size)},
    };
    // "NAME BYTES SHA256" ("-" for an asset ingested before digests were kept)
    for (auto& a : store_->list())
        p.emplace_back("asset", a.name + " " + std::to_string(a.bytes) + " " + (a.sha256.empty() ? "-" : a.sha256));
    return p;
}

Status Daemon::apply_sync(const std::vector<std::pair<std::string, std::string>>& params) {
    // Network identity and ports must already agree: both servers answer for the same stream IP.
    auto mine = sync_params();
    auto local = [&](const std::string& k) -> std::string {
        for (auto& [mk, mv] : mine)
            if (mk == k) return mv;
        return "";
    };
    std::vector<std::string> missing, differ;
    // An asset matches by name, size and content digest (by name and size if either side has no
    // digest: ingested by an older version).
    auto fields = [](const std::string& v) {
        std::istringstream in(v);
        std::string name, bytes, sha = "-";
        in >> name >> bytes >> sha;
        return std::array<std::string, 3>{name, bytes, sha};
    };
    for (auto& [k, v] : params) {
        if (k == "stream_ip" || k == "rtsp_port" || k == "server_rtp_port" || k == "extent_size") {
            if (local(k) != v) return make_error(EINVAL, k + " differs: primary " + v + ", here " + local(k));
        } else if (k == "asset") {
            auto theirs = fields(v);
            std::optional<std::array<std::string, 3>> ours;
            for (auto& [mk, mv] : mine)
                if (mk == "asset" && fields(mv)[0] == theirs[0]) ours = fields(mv);
            if (!ours) missing.push_back(theirs[0]);
            else if ((*ours)[1] != theirs[1] || ((*ours)[2] != "-" && theirs[2] != "-" && (*ours)[2] != theirs[2]))
                differ.push_back(theirs[0]);
        } else {
            auto c = parse_config("stream_ip = " + ip_text(config_.stream_ip) + "\n" + k + " = " + v + "\n", "sync");
            if (!c) return make_error(EINVAL, "primary sent " + k + " = " + v + ": " + c.error().message);
        }
    }
    auto join = [](const std::vector<std::string>& v) {
        std::string list;
        for (auto& m : v) list += (list.empty() ? "" : ", ") + m;
        return list;
    };
    if (!differ.empty())
        return make_error(EINVAL, "assets differ in content from the primary's (size or SHA-256): " + join(differ) +
                                      " (ingest the primary's files here)");
    if (!missing.empty())
        return make_error(ENOENT, "assets missing on this server: " + join(missing) + " (ingest them here too)");
    // Adopt the primary's runtime parameters.
    std::string text = "stream_ip = " + ip_text(config_.stream_ip) + "\n";
    for (auto& [k, v] : params)
        if (k != "asset" && k != "stream_ip") text += k + " = " + v + "\n";
    auto c = parse_config(text, "sync");
    if (!c) return c.error();
    config_.mpeg_stream_count_limit = c->mpeg_stream_count_limit;
    config_.mpeg_bandwidth_limit_kbps = c->mpeg_bandwidth_limit_kbps;
    config_.server_bandwidth_limit_kbps = c->server_bandwidth_limit_kbps;
    config_.failover_heartbeat_freq_ms = c->failover_heartbeat_freq_ms;
    config_.max_missed_heartbeats = c->max_missed_heartbeats;
    config_.load_balance_active = c->load_balance_active;
    config_.load_balance_group_id = c->load_balance_group_id;
    engine_->set_limits(c->mpeg_stream_count_limit, c->mpeg_bandwidth_limit_kbps, c->server_bandwidth_limit_kbps);
    return {};
}

// A primary that comes up while its partner transmits (it took over when we died, or was started
// first) becomes the secondary instead of starting a second transmitter ([0063]): it listens for
// the partner's heartbeats first. Returns true if it joined, or tried to (then it stays in
// Secondary_Offline, and says why, for an operator: it never transmits beside the partner).
bool Daemon::join_serving_partner() {
    if (config_.failover_role != "primary" || !failover_->status().partner_configured) return false;
    auto partner = failover_->listen_for_partner(failover_->join_listen_time());
    if (!partner || !failover::transmits(*partner)) return false;
    log(Level::kNotice, "the partner is " + std::string(failover::name(*partner)) + ": joining it as secondary");
    failover::Controller::TypeSettings ts;
    Result<failover::State> r = failover_->set_config_type(false, ts);
    if (r) r = failover_->failover_sync();
    if (r) r = failover_->start_streaming();
    if (!r) log(Level::kWarning, "joining the partner as secondary: " + r.error().message + " (run foctl failover-sync, then foctl start-streaming)");
    else log(Level::kNotice, "joined the partner: " + std::string(failover::name(*r)));
    return true;
}

dbus::Dict Daemon::failover_dict() const {
    auto st = failover_->status();
    dbus::Dict d = {
        {"failover_state", std::string(failover::name(st.state))},
        {"failover_type", std::string(st.state == failover::State::kUnconfigured ? "UNDEF"
                                      : failover::type_of(st.state) == FOTYPE_MASTER ? "MASTER" : "SLAVE")},
        {"failover_backend", std::string(backend_ ? fo::to_string(backend_->kind()) : "none")},
        {"partner_configured", st.partner_configured},
        {"partner_online", st.partner_online},
        {"partner_state", std::string(st.partner_state ? failover::name(*st.partner_state) : "unknown")},
        {"heartbeat_ms", uint64_t(st.heartbeat_ms)},
        {"max_missed_heartbeats", uint64_t(st.max_missed)},
        {"last_heartbeat_ns", st.last_heartbeat_ns},
        {"last_heartbeat_private_ns", st.last_heartbeat_private_ns},
        {"last_heartbeat_lan_ns", st.last_heartbeat_lan_ns},
        {"heartbeats_sent", st.heartbeats_sent},
        {"heartbeats_received", st.heartbeats_received},
        {"takeovers", st.takeovers},
        {"last_detection_ns", st.last_detection_ns},
        {"last_takeover_ns", st.last_takeover_ns},
        {"last_takeover_cause", st.last_takeover_cause},
        {"takeover_announcements_sent", st.announcements_sent},
        {"sessions_resumed_from_hub", st.sessions_resumed_from_hub},
        {"sessions_resumed_from_heartbeat", st.sessions_resumed_from_heartbeat},
        {"sessions_handed_over", st.sessions_handed_over},
        {"unprotected_sessions", st.unprotected_sessions},
        {"unprotected", [&] {
             std::string t;
             for (auto& u : st.unprotected) t += (t.empty() ? "" : "; ") + u;
             return t;
         }()},
        {"handovers", st.handovers},
        {"last_handover", st.last_handover},
        {"tcp_connections_revived", st.connections_revived},
        {"tcp_connections_lost", st.connections_lost},
        {"tcp_last_connection_lost", st.last_connection_lost},
        {"tcp_replies_sent", st.replies_sent},
        {"tcp_replies_oversized", st.replies_oversized},
        {"tcp_hub_segments", st.hub.segments},
        {"tcp_hub_ignored", st.hub.ignored},
        {"tcp_hub_connections", st.hub.connections},
        {"tcp_hub_closed", st.hub.closed},
        {"tcp_hub_evicted", st.hub.evicted},
        {"tcp_hub_broken", st.hub.broken},
        {"tcp_hub_replies", st.hub.replies},
        {"tcp_hub_replies_answered", st.hub.replies_answered},
        {"tcp_hub_replies_unknown", st.hub.replies_unknown},
        {"tcp_frames_malformed", st.frames_malformed},
        {"peer_sent", st.peer.sent},
        {"peer_received", st.peer.received},
        {"peer_bad_auth", st.peer.bad_auth},
        {"peer_malformed", st.peer.malformed},
        {"peer_replayed", st.peer.replayed},
        {"peer_stale", st.peer.stale},
        {"peer_clock_skew", st.peer.clock_skew},
        {"peer_wrong_source", st.peer.wrong_source},
        {"peer_reflected", st.peer.reflected},
        {"last_error", st.last_error},
    };
    return d;
}

void Daemon::status(dbus::Reply<dbus::Dict> reply) {
    auto t = engine_->totals();
    dbus::Dict d = {
        {"version", std::string(ONEFRAME_VERSION)},
        {"stream_ip", ip_text(config_.stream_ip)},
        {"rtsp_port", uint64_t(config_.rtsp_port)},
        {"uptime_s", uint64_t((realtime_ns() - started_ns_) / 1'000'000'000)},
        {"assets", uint64_t(store_->list().size())},
        {"sessions", t.sessions},
        {"reserved_kbps", t.reserved_kbps},
        {"datagrams_sent", t.threads.datagrams},
        {"bytes_sent", t.threads.bytes},
        {"deadline_misses", t.threads.deadline_misses},
        {"late_datagrams", t.threads.late_datagrams},
        {"send_errors", t.threads.send_errors},
        {"lease_waits", t.threads.permit_waits},
        {"read_failures", t.threads.read_failures},
        {"send_late_p50_us", lateness_text(t.threads.lateness, 0.50)},
        {"send_late_p99_us", lateness_text(t.threads.lateness, 0.99)},
        {"send_late_max_us", uint64_t(std::max<int64_t>(0, t.threads.lateness_max_ns) / 1000)},
        {"send_late_histogram", lateness_histogram(t.threads.lateness)},
        {"extent_reads", t.threads.reads},
        {"rtsp_connections", rtsp_->counters().connections_open},
        {"rtsp_requests", rtsp_->counters().requests},
        {"rtsp_protocol_errors", rtsp_->counters().protocol_errors},
    };
    for (auto& kv : failover_dict()) d.push_back(kv);
    if (gate_) {
        auto c = gate_->counters();
        auto ctl = gate_->control();
        if (ctl) {
            d.push_back({"gate_role", std::string(ctl->role == gate::Role::Active ? "active" : "standby")});
            d.push_back({"gate_fence", ctl->fence});
        }
        if (c)
            for (int i = 0; i < GATE_COUNTER__COUNT; ++i)
                d.push_back({"gate_" + std::string(gate::counter_name(gate_counter(i))), c->value[size_t(i)]});
    } else {
        d.push_back({"gate_role", std::string("none")});
    }
    reply.ok(d);
}

void Daemon::asset_add(dbus::AssetAddRequest req, dbus::Reply<dbus::Dict> reply) {
    if (ingests_.load() >= kMaxConcurrentIngests) {
        reply.fail(make_error(EBUSY, "already " + std::to_string(kMaxConcurrentIngests) + " ingests running; try again later"));
        return;
    }
    ++ingests_;
    // Ingest reads and writes the whole asset: off the event loop, answered from it.
    auto shared = std::make_shared<dbus::Reply<dbus::Dict>>(std::move(reply));
    std::thread([this, req, shared] {
        auto r = store_->ingest(req.path, req.name);
        api_->post([this, r, shared] {
            --ingests_;
            if (!r) {
                log(Level::kWarning, "ingest refused: " + r.error().message);
                shared->fail(r.error());
                return;
            }
            log(Level::kInfo, "ingested " + r->name, {{"ASSET", r->name}, {"BYTES", std::to_string(r->bytes)}});
            failover_->parameters_changed();
            shared->ok(asset_dict(*r));
        });
    }).detach();
}

void Daemon::asset_list(dbus::Reply<dbus::List> reply) {
    dbus::List l;
    for (auto& a : store_->list()) l.push_back(asset_dict(a));
    reply.ok(l);
}

void Daemon::asset_show(std::string name, dbus::Reply<dbus::Dict> reply) {
    auto a = store_->find(name);
    if (!a) return reply.fail(make_error(ENOENT, "no asset '" + name + "'"));
    auto d = asset_dict(a->info());
    d.push_back({"in_use", engine_->asset_in_use(name)});
    reply.ok(d);
}

void Daemon::asset_remove(std::string name, dbus::Reply<void> reply) {
    if (engine_->asset_in_use(name))
        return reply.fail(make_error(EBUSY, "asset '" + name + "' is being streamed; tear its sessions down first"));
    auto s = store_->remove(name);
    if (s) failover_->parameters_changed();
    reply.complete(s);
}

void Daemon::sessions(bool privileged, dbus::Reply<dbus::List> reply) {
    dbus::List l;
    for (auto& v : engine_->sessions())
        // An RTSP session id lets whoever holds it control the session: root's only.
        l.push_back({{"id", privileged ? v.id : std::string("(root only)")},
                     {"asset", v.asset},
                     {"client", v.client},
                     {"transport", v.transport},
                     {"state", v.state},
                     {"bitrate_bps", v.bitrate_bps},
                     {"position_ms", uint64_t(v.position_ns / 1'000'000)},
                     {"datagrams", v.counters.datagrams},
                     {"bytes", v.counters.bytes},
                     {"deadline_misses", v.counters.deadline_misses},
                     {"late_datagrams", v.counters.late_datagrams},
                     {"send_errors", v.counters.send_errors}});
    reply.ok(l);
}

void Daemon::reply_failover(const Result<failover::State>& r, dbus::Reply<dbus::Dict>& reply) {
    if (!r) return reply.fail(r.error());
    reply.ok(failover_dict());
}

void Daemon::set_config_type(dbus::FailoverConfig c, dbus::Reply<dbus::Dict> reply) {
    failover::Controller::TypeSettings ts;
    auto addr = [](const std::optional<std::string>& s, std::optional<in_addr>& out) -> Status {
        if (!s) return {};
        in_addr a{};
        if (inet_pton(AF_INET, s->c_str(), &a) != 1) return make_error(EINVAL, "'" + *s + "' is not an IPv4 address");
        out = a;
        return {};
    };
    if (auto s = addr(c.partner_private, ts.partner_private); !s) return reply.fail(s.error());
    if (auto s = addr(c.partner_admin, ts.partner_admin); !s) return reply.fail(s.error());
    ts.heartbeat_ms = c.heartbeat_ms;
    ts.max_missed = c.max_missed;
    reply_failover(failover_->set_config_type(c.role == dbus::Role::Primary, ts), reply);
}

void Daemon::start_streaming(dbus::Reply<dbus::Dict> reply) { reply_failover(failover_->start_streaming(), reply); }
void Daemon::stop_streaming(dbus::Reply<dbus::Dict> reply) { reply_failover(failover_->stop_streaming(), reply); }
void Daemon::report_failure(dbus::FailureReport r, dbus::Reply<dbus::Dict> reply) {
    using failover::FailureReason;
    FailureReason reason = r.cause == "disk"       ? FailureReason::kDisk
                           : r.cause == "software" ? FailureReason::kSoftware
                           : r.cause == "health"   ? FailureReason::kHealth
                                                   : FailureReason::kOperator;  // the API checked the cause
    log(Level::kWarning, "failure reported (" + r.cause + "): " + r.detail);
    reply_failover(failover_->report_failure(reason, r.detail), reply);
}
void Daemon::failover_unsync(dbus::Reply<dbus::Dict> reply) { reply_failover(failover_->failover_unsync(), reply); }

void Daemon::failover_sync(dbus::Reply<dbus::Dict> reply) {
    // The exchange with the primary takes up to a round trip (2 s at most): off the loop.
    auto shared = std::make_shared<dbus::Reply<dbus::Dict>>(std::move(reply));
    std::thread([this, shared] {
        auto r = failover_->failover_sync();
        api_->post([this, r, shared] { reply_failover(r, *shared); });
    }).detach();
}

}  // namespace of::daemon
