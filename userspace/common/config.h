// oneframed's configuration file: `key = value` lines, `#` comments, no sections.
// Every key is declared once in the schema (config.cpp) with its type, default, bounds and help;
// docs/config.md documents the same keys (a unit test keeps the two in step). An unknown key,
// a value of the wrong type or out of bounds is an error that names the file, line and key.
#pragma once

#include <netinet/in.h>

#include <cstdint>
#include <string>
#include <vector>

#include "common/result.h"

namespace of {

struct Config {
    // Network
    std::string stream_interface = "stream0";
    in_addr stream_ip{};                    // required
    uint16_t rtsp_port = 554;
    uint16_t server_rtp_port = 6970;        // RTP source port; RTCP is +1
    // Storage
    std::string catalog_dir = "/var/lib/oneframe/catalog";
    std::vector<std::string> disks = {"/var/lib/oneframe/disk0"};
    uint32_t extent_size = 1316 * 128;
    uint64_t max_asset_bytes = uint64_t(64) << 30;
    // Streaming
    uint32_t streaming_threads = 1;
    uint32_t streamer_rt_priority = 0;      // SCHED_FIFO priority of streaming threads; 0 = normal
    // Stream limits, seed 004 [0083]
    uint32_t mpeg_stream_count_limit = 1000;
    uint64_t mpeg_bandwidth_limit_kbps = 4'000'000;
    uint64_t server_bandwidth_limit_kbps = 5'000'000;
    // RTSP
    uint32_t session_timeout_s = 60;
    uint32_t rtsp_max_connections = 1024;
    uint32_t rtsp_max_per_client = 64;      // connections and sessions per client IPv4 address
    // Control plane
    std::string dbus_address = "system";    // "system" or a D-Bus address (tests use a private bus)
    std::string failover_backend = "auto";  // auto | kernel | userspace | none
    std::string run_dir = "/run/oneframe";
    // Failover, seed 004 [0083]
    uint32_t failover_heartbeat_freq_ms = 5;
    uint32_t max_missed_heartbeats = 3;
    std::string failover_role = "standalone";  // standalone | primary | secondary (at start-up)
    bool autostart = true;                     // start_streaming at start-up (standalone, primary)
    std::string peer_key_file;                 // hex HMAC key shared by the pair
    uint16_t peer_port = 7400;
    in_addr admin_ip{};                        // ours on the stream LAN (second heartbeat path)
    in_addr partner_private_ip{};              // 0 = none
    in_addr partner_admin_ip{};                // 0 = none
    uint32_t failover_rt_priority = 50;        // SCHED_FIFO for the heartbeat thread; 0 = normal
    bool egress_gate = true;                   // attach the BPF egress gate to stream_interface
    bool tcp_takeover = true;                  // a pair carries RTSP connections over (docs/tcp-takeover.md)
    std::string bpf_pin_root = "/sys/fs/bpf/oneframe";
    // Load balancing, seed 004 [0083] (carried by failover_sync)
    bool load_balance_active = false;
    uint32_t load_balance_group_id = 0;
};

struct ConfigKeyDoc {
    std::string key;
    std::string type;
    std::string default_value;
    std::string help;
};

// Parses the text of a config file; `origin` names it in error messages.
Result<Config> parse_config(const std::string& text, const std::string& origin);
Result<Config> load_config(const std::string& path);
// The schema, for documentation and `oneframed --help-config`.
std::vector<ConfigKeyDoc> config_schema();

}  // namespace of
