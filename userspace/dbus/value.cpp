#include "dbus/value.h"

namespace of::dbus {

const Value* find(const Dict& d, std::string_view key) {
    for (const auto& [k, v] : d)
        if (k == key) return &v;
    return nullptr;
}

template <class T>
static const T* find_as(const Dict& d, std::string_view key) {
    const Value* v = find(d, key);
    return v ? std::get_if<T>(v) : nullptr;
}

const std::string* find_string(const Dict& d, std::string_view key) { return find_as<std::string>(d, key); }
const uint64_t* find_uint(const Dict& d, std::string_view key) { return find_as<uint64_t>(d, key); }
const int64_t* find_int(const Dict& d, std::string_view key) { return find_as<int64_t>(d, key); }
const bool* find_bool(const Dict& d, std::string_view key) { return find_as<bool>(d, key); }

namespace {

// The same rules as sd-bus (systemd's unichar_is_valid): no surrogates, nothing past U+10FFFF and no
// non-characters.
bool code_point_ok(uint32_t c) {
    if (c >= 0x110000) return false;
    if ((c & 0xFFFFF800) == 0xD800) return false;
    if (c >= 0xFDD0 && c <= 0xFDEF) return false;
    if ((c & 0xFFFE) == 0xFFFE) return false;
    return true;
}

// Length of the valid, non-NUL UTF-8 sequence at s[i], or 0 if there is none.
size_t valid_sequence(std::string_view s, size_t i) {
    const auto b0 = uint8_t(s[i]);
    if (b0 == 0) return 0;
    if (b0 < 0x80) return 1;
    size_t len;
    uint32_t c;
    if ((b0 & 0xE0) == 0xC0) {
        len = 2;
        c = b0 & 0x1F;
    } else if ((b0 & 0xF0) == 0xE0) {
        len = 3;
        c = b0 & 0x0F;
    } else if ((b0 & 0xF8) == 0xF0) {
        len = 4;
        c = b0 & 0x07;
    } else {
        return 0;
    }
    if (s.size() - i < len) return 0;
    for (size_t k = 1; k < len; ++k) {
        const auto b = uint8_t(s[i + k]);
        if ((b & 0xC0) != 0x80) return 0;
        c = (c << 6) | (b & 0x3F);
    }
    // Overlong forms are invalid: each length has a smallest code point.
    static constexpr uint32_t kMin[] = {0, 0, 0x80, 0x800, 0x10000};
    if (c < kMin[len] || !code_point_ok(c)) return 0;
    return len;
}

}  // namespace

bool utf8_valid(std::string_view s) {
    for (size_t i = 0; i < s.size();) {
        const size_t n = valid_sequence(s, i);
        if (n == 0) return false;
        i += n;
    }
    return true;
}

std::string utf8_sanitize(std::string_view s) {
    if (utf8_valid(s)) return std::string(s);
    std::string out;
    out.reserve(s.size() + 8);
    for (size_t i = 0; i < s.size();) {
        const size_t n = valid_sequence(s, i);
        if (n == 0) {
            out += "\xEF\xBF\xBD";  // U+FFFD REPLACEMENT CHARACTER
            ++i;
        } else {
            out.append(s.substr(i, n));
            i += n;
        }
    }
    return out;
}

}  // namespace of::dbus
