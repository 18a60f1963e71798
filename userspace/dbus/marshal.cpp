#include "dbus/marshal.h"

#include <cstring>
#include <set>
#include <string>

namespace of::dbus {

namespace {

Error sd_error(const std::string& what, int r) { return errno_error(what, -r); }

Status append_value(sd_bus_message* m, const Value& v) {
    int r = 0;
    switch (v.index()) {
        case 0: r = sd_bus_message_append(m, "v", "b", int(std::get<bool>(v))); break;
        case 1: r = sd_bus_message_append(m, "v", "x", std::get<int64_t>(v)); break;
        case 2: r = sd_bus_message_append(m, "v", "t", std::get<uint64_t>(v)); break;
        case 3: r = sd_bus_message_append(m, "v", "d", std::get<double>(v)); break;
        case 4: r = sd_bus_message_append(m, "v", "s", utf8_sanitize(std::get<std::string>(v)).c_str()); break;
    }
    if (r < 0) return sd_error("append variant", r);
    return {};
}

}  // namespace

Status append_dict(sd_bus_message* m, const Dict& d) {
    int r = sd_bus_message_open_container(m, 'a', "{sv}");
    if (r < 0) return sd_error("open a{sv}", r);
    for (const auto& [key, value] : d) {
        r = sd_bus_message_open_container(m, 'e', "sv");
        if (r < 0) return sd_error("open dict entry", r);
        r = sd_bus_message_append_basic(m, 's', utf8_sanitize(key).c_str());
        if (r < 0) return sd_error("append key", r);
        if (auto s = append_value(m, value); !s) return s;
        r = sd_bus_message_close_container(m);
        if (r < 0) return sd_error("close dict entry", r);
    }
    r = sd_bus_message_close_container(m);
    if (r < 0) return sd_error("close a{sv}", r);
    return {};
}

Status append_list(sd_bus_message* m, const List& l) {
    int r = sd_bus_message_open_container(m, 'a', "a{sv}");
    if (r < 0) return sd_error("open aa{sv}", r);
    for (const Dict& d : l)
        if (auto s = append_dict(m, d); !s) return s;
    r = sd_bus_message_close_container(m);
    if (r < 0) return sd_error("close aa{sv}", r);
    return {};
}

namespace {

Error malformed(const std::string& what) { return make_error(EBADMSG, what); }

// Reads the variant at the read position into v; the key names the entry in messages.
Status read_variant(sd_bus_message* m, const std::string& key, const ReadLimits& lim, Value& v) {
    char type = 0;
    const char* contents = nullptr;
    int r = sd_bus_message_peek_type(m, &type, &contents);
    if (r <= 0 || type != 'v' || !contents) return malformed("entry '" + key + "': value is not a variant");
    if (std::strlen(contents) != 1)
        return malformed("entry '" + key + "': unsupported value type '" + contents + "'");
    const char t = contents[0];
    r = sd_bus_message_enter_container(m, 'v', contents);
    if (r < 0) return sd_error("entry '" + key + "'", r);
    union {
        int b;
        uint8_t y;
        int16_t n;
        uint16_t q;
        int32_t i;
        uint32_t u;
        int64_t x;
        uint64_t t;
        double d;
        const char* s;
    } u{};
    switch (t) {
        case 'b': case 'y': case 'n': case 'q': case 'i': case 'u': case 'x': case 't': case 'd':
        case 's': case 'o': case 'g':
            r = sd_bus_message_read_basic(m, t, &u);
            if (r <= 0) return malformed("entry '" + key + "': unreadable value");
            break;
        default:
            return malformed("entry '" + key + "': unsupported value type '" + contents + "'");
    }
    switch (t) {
        case 'b': v = bool(u.b); break;
        case 'y': v = uint64_t(u.y); break;
        case 'n': v = int64_t(u.n); break;
        case 'q': v = uint64_t(u.q); break;
        case 'i': v = int64_t(u.i); break;
        case 'u': v = uint64_t(u.u); break;
        case 'x': v = u.x; break;
        case 't': v = u.t; break;
        case 'd': v = u.d; break;
        default: {
            const size_t len = std::strlen(u.s);
            if (len > lim.max_string_bytes)
                return make_error(E2BIG, "entry '" + key + "': string of " + std::to_string(len) +
                                             " bytes exceeds the limit of " + std::to_string(lim.max_string_bytes));
            v = std::string(u.s, len);
        }
    }
    r = sd_bus_message_exit_container(m);
    if (r < 0) return sd_error("entry '" + key + "'", r);
    return {};
}

}  // namespace

Result<Dict> read_dict(sd_bus_message* m, const ReadLimits& lim) {
    int r = sd_bus_message_enter_container(m, 'a', "{sv}");
    if (r <= 0) return malformed("expected a dictionary a{sv}");
    Dict d;
    std::set<std::string, std::less<>> seen;
    while ((r = sd_bus_message_enter_container(m, 'e', "sv")) > 0) {
        if (d.size() >= lim.max_entries)
            return make_error(E2BIG, "dictionary has more than " + std::to_string(lim.max_entries) + " entries");
        const char* k = nullptr;
        r = sd_bus_message_read_basic(m, 's', &k);
        if (r <= 0) return malformed("dictionary key unreadable");
        std::string key(k);
        if (key.empty()) return malformed("dictionary has an empty key");
        if (key.size() > lim.max_key_bytes)
            return make_error(E2BIG, "dictionary key of " + std::to_string(key.size()) + " bytes exceeds the limit of " +
                                         std::to_string(lim.max_key_bytes));
        if (!seen.insert(key).second) return malformed("dictionary key '" + key + "' appears twice");
        Value v;
        if (auto s = read_variant(m, key, lim, v); !s) return s.error();
        r = sd_bus_message_exit_container(m);
        if (r < 0) return sd_error("dictionary entry '" + key + "'", r);
        d.emplace_back(std::move(key), std::move(v));
    }
    if (r < 0) return sd_error("dictionary entry", r);
    r = sd_bus_message_exit_container(m);
    if (r < 0) return sd_error("dictionary", r);
    return d;
}

Result<List> read_list(sd_bus_message* m, const ReadLimits& lim) {
    int r = sd_bus_message_enter_container(m, 'a', "a{sv}");
    if (r <= 0) return malformed("expected a list of dictionaries aa{sv}");
    List l;
    for (;;) {
        r = sd_bus_message_at_end(m, 0);
        if (r < 0) return sd_error("list", r);
        if (r > 0) break;
        if (l.size() >= lim.max_items)
            return make_error(E2BIG, "list has more than " + std::to_string(lim.max_items) + " items");
        auto d = read_dict(m, lim);
        if (!d) return d.error();
        l.push_back(std::move(*d));
    }
    r = sd_bus_message_exit_container(m);
    if (r < 0) return sd_error("list", r);
    return l;
}

}  // namespace of::dbus
