// A constant-bitrate asset in one file, for tests of the streaming thread: TS packets whose payload
// carries their own index (so that any misplaced byte shows), served as fixed-size extents.
#pragma once

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "streamer/source.h"

namespace of::test {

// A constant-bitrate asset in one file: extent i at offset i * extent_size.
class CbrFileSource : public of::streamer::Source {
public:
    CbrFileSource(std::string path, uint64_t packets, uint64_t bitrate, uint32_t extent_size)
        : packets_(packets), bitrate_(bitrate), extent_size_(extent_size) {
        fd_ = open(path.c_str(), O_RDONLY | O_CLOEXEC);
    }
    ~CbrFileSource() override { close(fd_); }
    uint64_t packet_count() const override { return packets_; }
    int64_t packet_time_ns(uint64_t p) const override {
        return int64_t(__int128(p) * 188 * 8 * 1'000'000'000 / bitrate_);
    }
    uint32_t extent_size() const override { return extent_size_; }
    of::streamer::ExtentLocation extent(uint64_t i) const override {
        uint64_t off = i * extent_size_, total = packets_ * 188;
        return {fd_, off, uint32_t(std::min<uint64_t>(extent_size_, total - off))};
    }

private:
    int fd_;
    uint64_t packets_, bitrate_;
    uint32_t extent_size_;
};

// TS packets whose payload carries their own index, so any misplaced byte is visible.
inline std::vector<uint8_t> make_ts(uint64_t packets) {
    std::vector<uint8_t> v(packets * 188);
    for (uint64_t i = 0; i < packets; ++i) {
        uint8_t* p = &v[i * 188];
        p[0] = 0x47;
        p[1] = 0x01;
        p[2] = 0x00;
        p[3] = uint8_t(0x10 | (i & 0x0f));
        for (int k = 4; k < 188; ++k) p[k] = uint8_t((i * 31 + k) & 0xff);
        std::memcpy(p + 4, &i, sizeof i);
    }
    return v;
}

}  // namespace of::test
