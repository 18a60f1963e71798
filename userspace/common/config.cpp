#include "common/config.h"
#include "common/failover_limits.h"

#include <arpa/inet.h>

#include <charconv>
#include <fstream>
#include <functional>
#include <limits>
#include <set>
#include <sstream>

static_assert(of::kMaxHeartbeatMs == 1000 && of::kMaxMissedHeartbeats == 100,
              "the help texts of failover_heartbeat_freq_ms and max_missed_heartbeats spell these bounds");

namespace of {
namespace {

using Setter = std::function<Status(Config&, const std::string&)>;

struct Key {
    const char* name;
    const char* type;
    const char* def;
    const char* help;
    Setter set;
};

Status bad(const std::string& why) { return make_error(EINVAL, why); }

template <class T>
Setter uint_in(T Config::*field, uint64_t lo, uint64_t hi) {
    return [=](Config& c, const std::string& v) -> Status {
        uint64_t x = 0;
        auto [p, ec] = std::from_chars(v.data(), v.data() + v.size(), x);
        if (ec != std::errc() || p != v.data() + v.size())
            return bad("'" + v + "' is not a whole number");
        if (x < lo || x > hi)
            return bad(std::to_string(x) + " is outside " + std::to_string(lo) + ".." + std::to_string(hi));
        c.*field = T(x);
        return {};
    };
}

Setter text(std::string Config::*field, std::set<std::string> allowed = {}) {
    return [=](Config& c, const std::string& v) -> Status {
        if (v.empty()) return bad("empty value");
        if (!allowed.empty() && !allowed.count(v)) {
            std::string list;
            for (auto& a : allowed) list += (list.empty() ? "" : ", ") + a;
            return bad("'" + v + "' is not one of: " + list);
        }
        c.*field = v;
        return {};
    };
}

Setter path(std::string Config::*field) {
    return [=](Config& c, const std::string& v) -> Status {
        if (v.empty() || v[0] != '/') return bad("'" + v + "' is not an absolute path");
        c.*field = v;
        return {};
    };
}

Setter boolean(bool Config::*field) {
    return [=](Config& c, const std::string& v) -> Status {
        if (v == "yes" || v == "true" || v == "1") c.*field = true;
        else if (v == "no" || v == "false" || v == "0") c.*field = false;
        else return bad("'" + v + "' is not yes or no");
        return {};
    };
}

Setter ipv4(in_addr Config::*field) {
    return [=](Config& c, const std::string& v) -> Status {
        if (inet_pton(AF_INET, v.c_str(), &(c.*field)) != 1) return bad("'" + v + "' is not an IPv4 address");
        return {};
    };
}

const std::vector<Key>& keys() {
    static const std::vector<Key> k = {
        {"stream_interface", "interface name", "stream0",
         "Interface that carries the stream IP; the egress gate attaches here.",
         [](Config& c, const std::string& v) -> Status {
             if (v.empty() || v.size() > 15) return bad("'" + v + "' is not an interface name (1..15 chars)");
             c.stream_interface = v;
             return {};
         }},
        {"stream_ip", "IPv4 address", "(required)",
         "The stream IP that viewers connect to; shared by both servers of a failover pair.",
         [](Config& c, const std::string& v) -> Status {
             if (inet_pton(AF_INET, v.c_str(), &c.stream_ip) != 1) return bad("'" + v + "' is not an IPv4 address");
             return {};
         }},
        {"rtsp_port", "port", "554", "TCP port of the RTSP server on the stream IP.",
         uint_in(&Config::rtsp_port, 1, 65535)},
        {"server_rtp_port", "port", "6970", "UDP source port of RTP/MP2T streams (even; RTCP is +1).",
         [](Config& c, const std::string& v) -> Status {
             if (auto s = uint_in(&Config::server_rtp_port, 1024, 65534)(c, v); !s) return s;
             if (c.server_rtp_port % 2) return bad("RTP port must be even");
             return {};
         }},
        {"catalog_dir", "absolute path", "/var/lib/oneframe/catalog", "Where asset index files (NAME.idx) live.",
         path(&Config::catalog_dir)},
        {"disks", "absolute paths, space separated", "/var/lib/oneframe/disk0",
         "Directories (one per disk) over which asset extents are striped round-robin (seed 002 Fig. 3A). At most 64.",
         [](Config& c, const std::string& v) -> Status {
             std::istringstream in(v);
             std::vector<std::string> out;
             for (std::string d; in >> d;) {
                 if (d[0] != '/') return bad("disk '" + d + "' is not an absolute path");
                 out.push_back(d);
             }
             if (out.empty() || out.size() > 64) return bad("need 1..64 disk directories");
             c.disks = out;
             return {};
         }},
        {"extent_size", "bytes", "168448",
         "Size of one extent; a multiple of 1316 (7 TS packets) between 1316*8 and 1316*4096.",
         [](Config& c, const std::string& v) -> Status {
             if (auto s = uint_in(&Config::extent_size, 1316 * 8, 1316 * 4096)(c, v); !s) return s;
             if (c.extent_size % 1316) return bad("extent_size must be a multiple of 1316");
             return {};
         }},
        {"max_asset_bytes", "bytes", "68719476736", "Largest asset accepted by ingest.",
         uint_in(&Config::max_asset_bytes, 188 * 2, uint64_t(1) << 42)},
        {"streaming_threads", "count", "1", "Streaming threads, each with its own io_uring (1..64).",
         uint_in(&Config::streaming_threads, 1, 64)},
        {"streamer_rt_priority", "0..99", "0",
         "SCHED_FIFO priority for streaming threads (needs CAP_SYS_NICE); 0 keeps normal scheduling.",
         uint_in(&Config::streamer_rt_priority, 0, 99)},
        {"mpeg_stream_count_limit", "count", "1000", "MPEG_Stream_Count_Limit: most concurrent streams (seed 004 [0083]).",
         uint_in(&Config::mpeg_stream_count_limit, 1, 100000)},
        {"mpeg_bandwidth_limit_kbps", "kbit/s", "4000000",
         "MPEG_Bandwidth_Limit_In_KBPS: total bitrate of all MPEG streams.",
         uint_in(&Config::mpeg_bandwidth_limit_kbps, 1, 400'000'000)},
        {"server_bandwidth_limit_kbps", "kbit/s", "5000000",
         "Server_Bandwidth_Limit_In_KBPS: total bitrate the server may send (streams plus overhead).",
         uint_in(&Config::server_bandwidth_limit_kbps, 1, 400'000'000)},
        {"session_timeout_s", "seconds", "60", "RTSP session timeout without a keepalive (5..3600).",
         uint_in(&Config::session_timeout_s, 5, 3600)},
        {"rtsp_max_connections", "count", "1024", "Most concurrent RTSP TCP connections.",
         uint_in(&Config::rtsp_max_connections, 1, 65536)},
        {"rtsp_max_per_client", "count", "64",
         "Most RTSP connections, and most sessions, per client IPv4 address (a set-top box needs a few).",
         uint_in(&Config::rtsp_max_per_client, 1, 100000)},
        {"dbus_address", "'system' or D-Bus address", "system", "Bus on which the D-Bus API is published.",
         text(&Config::dbus_address)},
        {"failover_backend", "auto|kernel|userspace|none", "auto",
         "Where failover type/state live: failover.ko (/dev/failover) or the userspace holder; auto picks the module when present; none keeps them in the daemon only (no critical-process watch).",
         text(&Config::failover_backend, {"auto", "kernel", "userspace", "none"})},
        {"run_dir", "absolute path", "/run/oneframe", "Runtime directory (sockets, pid files).",
         path(&Config::run_dir)},
        // (the texts spell the bounds: static_assert at the top of this file)
        {"failover_heartbeat_freq_ms", "ms", "5", "Failover_Heartbeat_Freq: heartbeat period on the private link (1..1000).",
         uint_in(&Config::failover_heartbeat_freq_ms, 1, kMaxHeartbeatMs)},
        {"max_missed_heartbeats", "count", "3", "Max_Missed_Heartbeats before the secondary declares a failure (1..100); (this - 1) x the heartbeat period must be at least 6 ms (the primary's lease).",
         uint_in(&Config::max_missed_heartbeats, 1, kMaxMissedHeartbeats)},
        {"failover_role", "standalone|primary|secondary", "standalone",
         "Role at start-up: standalone (no partner), or set_config_type primary/secondary with the partner below.",
         text(&Config::failover_role, {"standalone", "primary", "secondary"})},
        {"autostart", "yes|no", "yes", "Issue start_streaming at start-up (standalone and primary roles).",
         boolean(&Config::autostart)},
        {"peer_key_file", "absolute path", "(none)",
         "Hex HMAC-SHA256 key (32..128 hex digits) shared by both servers; required for a pair.",
         path(&Config::peer_key_file)},
        {"peer_port", "port", "7400", "UDP port of the peer protocol on both paths.",
         uint_in(&Config::peer_port, 1, 65535)},
        {"admin_ip", "IPv4 address", "(none)",
         "This server's own admin address on the stream LAN: the source of heartbeats on the second path.",
         ipv4(&Config::admin_ip)},
        {"partner_private_ip", "IPv4 address", "(none)", "The partner's address on the private link.",
         ipv4(&Config::partner_private_ip)},
        {"partner_admin_ip", "IPv4 address", "(none)",
         "The partner's admin address on the stream LAN: the second heartbeat path.",
         ipv4(&Config::partner_admin_ip)},
        {"failover_rt_priority", "0..99", "50", "SCHED_FIFO priority of the failover (heartbeat) thread (needs CAP_SYS_NICE); 0 = normal.",
         uint_in(&Config::failover_rt_priority, 0, 99)},
        {"egress_gate", "yes|no", "yes", "Attach the BPF egress gate to stream_interface (a pair needs it).",
         boolean(&Config::egress_gate)},
        {"tcp_takeover", "yes|no", "yes",
         "A pair carries the viewers' RTSP connections over at a takeover (docs/tcp-takeover.md); needs the egress gate and CAP_NET_ADMIN. no: the streams go on, a viewer's next request needs a new connection.",
         boolean(&Config::tcp_takeover)},
        {"bpf_pin_root", "absolute path", "/sys/fs/bpf/oneframe", "Where the gate's maps are pinned (per interface).",
         path(&Config::bpf_pin_root)},
        {"load_balance_active", "yes|no", "no", "Load_Balance_Active ([0083]); carried to the secondary by failover_sync.",
         boolean(&Config::load_balance_active)},
        {"load_balance_group_id", "count", "0", "Load_Balance_Group_ID ([0083]).",
         uint_in(&Config::load_balance_group_id, 0, 1'000'000)},
    };
    return k;
}

std::string trim(const std::string& s) {
    auto b = s.find_first_not_of(" \t\r");
    if (b == std::string::npos) return "";
    auto e = s.find_last_not_of(" \t\r");
    return s.substr(b, e - b + 1);
}

}  // namespace

Result<Config> parse_config(const std::string& text, const std::string& origin) {
    Config c;
    std::set<std::string> seen;
    std::istringstream in(text);
    std::string line;
    int lineno = 0;
    auto fail = [&](const std::string& why) {
        return make_error(EINVAL, origin + ":" + std::to_string(lineno) + ": " + why);
    };
    while (std::getline(in, line)) {
        ++lineno;
        if (line.size() > 4096) return fail("line longer than 4096 characters");
        line = trim(line);
        if (line.empty() || line[0] == '#') continue;
        auto eq = line.find('=');
        if (eq == std::string::npos) return fail("expected 'key = value', got '" + line + "'");
        std::string key = trim(line.substr(0, eq)), value = trim(line.substr(eq + 1));
        const Key* k = nullptr;
        for (auto& cand : keys())
            if (key == cand.name) k = &cand;
        if (!k) return fail("unknown key '" + key + "' (see docs/config.md or oneframed --help-config)");
        if (!seen.insert(key).second) return fail("key '" + key + "' given twice");
        if (auto s = k->set(c, value); !s) return fail(key + ": " + s.error().message);
    }
    if (!seen.count("stream_ip")) return make_error(EINVAL, origin + ": required key 'stream_ip' is missing");
    return c;
}

Result<Config> load_config(const std::string& path) {
    std::ifstream f(path);
    if (!f) return errno_error("cannot read config " + path);
    std::ostringstream ss;
    ss << f.rdbuf();
    if (ss.str().size() > (1 << 20)) return make_error(EFBIG, path + ": config file larger than 1 MiB");
    return parse_config(ss.str(), path);
}

std::vector<ConfigKeyDoc> config_schema() {
    std::vector<ConfigKeyDoc> out;
    for (auto& k : keys()) out.push_back({k.name, k.type, k.def, k.help});
    return out;
}

}  // namespace of
