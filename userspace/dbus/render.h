// Generic rendering of replies for foctl: JSON for scripts, aligned text for people.
#pragma once

#include <string>
#include <string_view>

#include "dbus/value.h"

namespace of::dbus {

// JSON, one line, keys in the Dict's order. Strings are escaped per RFC 8259 (control characters
// as \u00XX; other UTF-8 passes through; invalid UTF-8 becomes U+FFFD). Doubles that JSON cannot
// represent (NaN, infinities) become null.
std::string json_string(std::string_view s);
std::string to_json(const Value& v);
std::string to_json(const Dict& d);
std::string to_json(const List& l);

// One value for a terminal: bools as yes/no, doubles with up to 6 significant digits, strings
// with control characters escaped (\n, \t, \xNN) so that a daemon-supplied name cannot move the
// cursor or change the terminal's state.
std::string to_text(const Value& v);
// "key: value" lines, values aligned in one column.
std::string to_text(const Dict& d);
// A table: one column per key (in first-seen order over all rows), a header line of the keys,
// numbers right-aligned, "-" where a row lacks a key. An empty list renders as "".
std::string to_table(const List& l);

}  // namespace of::dbus
