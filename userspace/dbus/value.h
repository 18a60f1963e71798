// The values the daemon's D-Bus API carries. Every reply is a dictionary (D-Bus a{sv}) or a list of
// them (aa{sv}), so that foctl, scripts and busctl can show any reply without knowing its method.
// A Dict keeps its keys in insertion order: human output and JSON come out in the order the daemon
// chose, and stay stable for scripts.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

namespace of::dbus {

// D-Bus types b, x, t, d, s. Integers of other widths read from a message are widened to x or t.
using Value = std::variant<bool, int64_t, uint64_t, double, std::string>;
using Dict = std::vector<std::pair<std::string, Value>>;
using List = std::vector<Dict>;

// The value stored under key, or nullptr.
const Value* find(const Dict& d, std::string_view key);

// Typed look-ups: nullptr when the key is absent or holds another type.
const std::string* find_string(const Dict& d, std::string_view key);
const uint64_t* find_uint(const Dict& d, std::string_view key);
const int64_t* find_int(const Dict& d, std::string_view key);
const bool* find_bool(const Dict& d, std::string_view key);

// D-Bus strings must be valid UTF-8 without NUL (sd-bus refuses anything else, and a refused reply
// would leave the caller waiting for its timeout). Replaces each invalid sequence, each
// non-character and each NUL by U+FFFD.
std::string utf8_sanitize(std::string_view s);
bool utf8_valid(std::string_view s);

}  // namespace of::dbus
