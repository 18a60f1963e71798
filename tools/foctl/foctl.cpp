// foctl: the admin CLI of oneframed, a client of its D-Bus API (docs/foctl.md).
// Exit status: 0 success, 1 the daemon refused or failed or could not be reached, 2 usage error.

#include <CLI/CLI.hpp>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <iostream>
#include <deque>
#include <optional>
#include <string>
#include <vector>

#include "dbus/api.h"
#include "dbus/client.h"
#include "dbus/render.h"

namespace {

namespace dbus = of::dbus;
using namespace std::chrono_literals;

constexpr const char* kFooter = R"(Examples:
  foctl status
  foctl asset add /srv/media/news.ts --name news
  foctl asset list --json | jq -r '.[].name'
  foctl asset show news
  foctl asset rm news
  foctl sessions
  foctl set-config-type secondary --partner-admin 10.0.0.1 --partner-private 192.168.77.1 \
        --heartbeat-ms 10 --max-missed 3
  foctl failover-sync && foctl start-streaming
  foctl --bus unix:path=/tmp/test/bus status

Environment:
  ONEFRAME_BUS   D-Bus address used when --bus is not given (default: the system bus)

Exit status:
  0 success, 1 oneframed refused or failed (one line "foctl: ..." on stderr), 2 usage error.
Commands that change the server (asset add/rm, set-config-type, start-/stop-streaming,
failover-sync/-unsync, report-failure) need root; the others are open to every user.)";

// One subcommand: which method it calls, with which arguments, and what a person reads on success.
struct Command {
    CLI::App* app = nullptr;
    const dbus::Method* method = nullptr;
    std::function<std::vector<dbus::Arg>()> args = [] { return std::vector<dbus::Arg>{}; };
    std::string empty_text;                 // a Returns::List reply without items
    std::function<std::string()> done_text;  // a Returns::Nothing reply
    std::chrono::seconds default_timeout = 30s;
};

void fail_line(const std::string& message) {
    std::cerr << "foctl: " << dbus::to_text(dbus::Value{message}) << '\n';
}

}  // namespace

int main(int argc, char** argv) {
    CLI::App app{"Administer oneframed, the oneframe video-on-demand daemon, over D-Bus.", "foctl"};
    app.require_subcommand(1);
    app.fallthrough();
    app.set_version_flag("--version", std::string("foctl ") + OF_VERSION);

    bool json = false;
    std::string bus_address;
    std::optional<double> timeout_s;
    app.add_flag("--json", json, "machine output: one JSON object or array on stdout");
    app.add_option("--bus", bus_address, "D-Bus address of the daemon's bus (else $ONEFRAME_BUS, else the system bus)");
    app.add_option("--timeout", timeout_s, "seconds to wait for an answer (default 30; asset add 3600, failover-sync 600)")
        ->check(CLI::Range(0.001, 86400.0));

    std::deque<Command> commands;  // a deque: references to elements stay valid
    auto add = [&](CLI::App* parent, const char* name, const char* help, const dbus::Method& m) -> Command& {
        Command c;
        c.app = parent->add_subcommand(name, help);
        c.app->fallthrough();
        c.method = &m;
        commands.push_back(std::move(c));
        return commands.back();
    };

    add(&app, "status", "show the daemon's state and counters", dbus::method::Status);

    CLI::App* asset = app.add_subcommand("asset", "manage assets (MPEG-TS files ingested into the store)");
    asset->require_subcommand(1);
    asset->fallthrough();

    std::string add_file, add_name;
    {
        Command& c = add(asset, "add", "ingest FILE (validated, indexed, striped over the disks)", dbus::method::AssetAdd);
        c.app->add_option("FILE", add_file, "MPEG-TS file; sent to the daemon as an absolute path")->required();
        c.app->add_option("--name", add_name, "asset name (default: FILE's name without its extension)");
        c.app->footer("Example: foctl asset add ./news.ts   (asset \"news\", path sent as $PWD/news.ts)");
        c.default_timeout = 3600s;  // ingest copies the whole file
        c.args = [&]() -> std::vector<dbus::Arg> {
            std::error_code ec;
            std::filesystem::path p = std::filesystem::absolute(add_file, ec);
            if (ec) p = add_file;  // the daemon will say what is wrong with it
            std::string name = add_name.empty() ? std::filesystem::path(add_file).stem().string() : add_name;
            return {p.string(), name};
        };
    }
    {
        Command& c = add(asset, "list", "list the assets", dbus::method::AssetList);
        c.empty_text = "no assets";
    }
    std::string show_name;
    {
        Command& c = add(asset, "show", "show one asset in detail", dbus::method::AssetShow);
        c.app->add_option("NAME", show_name, "asset name")->required();
        c.args = [&]() -> std::vector<dbus::Arg> { return {show_name}; };
    }
    std::string rm_name;
    {
        Command& c = add(asset, "rm", "remove an asset and its stripes", dbus::method::AssetRemove);
        c.app->alias("remove");
        c.app->add_option("NAME", rm_name, "asset name")->required();
        c.args = [&]() -> std::vector<dbus::Arg> { return {rm_name}; };
        c.done_text = [&] { return "removed asset " + rm_name; };
    }
    {
        Command& c = add(&app, "sessions", "list the streaming sessions", dbus::method::Sessions);
        c.empty_text = "no sessions";
    }

    std::string role, partner_admin, partner_private;
    std::optional<uint32_t> heartbeat_ms, max_missed;
    {
        Command& c = add(&app, "set-config-type", "designate this server primary or secondary of a failover pair",
                         dbus::method::SetConfigType);
        c.app->add_option("ROLE", role, "primary or secondary")->required()->check(CLI::IsMember({"primary", "secondary"}));
        c.app->add_option("--partner-admin", partner_admin, "the partner's administration IP address");
        c.app->add_option("--partner-private", partner_private, "the partner's private-link IP address");
        c.app->add_option("--heartbeat-ms", heartbeat_ms, "heartbeat period in milliseconds")
            ->check(CLI::Range(uint32_t(1), uint32_t(dbus::kMaxHeartbeatMs)));
        c.app->add_option("--max-missed", max_missed, "missed heartbeats before the partner is declared failed")
            ->check(CLI::Range(uint32_t(1), uint32_t(dbus::kMaxMissedHeartbeats)));
        c.app->footer(
            "Options not given keep the daemon's current value.\n"
            "Example: foctl set-config-type primary --partner-private 192.168.77.2 --heartbeat-ms 10 --max-missed 3");
        c.args = [&]() -> std::vector<dbus::Arg> {
            dbus::Dict settings;
            if (!partner_admin.empty()) settings.emplace_back(dbus::setting::PartnerAdmin, partner_admin);
            if (!partner_private.empty()) settings.emplace_back(dbus::setting::PartnerPrivate, partner_private);
            if (heartbeat_ms) settings.emplace_back(dbus::setting::HeartbeatMs, uint64_t(*heartbeat_ms));
            if (max_missed) settings.emplace_back(dbus::setting::MaxMissed, uint64_t(*max_missed));
            return {role, settings};
        };
    }
    add(&app, "start-streaming", "bring this server online", dbus::method::StartStreaming);
    add(&app, "stop-streaming",
        "take this server offline; a primary first hands every session to its secondary (no packet lost)",
        dbus::method::StopStreaming);
    add(&app, "failover-sync", "synchronize a secondary with its primary", dbus::method::FailoverSync).default_timeout = 600s;
    add(&app, "failover-unsync", "take a synchronized secondary offline for changes", dbus::method::FailoverUnsync);
    std::string cause, detail;
    {
        Command& c = add(&app, "report-failure",
                         "report a failure this server cannot see itself: a primary fails over, a secondary fails",
                         dbus::method::ReportFailure);
        c.app->add_option("CAUSE", cause, "disk, software, health or operator")
            ->required()
            ->check(CLI::IsMember({"disk", "software", "health", "operator"}));
        c.app->add_option("DETAIL", detail, "what happened, one line (at most 200 bytes)")->required();
        c.app->footer(
            "For a health monitor (temperature, fans, power) or an operator. A server with no partner to\n"
            "take over keeps serving and says so (exit status 1).\n"
            "Example: foctl report-failure health 'CPU package at 98 C'");
        c.args = [&]() -> std::vector<dbus::Arg> { return {cause, detail}; };
    }

    app.footer(kFooter);  // after the subcommands, which would otherwise inherit it

    try {
        app.parse(argc, argv);
    } catch (const CLI::CallForHelp& e) {
        return app.exit(e);
    } catch (const CLI::CallForAllHelp& e) {
        return app.exit(e);
    } catch (const CLI::CallForVersion& e) {
        return app.exit(e);
    } catch (const CLI::ParseError& e) {
        fail_line(e.what());
        std::cerr << "Run 'foctl --help' for usage.\n";
        return 2;
    }

    const Command* cmd = nullptr;
    for (const Command& c : commands)
        if (c.app->parsed()) cmd = &c;
    if (!cmd) {  // require_subcommand makes this unreachable
        fail_line("no command given");
        return 2;
    }

    if (bus_address.empty())
        if (const char* env = std::getenv("ONEFRAME_BUS")) bus_address = env;
    const auto timeout = timeout_s ? std::chrono::microseconds(int64_t(*timeout_s * 1e6))
                                   : std::chrono::microseconds(cmd->default_timeout);

    auto client = dbus::Client::connect(bus_address, timeout);
    if (!client) {
        fail_line(client.error().message);
        return 1;
    }
    auto response = client->call(*cmd->method, cmd->args(), timeout);
    if (!response) {
        fail_line(response.error().message);
        return 1;
    }

    std::string out;
    if (auto* d = std::get_if<dbus::Dict>(&*response)) {
        out = json ? dbus::to_json(*d) + "\n" : dbus::to_text(*d);
    } else if (auto* l = std::get_if<dbus::List>(&*response)) {
        if (json) out = dbus::to_json(*l) + "\n";
        else out = l->empty() ? cmd->empty_text + "\n" : dbus::to_table(*l);
    } else {
        out = json ? "{}\n" : (cmd->done_text ? cmd->done_text() + "\n" : "");
    }
    std::fwrite(out.data(), 1, out.size(), stdout);
    if (std::fflush(stdout) != 0) {
        std::perror("foctl: stdout");
        return 1;
    }
    return 0;
}
