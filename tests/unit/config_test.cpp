#include "common/config.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>

#include <fstream>
#include <sstream>

namespace {

TEST(Config, ParsesEveryKeyType) {
    auto c = of::parse_config(
        "# comment\n"
        "stream_ip = 10.77.0.1\n"
        "  rtsp_port=8554  \n"
        "disks = /d0 /d1  /d2\n"
        "extent_size = 13160\n"
        "failover_backend = userspace\n",
        "t.conf");
    ASSERT_TRUE(c.ok()) << c.error().message;
    char ip[16];
    inet_ntop(AF_INET, &c->stream_ip, ip, sizeof ip);
    EXPECT_STREQ(ip, "10.77.0.1");
    EXPECT_EQ(c->rtsp_port, 8554);
    EXPECT_EQ(c->disks, (std::vector<std::string>{"/d0", "/d1", "/d2"}));
    EXPECT_EQ(c->extent_size, 13160u);
    EXPECT_EQ(c->failover_backend, "userspace");
    EXPECT_EQ(c->failover_heartbeat_freq_ms, 5u);  // default
}

TEST(Config, ErrorsNameFileLineAndKey) {
    struct Case {
        const char* text;
        const char* expect;
    } cases[] = {
        {"stream_ip = 1.2.3.4\nbogus = 1\n", "t.conf:2: unknown key 'bogus'"},
        {"stream_ip = 1.2.3.400\n", "t.conf:1: stream_ip: '1.2.3.400' is not an IPv4 address"},
        {"stream_ip = 1.2.3.4\nrtsp_port = 0\n", "t.conf:2: rtsp_port: 0 is outside 1..65535"},
        {"stream_ip = 1.2.3.4\nrtsp_port = 12x\n", "t.conf:2: rtsp_port: '12x' is not a whole number"},
        {"stream_ip = 1.2.3.4\nextent_size = 20000\n", "t.conf:2: extent_size: extent_size must be a multiple of 1316"},
        {"stream_ip = 1.2.3.4\ndisks = rel/path\n", "t.conf:2: disks: disk 'rel/path' is not an absolute path"},
        {"stream_ip = 1.2.3.4\nfailover_backend = magic\n", "t.conf:2: failover_backend: 'magic' is not one of: auto, kernel, none, userspace"},
        {"stream_ip = 1.2.3.4\nstream_ip = 1.2.3.5\n", "t.conf:2: key 'stream_ip' given twice"},
        {"stream_ip\n", "t.conf:1: expected 'key = value', got 'stream_ip'"},
        {"rtsp_port = 554\n", "t.conf: required key 'stream_ip' is missing"},
        {"stream_ip = 1.2.3.4\nserver_rtp_port = 6971\n", "t.conf:2: server_rtp_port: RTP port must be even"},
    };
    for (auto& k : cases) {
        auto c = of::parse_config(k.text, "t.conf");
        ASSERT_FALSE(c.ok()) << k.text;
        EXPECT_EQ(c.error().code, EINVAL);
        EXPECT_EQ(c.error().message.rfind(k.expect, 0), 0u) << c.error().message;
    }
}

TEST(Config, EveryKeyIsDocumented) {
    std::ifstream f(std::string(OF_SOURCE_DIR) + "/docs/config.md");
    ASSERT_TRUE(f) << "docs/config.md missing";
    std::stringstream ss;
    ss << f.rdbuf();
    for (auto& k : of::config_schema())
        EXPECT_NE(ss.str().find("`" + k.key + "`"), std::string::npos) << k.key << " is not in docs/config.md";
}

}  // namespace
