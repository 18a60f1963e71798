// Little-endian encoding for the files oneframe writes (index, catalog). The reader never reads past
// its span: every get reports failure instead, and a failed reader stays failed.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace of::mpegts::wire {

class Writer {
public:
    void u8(uint8_t v) { out_.push_back(v); }
    void u16(uint16_t v) { put(v, 2); }
    void u32(uint32_t v) { put(v, 4); }
    void u64(uint64_t v) { put(v, 8); }
    void i64(int64_t v) { put(uint64_t(v), 8); }
    void bytes(std::span<const uint8_t> b) { out_.insert(out_.end(), b.begin(), b.end()); }
    void str16(std::string_view s) {  // u16 length + bytes; caller bounds the length
        u16(uint16_t(s.size()));
        out_.insert(out_.end(), s.begin(), s.end());
    }
    void patch_u64(size_t at, uint64_t v) {
        for (int i = 0; i < 8; ++i) out_[at + i] = uint8_t(v >> (8 * i));
    }
    size_t size() const { return out_.size(); }
    std::vector<uint8_t>& data() { return out_; }

private:
    void put(uint64_t v, int n) {
        for (int i = 0; i < n; ++i) out_.push_back(uint8_t(v >> (8 * i)));
    }
    std::vector<uint8_t> out_;
};

class Reader {
public:
    explicit Reader(std::span<const uint8_t> in) : in_(in) {}
    bool ok() const { return ok_; }
    size_t remaining() const { return ok_ ? in_.size() - pos_ : 0; }
    size_t pos() const { return pos_; }

    uint8_t u8() { return uint8_t(get(1)); }
    uint16_t u16() { return uint16_t(get(2)); }
    uint32_t u32() { return uint32_t(get(4)); }
    uint64_t u64() { return get(8); }
    int64_t i64() { return int64_t(get(8)); }
    std::span<const uint8_t> bytes(size_t n) {
        if (!ok_ || in_.size() - pos_ < n) {
            ok_ = false;
            return {};
        }
        auto s = in_.subspan(pos_, n);
        pos_ += n;
        return s;
    }
    std::string str16() {
        size_t n = u16();
        auto b = bytes(n);
        return std::string(b.begin(), b.end());
    }

private:
    uint64_t get(int n) {
        if (!ok_ || in_.size() - pos_ < size_t(n)) {
            ok_ = false;
            return 0;
        }
        uint64_t v = 0;
        for (int i = 0; i < n; ++i) v |= uint64_t(in_[pos_ + i]) << (8 * i);
        pos_ += n;
        return v;
    }
    std::span<const uint8_t> in_;
    size_t pos_ = 0;
    bool ok_ = true;
};

}  // namespace of::mpegts::wire
