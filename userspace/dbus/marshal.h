// Dict <-> D-Bus a{sv} and List <-> aa{sv} on sd-bus messages.
#pragma once

#include <systemd/sd-bus.h>

#include <cstddef>

#include "common/result.h"
#include "dbus/value.h"

namespace of::dbus {

// Bounds on what a reader accepts; the sender of a message controls its contents.
struct ReadLimits {
    size_t max_entries = 256;         // entries in one dictionary
    size_t max_items = 100'000;       // dictionaries in one list
    size_t max_key_bytes = 256;
    size_t max_string_bytes = 65'536;
};

// Appends a{sv} / aa{sv}. Strings that are not valid UTF-8 (or hold NUL) are sanitized, so a
// reply never fails on a file name the daemon read from disk.
Status append_dict(sd_bus_message* m, const Dict& d);
Status append_list(sd_bus_message* m, const List& l);

// Reads a{sv} / aa{sv} at the message's read position. Variant values may be b y n q i u x t d s o g
// (integers are widened); any other type, an empty or duplicate key and anything past the limits is
// an error: EBADMSG for a malformed message, E2BIG for a limit.
Result<Dict> read_dict(sd_bus_message* m, const ReadLimits& limits = {});
Result<List> read_list(sd_bus_message* m, const ReadLimits& limits = {});

}  // namespace of::dbus
