// The D-Bus API layer (userspace/dbus) and foctl, against a private dbus-daemon started per test.
// The Handler here is an in-memory recorder: these tests are about the API layer (marshalling,
// validation, privilege, async replies, error names, foctl's output), not the daemon behind it.

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>
#include <systemd/sd-bus.h>
#include <systemd/sd-event.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <future>
#include <limits>
#include <map>
#include <memory>
#include <mutex>
#include <random>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "dbus/api.h"
#include "dbus/client.h"
#include "dbus/marshal.h"
#include "dbus/render.h"
#include "dbus/server.h"
#include "dbus/value.h"

extern char** environ;

namespace {

using namespace of::dbus;
using namespace std::chrono_literals;
namespace fs = std::filesystem;

constexpr auto kCallTimeout = std::chrono::microseconds(20s);  // generous: 2 shared cores
const std::string kFoctl = OF_BINARY_DIR "/tools/foctl/foctl";
const std::string kPolicy = OF_SOURCE_DIR "/systemd/org.oneframe.Daemon.conf";

// ---------------------------------------------------------------------------------------------
// Processes

struct Proc {
    int status = -1;  // exit status, or 128 + signal
    std::string out, err;
    bool timed_out = false;
};

// Runs argv (argv[0] a path) with the test's environment minus bus variables, plus env; bounded.
Proc run(const std::vector<std::string>& argv, const std::vector<std::string>& env = {},
        std::chrono::milliseconds bound = 60s) {
    Proc res;
    std::vector<std::string> envs;
    for (char** e = environ; *e; ++e) {
        const std::string v = *e;
        if (v.rfind("ONEFRAME_BUS=", 0) == 0 || v.rfind("DBUS_", 0) == 0) continue;
        envs.push_back(v);
    }
    envs.insert(envs.end(), env.begin(), env.end());
    std::vector<char*> cargv, cenv;
    for (const auto& a : argv) cargv.push_back(const_cast<char*>(a.c_str()));
    cargv.push_back(nullptr);
    for (const auto& e : envs) cenv.push_back(const_cast<char*>(e.c_str()));
    cenv.push_back(nullptr);

    int out[2], err[2];
    if (pipe2(out, O_CLOEXEC) != 0 || pipe2(err, O_CLOEXEC) != 0) return res;
    const pid_t pid = fork();
    if (pid < 0) return res;
    if (pid == 0) {  // only async-signal-safe calls between fork and exec
        dup2(out[1], 1);
        dup2(err[1], 2);
        execve(cargv[0], cargv.data(), cenv.data());
        _exit(127);
    }
    close(out[1]);
    close(err[1]);
    const auto deadline = std::chrono::steady_clock::now() + bound;
    pollfd fds[2] = {{out[0], POLLIN, 0}, {err[0], POLLIN, 0}};
    std::string* dst[2] = {&res.out, &res.err};
    int open_fds = 2;
    while (open_fds > 0) {
        const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
        if (left.count() <= 0) {
            res.timed_out = true;
            kill(pid, SIGKILL);
            break;
        }
        if (poll(fds, 2, int(left.count())) < 0 && errno != EINTR) break;
        for (int i = 0; i < 2; ++i) {
            if (fds[i].fd < 0 || !(fds[i].revents & (POLLIN | POLLHUP | POLLERR))) continue;
            char buf[4096];
            const ssize_t n = read(fds[i].fd, buf, sizeof buf);
            if (n > 0) {
                dst[i]->append(buf, size_t(n));
            } else {
                close(fds[i].fd);
                fds[i].fd = -1;
                --open_fds;
            }
        }
    }
    for (auto& f : fds)
        if (f.fd >= 0) close(f.fd);
    int st = 0;
    waitpid(pid, &st, 0);
    res.status = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
    return res;
}

// argv prefix that runs a program as nobody (uid/gid 65534), no supplementary groups, no
// capabilities; with net_admin, keeping CAP_NET_ADMIN (effective, through the ambient set).
std::vector<std::string> as_nobody(bool net_admin = false) {
    std::vector<std::string> v = {"/usr/bin/setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"};
    if (net_admin) {
        v.push_back("--inh-caps=-all,+net_admin");
        v.push_back("--ambient-caps=+net_admin");
    } else {
        v.push_back("--inh-caps=-all");
    }
    v.push_back("--");
    return v;
}

std::vector<std::string> concat(std::vector<std::string> a, const std::vector<std::string>& b) {
    a.insert(a.end(), b.begin(), b.end());
    return a;
}

// ---------------------------------------------------------------------------------------------
// A private dbus-daemon

struct TempDir {
    std::string path;
    TempDir() {
        char t[] = "/tmp/of-dbus-test-XXXXXX";
        if (mkdtemp(t)) {
            path = t;
            chmod(t, 0755);  // the unprivileged callers must reach the socket
        }
    }
    ~TempDir() {
        std::error_code ec;
        if (!path.empty()) fs::remove_all(path, ec);
    }
};

enum class Policy {
    AllowAll,      // everything allowed: only the daemon's own check stands
    SystemLike,    // the system bus's default-deny rules plus systemd/org.oneframe.Daemon.conf
};

class PrivateBus {
public:
    // Empty address when dbus-daemon could not be started; why says why.
    explicit PrivateBus(Policy policy) {
        if (access("/usr/bin/dbus-daemon", X_OK) != 0) {
            why = "/usr/bin/dbus-daemon is not installed (Debian package dbus)";
            return;
        }
        if (dir_.path.empty()) {
            why = "mkdtemp failed";
            return;
        }
        const std::string conf = dir_.path + "/bus.conf";
        std::ofstream f(conf);
        f << "<!DOCTYPE busconfig PUBLIC \"-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN\"\n"
             " \"http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd\">\n<busconfig>\n"
             "  <type>session</type>\n"
          << "  <listen>unix:path=" << dir_.path << "/bus</listen>\n"
          << "  <auth>EXTERNAL</auth>\n";
        if (policy == Policy::AllowAll) {
            f << "  <policy context=\"default\">\n"
                 "    <allow user=\"*\"/>\n"
                 "    <allow send_destination=\"*\" eavesdrop=\"true\"/>\n"
                 "    <allow eavesdrop=\"true\"/>\n"
                 "    <allow own=\"*\"/>\n"
                 "  </policy>\n";
        } else {
            // The default rules of Debian's /usr/share/dbus-1/system.conf.
            f << "  <policy context=\"default\">\n"
                 "    <allow user=\"*\"/>\n"
                 "    <deny own=\"*\"/>\n"
                 "    <deny send_type=\"method_call\"/>\n"
                 "    <allow send_type=\"signal\"/>\n"
                 "    <allow send_requested_reply=\"true\" send_type=\"method_return\"/>\n"
                 "    <allow send_requested_reply=\"true\" send_type=\"error\"/>\n"
                 "    <allow receive_type=\"method_call\"/>\n"
                 "    <allow receive_type=\"method_return\"/>\n"
                 "    <allow receive_type=\"error\"/>\n"
                 "    <allow receive_type=\"signal\"/>\n"
                 "    <allow send_destination=\"org.freedesktop.DBus\" send_interface=\"org.freedesktop.DBus\"/>\n"
                 "    <allow send_destination=\"org.freedesktop.DBus\" send_interface=\"org.freedesktop.DBus.Introspectable\"/>\n"
                 "  </policy>\n"
              << "  <include>" << kPolicy << "</include>\n";
        }
        f << "</busconfig>\n";
        f.close();

        int p[2];
        if (pipe2(p, O_CLOEXEC) != 0) {
            why = "pipe failed";
            return;
        }
        const std::string log = dir_.path + "/dbus-daemon.log";
        const std::string arg = "--config-file=" + conf;
        pid_ = fork();
        if (pid_ == 0) {
            setsid();  // PID 1 here does not reap orphans; the destructor reaps this child
            int logfd = open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
            dup2(p[1], 1);
            if (logfd >= 0) dup2(logfd, 2);
            execl("/usr/bin/dbus-daemon", "dbus-daemon", arg.c_str(), "--nofork", "--nosyslog", "--print-address",
                  static_cast<char*>(nullptr));
            _exit(127);
        }
        close(p[1]);
        // dbus-daemon prints its address once it listens.
        std::string line;
        const auto deadline = std::chrono::steady_clock::now() + 20s;
        while (line.find('\n') == std::string::npos && std::chrono::steady_clock::now() < deadline) {
            pollfd pfd{p[0], POLLIN, 0};
            if (poll(&pfd, 1, 200) <= 0) continue;
            char buf[512];
            const ssize_t n = read(p[0], buf, sizeof buf);
            if (n <= 0) break;
            line.append(buf, size_t(n));
        }
        close(p[0]);
        if (line.find('\n') == std::string::npos) {
            why = "dbus-daemon did not start; see " + log;
            return;
        }
        address = dir_.path.empty() ? "" : "unix:path=" + dir_.path + "/bus";
    }

    ~PrivateBus() {
        if (pid_ > 0) {
            kill(pid_, SIGTERM);
            waitpid(pid_, nullptr, 0);
        }
    }

    std::string address;
    std::string why;

private:
    TempDir dir_;
    pid_t pid_ = -1;
};

// ---------------------------------------------------------------------------------------------
// The recording Handler

Dict status_dict() {
    return {{"version", "test-1"},
            {"uptime_ms", uint64_t(123456)},
            {"healthy", true},
            {"offset_ns", std::numeric_limits<int64_t>::min()},
            {"bytes_max", std::numeric_limits<uint64_t>::max()},
            {"load", 0.25},
            {"note", "naïve ✓ \"q\"\tend"}};
}

class RecordingHandler : public Handler {
public:
    // Behaviour switches, set before the calls they affect.
    std::atomic<bool> defer_add{false};
    std::atomic<bool> drop_show{false};
    std::atomic<bool> throw_in_sessions{false};
    std::atomic<bool> last_sessions_privileged{false};

    void status(Reply<Dict> reply) override {
        record("Status", reply);
        reply.ok(status_dict());
    }

    void asset_add(AssetAddRequest req, Reply<Dict> reply) override {
        record("AssetAdd " + req.path + " " + req.name, reply);
        if (defer_add) {
            std::lock_guard lock(mu_);
            deferred_.emplace_back(req, std::move(reply));
            cv_.notify_all();
            return;
        }
        reply.complete(add(req));
    }

    void asset_list(Reply<List> reply) override {
        record("AssetList", reply);
        std::lock_guard lock(mu_);
        reply.ok(assets_);
    }

    void asset_show(std::string name, Reply<Dict> reply) override {
        record("AssetShow " + name, reply);
        if (drop_show) return;  // the Reply goes out of scope unanswered
        std::lock_guard lock(mu_);
        for (const Dict& a : assets_)
            if (*find_string(a, "name") == name) return reply.ok(a);
        reply.fail(of::make_error(ENOENT, "no asset named '" + name + "'"));
    }

    void asset_remove(std::string name, Reply<void> reply) override {
        record("AssetRemove " + name, reply);
        std::lock_guard lock(mu_);
        for (auto it = assets_.begin(); it != assets_.end(); ++it) {
            if (*find_string(*it, "name") == name) {
                assets_.erase(it);
                return reply.ok();
            }
        }
        reply.fail(of::make_error(ENOENT, "no asset named '" + name + "'"));
    }

    void sessions(bool privileged, Reply<List> reply) override {
        last_sessions_privileged = privileged;
        record("Sessions", reply);
        if (throw_in_sessions) throw std::runtime_error("boom");
        reply.ok({{{"id", "s1"}, {"asset", "news"}, {"bitrate_bps", uint64_t(3750000)}, {"state", "playing"}},
                  {{"id", "s22"}, {"asset", "weather"}, {"bitrate_bps", uint64_t(15000000)}, {"paused", true}}});
    }

    void set_config_type(FailoverConfig c, Reply<Dict> reply) override {
        std::string rec = std::string("SetConfigType ") + (c.role == Role::Primary ? "primary" : "secondary");
        if (c.partner_admin) rec += " admin=" + *c.partner_admin;
        if (c.partner_private) rec += " private=" + *c.partner_private;
        if (c.heartbeat_ms) rec += " hb=" + std::to_string(*c.heartbeat_ms);
        if (c.max_missed) rec += " missed=" + std::to_string(*c.max_missed);
        record(rec, reply);
        {
            std::lock_guard lock(mu_);
            role_ = c.role;
        }
        reply.ok(state());
    }

    void start_streaming(Reply<Dict> reply) override {
        record("StartStreaming", reply);
        reply.ok(state());
    }
    void stop_streaming(Reply<Dict> reply) override {
        record("StopStreaming", reply);
        reply.ok(state());
    }
    void failover_sync(Reply<Dict> reply) override {
        record("FailoverSync", reply);
        std::lock_guard lock(mu_);
        if (role_ != Role::Secondary) return reply.fail(of::make_error(EBADFD, "failover_sync needs a secondary"));
        reply.ok({{"failover_type", "secondary"}, {"failover_state", "Secondary_Synchronized"}});
    }
    void failover_unsync(Reply<Dict> reply) override {
        record("FailoverUnsync", reply);
        reply.ok(state());
    }
    void report_failure(FailureReport r, Reply<Dict> reply) override {
        record("ReportFailure " + r.cause + " '" + r.detail + "'", reply);
        reply.ok(state());
    }

    // Test-thread side.
    std::vector<std::string> calls() {
        std::lock_guard lock(mu_);
        return calls_;
    }
    bool wait_calls(size_t n, std::chrono::milliseconds bound = 20s) {
        std::unique_lock lock(mu_);
        return cv_.wait_for(lock, bound, [&] { return calls_.size() >= n; });
    }
    bool wait_deferred(size_t n, std::chrono::milliseconds bound = 20s) {
        std::unique_lock lock(mu_);
        return cv_.wait_for(lock, bound, [&] { return deferred_.size() >= n; });
    }
    // Loop-thread side (run through Server::post).
    void complete_deferred(const std::string& name) {
        std::lock_guard lock(mu_);
        for (auto& [req, reply] : deferred_)
            if (req.name == name) reply.complete(add_locked(req));
    }
    void fail_deferred(const std::string& name, const of::Error& e) {
        std::lock_guard lock(mu_);
        for (auto& [req, reply] : deferred_)
            if (req.name == name) reply.fail(e);
    }
    void drop_all_deferred() {
        std::lock_guard lock(mu_);
        deferred_.clear();
    }

private:
    void record(const std::string& what, const ReplyBase& r) {
        std::lock_guard lock(mu_);
        calls_.push_back(what + (r.caller().uid ? " uid=" + std::to_string(*r.caller().uid) : ""));
        cv_.notify_all();
    }
    of::Result<Dict> add(const AssetAddRequest& req) {
        std::lock_guard lock(mu_);
        return add_locked(req);
    }
    of::Result<Dict> add_locked(const AssetAddRequest& req) {
        for (const Dict& a : assets_)
            if (*find_string(a, "name") == req.name) return of::make_error(EEXIST, "asset '" + req.name + "' exists");
        Dict a{{"name", req.name},
               {"path", req.path},
               {"bytes", uint64_t(188 * 1000 * (assets_.size() + 1))},
               {"duration_ms", uint64_t(20000)},
               {"bitrate_bps", uint64_t(3750000)}};
        assets_.push_back(a);
        return a;
    }
    Dict state() {
        std::lock_guard lock(mu_);
        return {{"failover_type", role_ == Role::Primary ? "primary" : "secondary"}, {"failover_state", "Offline"}};
    }

    std::mutex mu_;
    std::condition_variable cv_;
    std::vector<std::string> calls_;
    List assets_;
    Role role_ = Role::Primary;
    std::vector<std::pair<AssetAddRequest, Reply<Dict>>> deferred_;
};

// ---------------------------------------------------------------------------------------------
// The server side on its own thread, as in the daemon: a bus attached to an sd-event loop.

class ServerThread {
public:
    ServerThread(const std::string& address, RecordingHandler& h, ServerOptions opt = {}) : handler_(h) {
        std::promise<of::Status> ready;
        auto fut = ready.get_future();
        // The promise lives on the server thread, so set_value never races with its destruction.
        thread_ = std::thread([this, address, opt, p = std::move(ready)]() mutable { body(address, opt, p); });
        status_ = fut.get();
        if (!status_) thread_.join();
    }
    ~ServerThread() { stop(); }

    const of::Status& status() const { return status_; }
    Server& server() { return *server_; }

    void stop() {
        if (!thread_.joinable()) return;
        // Replies must be completed or dropped on the loop thread, before the bus closes.
        server_->post([this] {
            handler_.drop_all_deferred();
            sd_event_exit(event_, 0);
        });
        thread_.join();
    }

private:
    void body(const std::string& address, ServerOptions opt, std::promise<of::Status>& ready) {
        sd_event_new(&event_);
        sd_bus_new(&bus_);
        sd_bus_set_address(bus_, address.c_str());
        sd_bus_set_bus_client(bus_, 1);
        int r = sd_bus_start(bus_);
        if (r >= 0) r = sd_bus_attach_event(bus_, event_, 0);
        of::Status st;
        if (r < 0) {
            st = of::errno_error("server bus", -r);
        } else {
            auto s = Server::create(bus_, handler_, opt);
            if (s) server_ = std::move(*s);
            else st = s.error();
        }
        const bool ok = st.ok();
        ready.set_value(st);
        if (ok) sd_event_loop(event_);
        server_.reset();
        sd_bus_flush_close_unref(bus_);
        sd_event_unref(event_);
    }

    RecordingHandler& handler_;
    std::thread thread_;
    of::Status status_;
    sd_event* event_ = nullptr;
    sd_bus* bus_ = nullptr;
    std::unique_ptr<Server> server_;
};

// ---------------------------------------------------------------------------------------------
// Fixture: a private bus, the server, a client.

class DbusTest : public ::testing::Test {
protected:
    void SetUp() override { start(Policy::AllowAll); }

    void start(Policy policy, ServerOptions opt = {}) {
        if (geteuid() != 0)
            GTEST_SKIP() << "needs root: the changing methods are refused to others, and the tests drop to uid 65534";
        bus_ = std::make_unique<PrivateBus>(policy);
        if (bus_->address.empty()) GTEST_SKIP() << bus_->why;
        server_ = std::make_unique<ServerThread>(bus_->address, handler_, opt);
        ASSERT_TRUE(server_->status().ok()) << server_->status().error().message;
        auto c = Client::connect(bus_->address, kCallTimeout);
        ASSERT_TRUE(c.ok()) << c.error().message;
        client_ = std::make_unique<Client>(std::move(*c));
    }

    void TearDown() override {
        client_.reset();
        server_.reset();
        bus_.reset();
    }

    of::Result<Response> call(const Method& m, std::vector<Arg> args = {}) { return client_->call(m, args, kCallTimeout); }

    Dict call_dict(const Method& m, std::vector<Arg> args = {}) {
        auto r = call(m, std::move(args));
        EXPECT_TRUE(r.ok()) << m.name << ": " << (r.ok() ? "" : r.error().message);
        if (!r.ok() || !std::holds_alternative<Dict>(*r)) return {};
        return std::get<Dict>(*r);
    }
    List call_list(const Method& m) {
        auto r = call(m);
        EXPECT_TRUE(r.ok()) << m.name << ": " << (r.ok() ? "" : r.error().message);
        if (!r.ok() || !std::holds_alternative<List>(*r)) return {};
        return std::get<List>(*r);
    }

    // A raw sd-bus call, for the exact D-Bus error name. Returns "" on success.
    std::string raw_error(sd_bus* bus, const char* member, const char* sig, const char* arg = nullptr) {
        sd_bus_error err = SD_BUS_ERROR_NULL;
        sd_bus_message* reply = nullptr;
        int r = arg ? sd_bus_call_method(bus, kBusName, kObjectPath, kInterface, member, &err, &reply, sig, arg)
                    : sd_bus_call_method(bus, kBusName, kObjectPath, kInterface, member, &err, &reply, sig);
        std::string name = r < 0 ? (err.name ? err.name : "errno " + std::to_string(-r)) : "";
        sd_bus_error_free(&err);
        sd_bus_message_unref(reply);
        return name;
    }

    // busctl as nobody; returns stdout and stderr ("Call failed: MESSAGE" on an error).
    std::string busctl_as_nobody(const Method& m, const std::vector<std::string>& args) {
        auto argv = concat(as_nobody(false), {"/usr/bin/busctl", "--address=" + bus_->address, "call", kBusName,
                                              kObjectPath, kInterface, m.name});
        if (*m.signature) argv.push_back(m.signature);
        argv = concat(argv, args);
        Proc r = run(argv);
        EXPECT_FALSE(r.timed_out);
        return r.out + r.err;
    }

    std::string dbus_send_as_nobody(bool net_admin, const std::string& member, const std::vector<std::string>& args) {
        auto argv = concat(as_nobody(net_admin), {"/usr/bin/dbus-send", "--bus=" + bus_->address, "--print-reply",
                                                  "--dest=" + std::string(kBusName), kObjectPath,
                                                  std::string(kInterface) + "." + member});
        argv = concat(argv, args);
        Proc r = run(argv);
        EXPECT_FALSE(r.timed_out);
        return r.out + r.err;
    }

    RecordingHandler handler_;
    std::unique_ptr<PrivateBus> bus_;
    std::unique_ptr<ServerThread> server_;
    std::unique_ptr<Client> client_;
};

bool have_setpriv_and_dbus_send() {
    return access("/usr/bin/setpriv", X_OK) == 0 && access("/usr/bin/dbus-send", X_OK) == 0 &&
           access("/usr/bin/busctl", X_OK) == 0;
}

// =============================================================================================
// Pure functions: UTF-8, errors, rendering

TEST(DbusValue, Utf8SanitizeReplacesWhatDbusRefuses) {
    EXPECT_TRUE(utf8_valid("plain ascii"));
    EXPECT_TRUE(utf8_valid("naïve ✓ 😀"));
    EXPECT_EQ(utf8_sanitize("naïve ✓ 😀"), "naïve ✓ 😀");
    const std::string fffd = "\xEF\xBF\xBD";
    EXPECT_EQ(utf8_sanitize("a\xFF" "b"), "a" + fffd + "b");
    EXPECT_EQ(utf8_sanitize("\xC0\xAF"), fffd + fffd);               // overlong '/'
    EXPECT_EQ(utf8_sanitize("\xED\xA0\x80"), fffd + fffd + fffd);    // surrogate U+D800
    EXPECT_EQ(utf8_sanitize("\xEF\xBF\xBE"), fffd + fffd + fffd);    // non-character U+FFFE
    EXPECT_EQ(utf8_sanitize("\xF4\x90\x80\x80"), fffd + fffd + fffd + fffd);  // past U+10FFFF
    EXPECT_EQ(utf8_sanitize(std::string("a\0b", 3)), "a" + fffd + "b");
    EXPECT_EQ(utf8_sanitize("\xE2\x9C"), fffd + fffd);  // truncated sequence
}

TEST(DbusErrors, NamesAndCodesMapBothWays) {
    EXPECT_EQ(error_name(ENOENT), "org.oneframe.Error.NotFound");
    EXPECT_EQ(error_name(ESRCH), "org.oneframe.Error.NotFound");
    EXPECT_EQ(error_name(EEXIST), "org.oneframe.Error.Exists");
    EXPECT_EQ(error_name(EINVAL), "org.oneframe.Error.Invalid");
    EXPECT_EQ(error_name(EBADFD), "org.oneframe.Error.Refused");
    EXPECT_EQ(error_name(EPERM), "org.oneframe.Error.AccessDenied");
    EXPECT_EQ(error_name(EACCES), "org.oneframe.Error.AccessDenied");
    EXPECT_EQ(error_name(EOPNOTSUPP), "org.oneframe.Error.NotSupported");
    EXPECT_EQ(error_name(E2BIG), "org.oneframe.Error.LimitExceeded");
    EXPECT_EQ(error_name(ETIMEDOUT), "org.oneframe.Error.Timeout");
    EXPECT_EQ(error_name(EIO), "org.oneframe.Error.Failed");
    EXPECT_EQ(error_name(EXDEV), "org.oneframe.Error.Failed");
    EXPECT_EQ(error_code("org.oneframe.Error.NotFound"), ENOENT);
    EXPECT_EQ(error_code("org.oneframe.Error.Refused"), EBADFD);
    EXPECT_EQ(error_code("org.oneframe.Error.AccessDenied"), EPERM);
    EXPECT_EQ(error_code("org.oneframe.Error.Failed"), EIO);
    EXPECT_EQ(error_code("org.oneframe.Error.SomethingNew"), EIO);
    EXPECT_EQ(error_code("org.freedesktop.DBus.Error.Failed"), 0);
    // Every code survives a round trip up to its class.
    for (int code = 1; code < 134; ++code)
        EXPECT_EQ(error_name(error_code(error_name(code))), error_name(code)) << code;
}

TEST(DbusApi, MethodTableIsConsistent) {
    for (const Method* m : kMethods) {
        EXPECT_EQ(find_method(m->name), m);
        // As many argument names as arguments in the signature (all arguments here are one
        // character or a{sv}).
        std::string sig = m->signature;
        size_t args = 0;
        for (size_t i = 0; i < sig.size(); ++i, ++args)
            if (sig.compare(i, 5, "a{sv}") == 0) i += 4;
        size_t names = 0;
        for (std::string_view n = m->arg_names; !n.empty();) {
            ++names;
            const size_t sp = n.find(' ');
            n = sp == std::string_view::npos ? std::string_view{} : n.substr(sp + 1);
        }
        EXPECT_EQ(args, names) << m->name;
    }
    EXPECT_EQ(find_method("Nope"), nullptr);
}

TEST(DbusRender, JsonIsExactAndEscaped) {
    EXPECT_EQ(to_json(status_dict()),
              "{\"version\":\"test-1\",\"uptime_ms\":123456,\"healthy\":true,\"offset_ns\":-9223372036854775808,"
              "\"bytes_max\":18446744073709551615,\"load\":0.25,\"note\":\"naïve ✓ \\\"q\\\"\\tend\"}");
    EXPECT_EQ(json_string(std::string("a\x01\x1f\x7f\\/\n\r\b\f", 10)), "\"a\\u0001\\u001f\\u007f\\\\/\\n\\r\\b\\f\"");
    EXPECT_EQ(json_string("bad\xFF"), "\"bad\xEF\xBF\xBD\"");
    EXPECT_EQ(to_json(Value{std::nan("")}), "null");
    EXPECT_EQ(to_json(Value{-std::numeric_limits<double>::infinity()}), "null");
    EXPECT_EQ(to_json(Value{0.1}), "0.10000000000000001");
    EXPECT_EQ(to_json(List{}), "[]");
    EXPECT_EQ(to_json(Dict{}), "{}");
    EXPECT_EQ(to_json(List{{{"a", uint64_t(1)}}, {{"b", false}}}), "[{\"a\":1},{\"b\":false}]");
}

TEST(DbusRender, TextAndTableAlign) {
    EXPECT_EQ(to_text(Dict{{"name", "news"}, {"bitrate_bps", uint64_t(3750000)}, {"live", true}}),
              "name:        news\n"
              "bitrate_bps: 3750000\n"
              "live:        yes\n");
    EXPECT_EQ(to_table(List{{{"name", "news"}, {"bytes", uint64_t(5)}, {"note", "x"}},
                            {{"name", "weather-long"}, {"bytes", uint64_t(123456)}},
                            {{"name", "ü"}, {"bytes", int64_t(-1)}, {"extra", 1.5}}}),
              "name           bytes  note  extra\n"
              "news               5  x         -\n"
              "weather-long  123456  -         -\n"
              "ü                 -1  -       1.5\n");
    EXPECT_EQ(to_table(List{}), "");
    // A name from the daemon cannot drive the terminal.
    EXPECT_EQ(to_text(Value{std::string("evil\x1b[2J\nname\\")}), "evil\\x1b[2J\\nname\\\\");
}

// =============================================================================================
// Marshalling through real sd-bus messages

TEST_F(DbusTest, DictAndListMarshalBothWays) {
    auto roundtrip = [&](auto append, auto read, const ReadLimits& lim = {}) {
        sd_bus_message* m = nullptr;
        EXPECT_GE(sd_bus_message_new_method_call(client_->bus(), &m, kBusName, kObjectPath, kInterface, "X"), 0);
        auto s = append(m);
        EXPECT_TRUE(s.ok()) << (s.ok() ? "" : s.error().message);
        EXPECT_GE(sd_bus_message_seal(m, 1, 0), 0);
        EXPECT_GE(sd_bus_message_rewind(m, 1), 0);
        auto res = read(m, lim);
        sd_bus_message_unref(m);
        return res;
    };
    const Dict d = status_dict();
    auto back = roundtrip([&](sd_bus_message* m) { return append_dict(m, d); }, read_dict);
    ASSERT_TRUE(back.ok()) << back.error().message;
    EXPECT_EQ(*back, d);

    const List l = {d, {}, {{"only", false}}};
    auto lback = roundtrip([&](sd_bus_message* m) { return append_list(m, l); }, read_list);
    ASSERT_TRUE(lback.ok()) << lback.error().message;
    EXPECT_EQ(*lback, l);

    // Invalid UTF-8 is sanitized on the way out rather than failing the reply.
    auto bad = roundtrip([&](sd_bus_message* m) { return append_dict(m, Dict{{"k\xFF", "v\xC0"}}); }, read_dict);
    ASSERT_TRUE(bad.ok());
    EXPECT_EQ(*bad, (Dict{{"k\xEF\xBF\xBD", "v\xEF\xBF\xBD"}}));

    // Random bytes, sanitized, always make a valid message.
    std::mt19937 rng(42);
    for (int i = 0; i < 200; ++i) {
        std::string s(size_t(rng() % 40), '\0');
        for (char& c : s) c = char(rng());
        auto r = roundtrip([&](sd_bus_message* m) { return append_dict(m, Dict{{"k", s}}); }, read_dict);
        ASSERT_TRUE(r.ok()) << r.error().message;
        EXPECT_EQ(*find_string(*r, "k"), utf8_sanitize(s));
    }

    // Limits.
    Dict big;
    for (int i = 0; i < 5; ++i) big.emplace_back("k" + std::to_string(i), uint64_t(i));
    auto lim = roundtrip([&](sd_bus_message* m) { return append_dict(m, big); }, read_dict, ReadLimits{.max_entries = 4});
    ASSERT_FALSE(lim.ok());
    EXPECT_EQ(lim.error().code, E2BIG);
    auto klim = roundtrip([&](sd_bus_message* m) { return append_dict(m, Dict{{std::string(9, 'k'), true}}); }, read_dict,
                          ReadLimits{.max_key_bytes = 8});
    ASSERT_FALSE(klim.ok());
    EXPECT_EQ(klim.error().code, E2BIG);
    auto slim = roundtrip([&](sd_bus_message* m) { return append_dict(m, Dict{{"k", std::string(9, 's')}}); }, read_dict,
                          ReadLimits{.max_string_bytes = 8});
    ASSERT_FALSE(slim.ok());
    EXPECT_EQ(slim.error().code, E2BIG);
    auto llim = roundtrip([&](sd_bus_message* m) { return append_list(m, List(3)); }, read_list, ReadLimits{.max_items = 2});
    ASSERT_FALSE(llim.ok());
    EXPECT_EQ(llim.error().code, E2BIG);
}

TEST_F(DbusTest, ReaderWidensIntegersAndRefusesOtherShapes) {
    auto read_raw = [&](auto&& build) {
        sd_bus_message* m = nullptr;
        EXPECT_GE(sd_bus_message_new_method_call(client_->bus(), &m, kBusName, kObjectPath, kInterface, "X"), 0);
        build(m);
        EXPECT_GE(sd_bus_message_seal(m, 1, 0), 0);
        EXPECT_GE(sd_bus_message_rewind(m, 1), 0);
        auto res = read_dict(m);
        sd_bus_message_unref(m);
        return res;
    };
    auto w = read_raw([](sd_bus_message* m) {
        ASSERT_GE(sd_bus_message_append(m, "a{sv}", 7, "y", "y", uint8_t(200), "n", "n", int16_t(-3), "q", "q",
                                        uint16_t(65535), "i", "i", int32_t(-70000), "u", "u", uint32_t(4000000000u), "o",
                                        "o", "/a/b", "g", "g", "a{sv}"),
                  0);
    });
    ASSERT_TRUE(w.ok()) << w.error().message;
    EXPECT_EQ(*w, (Dict{{"y", uint64_t(200)},
                        {"n", int64_t(-3)},
                        {"q", uint64_t(65535)},
                        {"i", int64_t(-70000)},
                        {"u", uint64_t(4000000000u)},
                        {"o", "/a/b"},
                        {"g", "a{sv}"}}));

    auto nested = read_raw([](sd_bus_message* m) { ASSERT_GE(sd_bus_message_append(m, "a{sv}", 1, "k", "as", 1, "x"), 0); });
    ASSERT_FALSE(nested.ok());
    EXPECT_EQ(nested.error().code, EBADMSG);
    auto dup = read_raw([](sd_bus_message* m) { ASSERT_GE(sd_bus_message_append(m, "a{sv}", 2, "k", "b", 1, "k", "b", 0), 0); });
    ASSERT_FALSE(dup.ok());
    EXPECT_EQ(dup.error().code, EBADMSG);
    auto empty = read_raw([](sd_bus_message* m) { ASSERT_GE(sd_bus_message_append(m, "a{sv}", 1, "", "b", 1), 0); });
    ASSERT_FALSE(empty.ok());
    EXPECT_EQ(empty.error().code, EBADMSG);
    auto notdict = read_raw([](sd_bus_message* m) { ASSERT_GE(sd_bus_message_append(m, "s", "x"), 0); });
    ASSERT_FALSE(notdict.ok());
    EXPECT_EQ(notdict.error().code, EBADMSG);
}

// =============================================================================================
// Every method end to end

TEST_F(DbusTest, EveryMethodReachesTheHandlerAndReplies) {
    EXPECT_EQ(call_dict(method::Status), status_dict());

    Dict added = call_dict(method::AssetAdd, {"/srv/media/news.ts", "news"});
    EXPECT_EQ(*find_string(added, "name"), "news");
    EXPECT_EQ(*find_string(added, "path"), "/srv/media/news.ts");
    call_dict(method::AssetAdd, {"/srv/media/weather.ts", "weather"});

    List assets = call_list(method::AssetList);
    ASSERT_EQ(assets.size(), 2u);
    EXPECT_EQ(assets[0], added);
    EXPECT_EQ(*find_uint(assets[1], "bytes"), 376000u);

    EXPECT_EQ(call_dict(method::AssetShow, {"weather"}), assets[1]);

    auto removed = call(method::AssetRemove, {"news"});
    ASSERT_TRUE(removed.ok()) << removed.error().message;
    EXPECT_TRUE(std::holds_alternative<std::monostate>(*removed));
    EXPECT_EQ(call_list(method::AssetList).size(), 1u);

    List sessions = call_list(method::Sessions);
    ASSERT_EQ(sessions.size(), 2u);
    EXPECT_EQ(*find_bool(sessions[1], "paused"), true);

    Dict st = call_dict(method::SetConfigType,
                        {"secondary", Dict{{setting::PartnerAdmin, "10.0.0.1"},
                                           {setting::PartnerPrivate, "fd00::77:1"},
                                           {setting::HeartbeatMs, uint64_t(10)},
                                           {setting::MaxMissed, int64_t(3)}}});
    EXPECT_EQ(*find_string(st, "failover_type"), "secondary");
    EXPECT_EQ(*find_string(call_dict(method::FailoverSync), "failover_state"), "Secondary_Synchronized");
    call_dict(method::StartStreaming);
    call_dict(method::StopStreaming);
    call_dict(method::FailoverUnsync);
    call_dict(method::ReportFailure, {"health", "CPU package at 98 C"});

    // The handler saw exactly these calls; changing ones carry the caller's uid.
    EXPECT_EQ(handler_.calls(), (std::vector<std::string>{
                                    "Status",
                                    "AssetAdd /srv/media/news.ts news uid=0",
                                    "AssetAdd /srv/media/weather.ts weather uid=0",
                                    "AssetList",
                                    "AssetShow weather",
                                    "AssetRemove news uid=0",
                                    "AssetList",
                                    "Sessions",
                                    "SetConfigType secondary admin=10.0.0.1 private=fd00::77:1 hb=10 missed=3 uid=0",
                                    "FailoverSync uid=0",
                                    "StartStreaming uid=0",
                                    "StopStreaming uid=0",
                                    "FailoverUnsync uid=0",
                                    "ReportFailure health 'CPU package at 98 C' uid=0",
                                }));
    const ServerCounters c = server_->server().counters();
    EXPECT_EQ(c.calls, 14u);
    EXPECT_EQ(c.errors, 0u);
    EXPECT_EQ(c.pending, 0u);
}

TEST_F(DbusTest, HandlerErrorsBecomeNamedDbusErrors) {
    EXPECT_EQ(raw_error(client_->bus(), "AssetShow", "s", "nope"), "org.oneframe.Error.NotFound");
    EXPECT_EQ(raw_error(client_->bus(), "AssetRemove", "s", "nope"), "org.oneframe.Error.NotFound");
    EXPECT_EQ(raw_error(client_->bus(), "FailoverSync", ""), "org.oneframe.Error.Refused");
    call_dict(method::AssetAdd, {"/a.ts", "a"});
    auto again = call(method::AssetAdd, {"/a.ts", "a"});
    ASSERT_FALSE(again.ok());
    EXPECT_EQ(again.error().code, EEXIST);
    EXPECT_EQ(again.error().message, "asset 'a' exists");
    auto missing = call(method::AssetShow, {"nope"});
    ASSERT_FALSE(missing.ok());
    EXPECT_EQ(missing.error().code, ENOENT);
    EXPECT_EQ(missing.error().message, "no asset named 'nope'");
    EXPECT_EQ(server_->server().counters().errors, 5u);
}

TEST_F(DbusTest, IntrospectionListsEveryMethodWithItsArguments) {
    sd_bus_error err = SD_BUS_ERROR_NULL;
    sd_bus_message* reply = nullptr;
    ASSERT_GE(sd_bus_call_method(client_->bus(), kBusName, kObjectPath, "org.freedesktop.DBus.Introspectable",
                                 "Introspect", &err, &reply, ""),
              0)
        << err.message;
    const char* xml = nullptr;
    ASSERT_GE(sd_bus_message_read(reply, "s", &xml), 0);
    const std::string s = xml;
    sd_bus_message_unref(reply);
    EXPECT_NE(s.find(std::string("<interface name=\"") + kInterface + "\">"), std::string::npos) << s;
    for (const Method* m : kMethods) EXPECT_NE(s.find(std::string("<method name=\"") + m->name + "\">"), std::string::npos) << m->name;
    EXPECT_NE(s.find("<arg type=\"s\" name=\"path\" direction=\"in\"/>"), std::string::npos) << s;
    EXPECT_NE(s.find("<arg type=\"a{sv}\" name=\"settings\" direction=\"in\"/>"), std::string::npos) << s;
    EXPECT_NE(s.find("<arg type=\"aa{sv}\" name=\"result\" direction=\"out\"/>"), std::string::npos) << s;
}

// =============================================================================================
// Validation before the Handler

TEST_F(DbusTest, ArgumentsAreValidatedBeforeTheHandler) {
    auto refused = [&](const Method& m, std::vector<Arg> args, int code, const std::string& text) {
        auto r = call(m, std::move(args));
        ASSERT_FALSE(r.ok()) << m.name << " " << text;
        EXPECT_EQ(r.error().code, code) << r.error().message;
        EXPECT_NE(r.error().message.find(text), std::string::npos) << r.error().message;
    };
    refused(method::AssetAdd, {"relative/news.ts", "news"}, EINVAL, "is not absolute");
    refused(method::AssetAdd, {"", "news"}, EINVAL, "path is empty");
    refused(method::AssetAdd, {"/" + std::string(kMaxPathBytes, 'p'), "news"}, EINVAL, "the limit is 4095");
    refused(method::AssetAdd, {"/a.ts", ""}, EINVAL, "name is empty");
    refused(method::AssetShow, {std::string(kMaxNameBytes + 1, 'n')}, EINVAL, "the limit is 255");
    refused(method::AssetRemove, {""}, EINVAL, "name is empty");
    refused(method::SetConfigType, {"tertiary", Dict{}}, EINVAL, "neither primary nor secondary");
    refused(method::SetConfigType, {"primary", Dict{{"heartbeat", uint64_t(5)}}}, EINVAL, "unknown setting 'heartbeat'");
    refused(method::SetConfigType, {"primary", Dict{{setting::HeartbeatMs, uint64_t(0)}}}, EINVAL, "out of range 1..1000");
    refused(method::SetConfigType, {"primary", Dict{{setting::HeartbeatMs, uint64_t(60001)}}}, EINVAL, "out of range");
    refused(method::SetConfigType, {"primary", Dict{{setting::MaxMissed, int64_t(-1)}}}, EINVAL, "non-negative integer");
    refused(method::SetConfigType, {"primary", Dict{{setting::MaxMissed, "3"}}}, EINVAL, "non-negative integer");
    refused(method::SetConfigType, {"primary", Dict{{setting::PartnerAdmin, "example.com"}}}, EINVAL,
            "not an IPv4 or IPv6 address");
    refused(method::SetConfigType, {"primary", Dict{{setting::PartnerPrivate, uint64_t(1)}}}, EINVAL, "must be a string");
    Dict many;
    for (int i = 0; i < 17; ++i) many.emplace_back("k" + std::to_string(i), true);
    refused(method::SetConfigType, {"primary", many}, E2BIG, "more than 16 entries");
    refused(method::ReportFailure, {"meteor", "it hit"}, EINVAL, "is not one of disk, software, health, operator");
    refused(method::ReportFailure, {"health", ""}, EINVAL, "detail is empty");
    refused(method::ReportFailure, {"health", std::string(kMaxFailureDetailBytes + 1, 'x')}, EINVAL, "the limit is 200");
    refused(method::ReportFailure, {"health", "two\nlines"}, EINVAL, "control characters");

    // None of these reached the handler.
    EXPECT_TRUE(handler_.calls().empty());
    EXPECT_EQ(server_->server().counters().invalid, 19u);

    // The wire format is checked by sd-bus before us; settings may use any integer type.
    EXPECT_EQ(raw_error(client_->bus(), "AssetShow", "u", nullptr), "org.freedesktop.DBus.Error.InvalidArgs");
    sd_bus_error err = SD_BUS_ERROR_NULL;
    sd_bus_message* reply = nullptr;
    ASSERT_GE(sd_bus_call_method(client_->bus(), kBusName, kObjectPath, kInterface, "SetConfigType", &err, &reply,
                                 "sa{sv}", "primary", 2, "heartbeat_ms", "u", uint32_t(20), "max_missed", "q", uint16_t(4)),
              0)
        << err.message;
    sd_bus_message_unref(reply);
    EXPECT_EQ(handler_.calls(), std::vector<std::string>{"SetConfigType primary hb=20 missed=4 uid=0"});
}

TEST_F(DbusTest, ClientChecksItsOwnSide) {
    auto sig = call(method::AssetShow, {uint64_t(3)});
    ASSERT_FALSE(sig.ok());
    EXPECT_EQ(sig.error().code, EINVAL);
    EXPECT_EQ(sig.error().message, "AssetShow takes (s), not (t)");

    const Method bogus{"NoSuchMethod", "", "", Returns::Dict, Access::Read};
    auto unknown = call(bogus);
    ASSERT_FALSE(unknown.ok());
    EXPECT_EQ(unknown.error().code, EOPNOTSUPP);

    call_dict(method::AssetAdd, {"/a.ts", "a"});
    call_dict(method::AssetAdd, {"/b.ts", "b"});
    auto limited = client_->call(method::AssetList, {}, kCallTimeout, ReadLimits{.max_items = 1});
    ASSERT_FALSE(limited.ok());
    EXPECT_EQ(limited.error().code, E2BIG);
    EXPECT_NE(limited.error().message.find("bad reply to AssetList"), std::string::npos);
}

// =============================================================================================
// Asynchronous completion

TEST_F(DbusTest, RepliesCompleteLaterOnTheLoopThread) {
    handler_.defer_add = true;
    // Three ingests in flight at once, each from its own connection.
    std::vector<std::future<of::Result<Response>>> f;
    for (int i = 0; i < 3; ++i) {
        f.push_back(std::async(std::launch::async, [&, i] {
            auto c = Client::connect(bus_->address, kCallTimeout);
            if (!c) return of::Result<Response>(c.error());
            return c->call(method::AssetAdd, {"/m/" + std::to_string(i) + ".ts", "a" + std::to_string(i)}, kCallTimeout);
        }));
    }
    ASSERT_TRUE(handler_.wait_deferred(3));
    // The bus keeps serving meanwhile.
    EXPECT_EQ(call_dict(method::Status), status_dict());
    EXPECT_EQ(server_->server().counters().pending, 3u);
    for (auto& fut : f) EXPECT_EQ(fut.wait_for(0s), std::future_status::timeout);

    // Complete them out of order, from this (non-loop) thread through post().
    server_->server().post([this] { handler_.complete_deferred("a2"); });
    server_->server().post([this] { handler_.fail_deferred("a0", of::make_error(EBADMSG, "not MPEG-TS: no sync byte at offset 0")); });
    server_->server().post([this] { handler_.complete_deferred("a1"); });
    auto r0 = f[0].get(), r1 = f[1].get(), r2 = f[2].get();
    ASSERT_FALSE(r0.ok());
    EXPECT_EQ(r0.error().code, EINVAL);  // EBADMSG travels as Invalid
    EXPECT_EQ(r0.error().message, "not MPEG-TS: no sync byte at offset 0");
    ASSERT_TRUE(r1.ok()) << r1.error().message;
    ASSERT_TRUE(r2.ok()) << r2.error().message;
    EXPECT_EQ(*find_string(std::get<Dict>(*r1), "name"), "a1");
    EXPECT_EQ(*find_string(std::get<Dict>(*r2), "name"), "a2");
    EXPECT_EQ(server_->server().counters().pending, 0u);
}

TEST_F(DbusTest, ADroppedReplyAnswersFailedAndAThrowDoesNotKillTheLoop) {
    handler_.drop_show = true;
    auto r = call(method::AssetShow, {"x"});
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.error().code, EIO);
    EXPECT_EQ(r.error().message, "internal error: the daemon dropped this request");
    EXPECT_EQ(raw_error(client_->bus(), "AssetShow", "s", "x"), "org.oneframe.Error.Failed");

    handler_.throw_in_sessions = true;
    auto t = call(method::Sessions);
    ASSERT_FALSE(t.ok());
    EXPECT_EQ(t.error().code, EIO);
    EXPECT_EQ(call_dict(method::Status), status_dict());  // still serving
    EXPECT_EQ(server_->server().counters().dropped, 3u);
}

TEST_F(DbusTest, TooManyRequestsInProgressAreRefused) {
    TearDown();
    start(Policy::AllowAll, ServerOptions{.request_name = true, .max_pending = 2});
    if (HasFatalFailure() || IsSkipped()) return;
    handler_.defer_add = true;
    std::vector<std::future<of::Result<Response>>> f;
    for (int i = 0; i < 2; ++i) {
        f.push_back(std::async(std::launch::async, [&, i] {
            auto c = Client::connect(bus_->address, kCallTimeout);
            if (!c) return of::Result<Response>(c.error());
            return c->call(method::AssetAdd, {"/m.ts", "n" + std::to_string(i)}, kCallTimeout);
        }));
    }
    ASSERT_TRUE(handler_.wait_deferred(2));
    auto third = call(method::AssetAdd, {"/m.ts", "n2"});
    ASSERT_FALSE(third.ok());
    EXPECT_EQ(third.error().code, E2BIG);
    EXPECT_EQ(third.error().message, "2 requests are in progress; try again when one has finished");
    EXPECT_EQ(server_->server().counters().busy, 1u);
    server_->server().post([this] {
        handler_.complete_deferred("n0");
        handler_.complete_deferred("n1");
    });
    EXPECT_TRUE(f[0].get().ok());
    EXPECT_TRUE(f[1].get().ok());
    EXPECT_TRUE(call(method::Status).ok());
}

TEST_F(DbusTest, ClientTimesOutOnAnUnansweredCall) {
    handler_.defer_add = true;
    const auto start = std::chrono::steady_clock::now();
    auto r = client_->call(method::AssetAdd, {"/slow.ts", "slow"}, std::chrono::microseconds(300ms));
    const auto took = std::chrono::steady_clock::now() - start;
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.error().code, ETIMEDOUT);
    EXPECT_EQ(r.error().message, "no answer from oneframed to AssetAdd within 0.3 s");
    EXPECT_GE(took, 300ms);
    EXPECT_LT(took, 10s);
    // A late answer to a caller that gave up harms nobody.
    ASSERT_TRUE(handler_.wait_deferred(1));
    server_->server().post([this] { handler_.complete_deferred("slow"); });
    EXPECT_EQ(call_dict(method::Status), status_dict());
}

TEST_F(DbusTest, CallsWithoutReplyExpectedRunAndLeaveNothingPending) {
    sd_bus_message* m = nullptr;
    ASSERT_GE(sd_bus_message_new_method_call(client_->bus(), &m, kBusName, kObjectPath, kInterface, "AssetAdd"), 0);
    ASSERT_GE(sd_bus_message_append(m, "ss", "/quiet.ts", "quiet"), 0);
    ASSERT_GE(sd_bus_message_set_expect_reply(m, 0), 0);
    ASSERT_GE(sd_bus_send(client_->bus(), m, nullptr), 0);
    sd_bus_message_unref(m);
    ASSERT_GE(sd_bus_flush(client_->bus()), 0);
    ASSERT_TRUE(handler_.wait_calls(1));
    // The next call is answered after the first was handled: by then nothing may be pending.
    EXPECT_EQ(*find_string(call_dict(method::AssetShow, {"quiet"}), "path"), "/quiet.ts");
    const ServerCounters c = server_->server().counters();
    EXPECT_EQ(c.pending, 0u);
    EXPECT_EQ(c.send_errors, 0u);
    EXPECT_EQ(c.dropped, 0u);
}

TEST_F(DbusTest, ServerCreateRefusesABusWithoutLoopAndATakenName) {
    sd_bus* bus = nullptr;
    ASSERT_GE(sd_bus_new(&bus), 0);
    ASSERT_GE(sd_bus_set_address(bus, bus_->address.c_str()), 0);
    ASSERT_GE(sd_bus_set_bus_client(bus, 1), 0);
    ASSERT_GE(sd_bus_start(bus), 0);
    RecordingHandler other;
    auto no_loop = Server::create(bus, other);
    ASSERT_FALSE(no_loop.ok());
    EXPECT_EQ(no_loop.error().code, EINVAL);

    sd_event* ev = nullptr;
    ASSERT_GE(sd_event_new(&ev), 0);
    ASSERT_GE(sd_bus_attach_event(bus, ev, 0), 0);
    auto taken = Server::create(bus, other);
    ASSERT_FALSE(taken.ok());
    EXPECT_EQ(taken.error().code, EEXIST);
    EXPECT_NE(taken.error().message.find("is oneframed already running?"), std::string::npos);
    sd_bus_flush_close_unref(bus);
    sd_event_unref(ev);
    // The failed attempt left the first server intact.
    EXPECT_EQ(call_dict(method::Status), status_dict());
}

// =============================================================================================
// Privilege

TEST_F(DbusTest, UnprivilegedCallersAreRefusedEveryChangingMethod) {
    if (!have_setpriv_and_dbus_send()) GTEST_SKIP() << "needs /usr/bin/setpriv (util-linux), /usr/bin/dbus-send (dbus) and /usr/bin/busctl (systemd)";
    call_dict(method::AssetAdd, {"/keep.ts", "keep"});
    const auto before = handler_.calls().size();

    // Reading works for nobody.
    const std::string st = dbus_send_as_nobody(false, "Status", {});
    EXPECT_NE(st.find("string \"test-1\""), std::string::npos) << st;
    EXPECT_NE(dbus_send_as_nobody(false, "AssetShow", {"string:keep"}).find("string \"keep\""), std::string::npos);
    // Sessions too, but the daemon is told the caller may not see session ids (they control a session).
    (void)dbus_send_as_nobody(false, "Sessions", {});
    EXPECT_FALSE(handler_.last_sessions_privileged.load());
    call_list(method::Sessions);
    EXPECT_TRUE(handler_.last_sessions_privileged.load());
    const auto before_changes = handler_.calls().size();

    // Each changing method is refused before the handler.
    const std::map<std::string, std::vector<std::string>> args = {
        {"AssetAdd", {"/x.ts", "x"}},
        {"AssetRemove", {"keep"}},
        {"SetConfigType", {"primary", "1", "heartbeat_ms", "t", "10"}},
        {"ReportFailure", {"health", "hot"}},
    };
    size_t changing = 0;
    for (const Method* m : kMethods) {
        if (m->access != Access::Change) continue;
        ++changing;
        auto it = args.find(m->name);
        const std::string out = busctl_as_nobody(*m, it == args.end() ? std::vector<std::string>{} : it->second);
        EXPECT_EQ(out, "Call failed: " + std::string(m->name) +
                           " changes the server and needs root or CAP_NET_ADMIN; uid 65534 has neither\n")
            << m->name;
    }
    // The D-Bus error name, as a script sees it.
    const std::string out = dbus_send_as_nobody(false, "AssetRemove", {"string:keep"});
    EXPECT_NE(out.find("Error org.oneframe.Error.AccessDenied: AssetRemove changes the server"), std::string::npos) << out;
    EXPECT_EQ(changing, 8u);
    auto calls = handler_.calls();
    EXPECT_EQ(calls.size(), before_changes);  // none of the changing ones reached the handler
    EXPECT_EQ(before_changes, before + 4);    // Status, AssetShow, Sessions twice
    EXPECT_EQ(server_->server().counters().refused, 9u);
    EXPECT_EQ(call_list(method::AssetList).size(), 1u);  // "keep" is still there
}

TEST_F(DbusTest, CapNetAdminWithoutRootIsRefusedOnDbusDaemon) {
    // dbus-daemon vouches for the caller's uid but not its capabilities; reading them from
    // /proc/PID would race with PID reuse, so the daemon refuses (docs/dbus-api.md, "Privilege").
    if (!have_setpriv_and_dbus_send()) GTEST_SKIP() << "needs /usr/bin/setpriv (util-linux), /usr/bin/dbus-send (dbus) and /usr/bin/busctl (systemd)";
    Proc caps = run(concat(as_nobody(true), {"/usr/bin/grep", "CapEff", "/proc/self/status"}));
    ASSERT_EQ(caps.status, 0) << caps.err;
    ASSERT_NE(caps.out.find("0000000000001000"), std::string::npos) << "setup did not give CAP_NET_ADMIN: " << caps.out;
    const std::string out = dbus_send_as_nobody(true, "AssetRemove", {"string:x"});
    EXPECT_NE(out.find("Error org.oneframe.Error.AccessDenied"), std::string::npos) << out;
}

TEST_F(DbusTest, ShippedPolicyLetsEveryoneReadAndOnlyRootChange) {
    if (!have_setpriv_and_dbus_send()) GTEST_SKIP() << "needs /usr/bin/setpriv (util-linux), /usr/bin/dbus-send (dbus) and /usr/bin/busctl (systemd)";
    TearDown();
    start(Policy::SystemLike);
    if (HasFatalFailure() || IsSkipped()) return;
    // Root (this process) owns the name and may change things.
    call_dict(method::AssetAdd, {"/keep.ts", "keep"});
    // Nobody may read...
    for (const Method* m : kMethods) {
        if (m->access != Access::Read) continue;
        const std::string out =
            dbus_send_as_nobody(false, m->name, std::string(m->signature) == "s" ? std::vector<std::string>{"string:keep"}
                                                                                 : std::vector<std::string>{});
        EXPECT_EQ(out.find("Error"), std::string::npos) << m->name << ": " << out;
    }
    // ...but the bus itself stops the changing methods, before the daemon sees them.
    const auto before = server_->server().counters().calls;
    const std::string out = dbus_send_as_nobody(false, "AssetRemove", {"string:keep"});
    EXPECT_NE(out.find("Error org.freedesktop.DBus.Error.AccessDenied"), std::string::npos) << out;
    EXPECT_EQ(server_->server().counters().calls, before);
    // And nobody cannot take the daemon's name.
    Proc own = run(concat(as_nobody(), {"/usr/bin/dbus-send", "--bus=" + bus_->address, "--print-reply",
                                       "--dest=org.freedesktop.DBus", "/org/freedesktop/DBus",
                                       "org.freedesktop.DBus.RequestName", "string:" + std::string(kBusName), "uint32:4"}));
    EXPECT_NE((own.out + own.err).find("AccessDenied"), std::string::npos) << own.out << own.err;
}

// =============================================================================================
// foctl, the real binary

class FoctlTest : public DbusTest {
protected:
    void SetUp() override {
        if (access(kFoctl.c_str(), X_OK) != 0) GTEST_SKIP() << kFoctl << " is not built (cmake --build ... --target foctl)";
        DbusTest::SetUp();
    }
    Proc foctl(const std::vector<std::string>& args, const std::vector<std::string>& prefix = {}) {
        std::vector<std::string> argv = prefix;
        argv.push_back(kFoctl);
        argv.push_back("--bus=" + bus_->address);
        argv.insert(argv.end(), args.begin(), args.end());
        Proc r = run(argv);
        EXPECT_FALSE(r.timed_out);
        return r;
    }
};

TEST_F(FoctlTest, JsonOutputIsExact) {
    Proc st = foctl({"status", "--json"});
    EXPECT_EQ(st.status, 0) << st.err;
    EXPECT_EQ(st.out, to_json(status_dict()) + "\n");
    EXPECT_EQ(st.err, "");

    Proc add = foctl({"--json", "asset", "add", "/srv/news.ts"});
    EXPECT_EQ(add.status, 0) << add.err;
    EXPECT_EQ(add.out,
              "{\"name\":\"news\",\"path\":\"/srv/news.ts\",\"bytes\":188000,\"duration_ms\":20000,\"bitrate_bps\":3750000}\n");
    Proc list = foctl({"asset", "list", "--json"});
    EXPECT_EQ(list.out,
              "[{\"name\":\"news\",\"path\":\"/srv/news.ts\",\"bytes\":188000,\"duration_ms\":20000,\"bitrate_bps\":3750000}]\n");
    Proc rm = foctl({"asset", "rm", "news", "--json"});
    EXPECT_EQ(rm.status, 0) << rm.err;
    EXPECT_EQ(rm.out, "{}\n");
    Proc empty = foctl({"asset", "list", "--json"});
    EXPECT_EQ(empty.out, "[]\n");
    Proc sessions = foctl({"sessions", "--json"});
    EXPECT_EQ(sessions.out,
              "[{\"id\":\"s1\",\"asset\":\"news\",\"bitrate_bps\":3750000,\"state\":\"playing\"},"
              "{\"id\":\"s22\",\"asset\":\"weather\",\"bitrate_bps\":15000000,\"paused\":true}]\n");
}

TEST_F(FoctlTest, HumanOutputIsAligned) {
    Proc st = foctl({"status"});
    EXPECT_EQ(st.status, 0) << st.err;
    EXPECT_EQ(st.out,
              "version:   test-1\n"
              "uptime_ms: 123456\n"
              "healthy:   yes\n"
              "offset_ns: -9223372036854775808\n"
              "bytes_max: 18446744073709551615\n"
              "load:      0.25\n"
              "note:      naïve ✓ \"q\"\\tend\n");
    EXPECT_EQ(foctl({"asset", "list"}).out, "no assets\n");
    EXPECT_EQ(foctl({"asset", "add", "/srv/a.ts", "--name", "alpha"}).status, 0);
    EXPECT_EQ(foctl({"asset", "add", "/srv/weather-report.ts"}).status, 0);
    Proc list = foctl({"asset", "list"});
    EXPECT_EQ(list.out,
              "name            path                     bytes  duration_ms  bitrate_bps\n"
              "alpha           /srv/a.ts               188000        20000      3750000\n"
              "weather-report  /srv/weather-report.ts  376000        20000      3750000\n");
    Proc show = foctl({"asset", "show", "alpha"});
    EXPECT_EQ(show.out,
              "name:        alpha\n"
              "path:        /srv/a.ts\n"
              "bytes:       188000\n"
              "duration_ms: 20000\n"
              "bitrate_bps: 3750000\n");
    Proc rm = foctl({"asset", "remove", "alpha"});
    EXPECT_EQ(rm.out, "removed asset alpha\n");
    Proc sessions = foctl({"sessions"});
    EXPECT_EQ(sessions.out,
              "id   asset    bitrate_bps  state    paused\n"
              "s1   news         3750000  playing  -\n"
              "s22  weather     15000000  -        yes\n");
}

TEST_F(FoctlTest, AssetAddSendsAnAbsolutePathAndTheStemAsName) {
    Proc r = run({kFoctl, "asset", "add", "rel/dir/movie.night.ts"}, {"ONEFRAME_BUS=" + bus_->address});
    EXPECT_EQ(r.status, 0) << r.err;
    const std::string cwd = fs::current_path().string();
    EXPECT_EQ(handler_.calls(), std::vector<std::string>{"AssetAdd " + cwd + "/rel/dir/movie.night.ts movie.night uid=0"});
}

TEST_F(FoctlTest, FailoverCommandsSendTheirSettings) {
    Proc r = foctl({"set-config-type", "secondary", "--partner-admin", "10.0.0.1", "--partner-private", "192.168.77.1",
                   "--heartbeat-ms", "10", "--max-missed", "3"});
    EXPECT_EQ(r.status, 0) << r.err;
    EXPECT_EQ(r.out, "failover_type:  secondary\nfailover_state: Offline\n");
    EXPECT_EQ(foctl({"set-config-type", "primary"}).status, 0);
    Proc sync = foctl({"failover-sync"});
    EXPECT_EQ(sync.status, 1);
    EXPECT_EQ(sync.err, "foctl: failover_sync needs a secondary\n");
    for (const char* c : {"start-streaming", "stop-streaming", "failover-unsync"}) EXPECT_EQ(foctl({c, "--json"}).status, 0) << c;
    EXPECT_EQ(handler_.calls(),
              (std::vector<std::string>{"SetConfigType secondary admin=10.0.0.1 private=192.168.77.1 hb=10 missed=3 uid=0",
                                        "SetConfigType primary uid=0", "FailoverSync uid=0", "StartStreaming uid=0",
                                        "StopStreaming uid=0", "FailoverUnsync uid=0"}));
}

TEST_F(FoctlTest, ErrorsExitOneAndUsageErrorsExitTwo) {
    Proc missing = foctl({"asset", "show", "nope"});
    const size_t reached = handler_.calls().size();
    EXPECT_EQ(missing.status, 1);
    EXPECT_EQ(missing.out, "");
    EXPECT_EQ(missing.err, "foctl: no asset named 'nope'\n");

    for (std::vector<std::string> bad : std::vector<std::vector<std::string>>{
             {},
             {"frobnicate"},
             {"asset"},
             {"asset", "show"},
             {"set-config-type", "tertiary"},
             {"set-config-type", "primary", "--heartbeat-ms", "0"},
             {"--timeout", "-1", "status"},
         }) {
        Proc r = foctl(bad);
        EXPECT_EQ(r.status, 2) << r.err;
        EXPECT_EQ(r.err.rfind("foctl: ", 0), 0u) << r.err;
    }
    EXPECT_EQ(handler_.calls().size(), reached);  // usage errors never reach the daemon

    Proc help = run({kFoctl, "--help"});
    EXPECT_EQ(help.status, 0);
    EXPECT_NE(help.out.find("Examples:"), std::string::npos);
    EXPECT_NE(help.out.find("ONEFRAME_BUS"), std::string::npos);
}

TEST_F(FoctlTest, UnprivilegedFoctlIsRefusedChangesButReads) {
    if (access("/usr/bin/setpriv", X_OK) != 0) GTEST_SKIP() << "needs /usr/bin/setpriv (util-linux)";
    ASSERT_EQ(foctl({"asset", "add", "/srv/a.ts"}).status, 0);
    Proc list = foctl({"asset", "list", "--json"}, as_nobody());
    EXPECT_EQ(list.status, 0) << list.err;
    EXPECT_NE(list.out.find("\"name\":\"a\""), std::string::npos);
    Proc rm = foctl({"asset", "rm", "a"}, as_nobody());
    EXPECT_EQ(rm.status, 1);
    EXPECT_EQ(rm.err, "foctl: AssetRemove changes the server and needs root or CAP_NET_ADMIN; uid 65534 has neither\n");
    EXPECT_EQ(foctl({"asset", "list", "--json"}).out.find("\"name\":\"a\"") != std::string::npos, true);
}

TEST_F(FoctlTest, UnreachableDaemonAndTimeoutAreReported) {
    handler_.defer_add = true;
    Proc slow = foctl({"--timeout", "0.3", "asset", "add", "/srv/slow.ts"});
    EXPECT_EQ(slow.status, 1);
    EXPECT_EQ(slow.err, "foctl: no answer from oneframed to AssetAdd within 0.3 s\n");

    PrivateBus empty(Policy::AllowAll);
    ASSERT_FALSE(empty.address.empty()) << empty.why;
    Proc none = run({kFoctl, "--bus", empty.address, "status"});
    EXPECT_EQ(none.status, 1);
    EXPECT_EQ(none.err, "foctl: oneframed is not running (nobody owns org.oneframe.Daemon on this bus)\n");

    Proc nobus = run({kFoctl, "--bus", "unix:path=/nonexistent/of-bus", "status"});
    EXPECT_EQ(nobus.status, 1);
    EXPECT_EQ(nobus.err, "foctl: cannot connect to bus unix:path=/nonexistent/of-bus: No such file or directory\n");
}

}  // namespace
