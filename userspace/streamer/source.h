// What a streaming thread needs of an asset: its size, its time map and where its extents are.
// Immutable once built and shared between threads (the engine adapts store::Asset to it).
#pragma once

#include <cstdint>

namespace of::streamer {

struct ExtentLocation {
    int fd;           // open O_RDONLY, valid for the Source's lifetime
    uint64_t offset;  // within fd
    uint32_t length;  // extent_size(), or less for the last extent
};

class Source {
public:
    virtual ~Source() = default;
    virtual uint64_t packet_count() const = 0;
    virtual int64_t packet_time_ns(uint64_t packet) const = 0;  // monotonic, pure
    virtual uint32_t extent_size() const = 0;                   // bytes, a multiple of 1316
    virtual ExtentLocation extent(uint64_t index) const = 0;
};

}  // namespace of::streamer
