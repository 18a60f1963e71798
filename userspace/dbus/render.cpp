#include "dbus/render.h"

#include <cmath>
#include <cstdio>
#include <set>
#include <vector>

namespace of::dbus {

std::string json_string(std::string_view raw) {
    const std::string s = utf8_sanitize(raw);
    std::string out = "\"";
    for (const char ch : s) {
        const auto c = static_cast<unsigned char>(ch);
        switch (c) {
            case '"': out += "\\\""; break;
            case '\\': out += "\\\\"; break;
            case '\b': out += "\\b"; break;
            case '\f': out += "\\f"; break;
            case '\n': out += "\\n"; break;
            case '\r': out += "\\r"; break;
            case '\t': out += "\\t"; break;
            default:
                if (c < 0x20 || c == 0x7F) {
                    char buf[8];
                    std::snprintf(buf, sizeof buf, "\\u%04x", c);
                    out += buf;
                } else {
                    out += ch;
                }
        }
    }
    out += '"';
    return out;
}

namespace {

std::string number(double d, const char* fmt) {
    char buf[64];
    std::snprintf(buf, sizeof buf, fmt, d);
    return buf;
}

bool is_number(const Value& v) { return v.index() >= 1 && v.index() <= 3; }

}  // namespace

std::string to_json(const Value& v) {
    switch (v.index()) {
        case 0: return std::get<bool>(v) ? "true" : "false";
        case 1: return std::to_string(std::get<int64_t>(v));
        case 2: return std::to_string(std::get<uint64_t>(v));
        case 3: {
            const double d = std::get<double>(v);
            if (!std::isfinite(d)) return "null";
            // %.17g round-trips every double; a value without '.', 'e' would read back as an integer,
            // which JSON does not distinguish anyway.
            return number(d, "%.17g");
        }
        default: return json_string(std::get<std::string>(v));
    }
}

std::string to_json(const Dict& d) {
    std::string out = "{";
    for (size_t i = 0; i < d.size(); ++i) {
        if (i) out += ',';
        out += json_string(d[i].first);
        out += ':';
        out += to_json(d[i].second);
    }
    out += '}';
    return out;
}

std::string to_json(const List& l) {
    std::string out = "[";
    for (size_t i = 0; i < l.size(); ++i) {
        if (i) out += ',';
        out += to_json(l[i]);
    }
    out += ']';
    return out;
}

namespace {

std::string printable(std::string_view raw) {
    const std::string s = utf8_sanitize(raw);
    std::string out;
    out.reserve(s.size());
    for (const char ch : s) {
        const auto c = static_cast<unsigned char>(ch);
        if (c == '\n') {
            out += "\\n";
        } else if (c == '\t') {
            out += "\\t";
        } else if (c == '\\') {
            out += "\\\\";
        } else if (c < 0x20 || c == 0x7F) {
            char buf[8];
            std::snprintf(buf, sizeof buf, "\\x%02x", c);
            out += buf;
        } else {
            out += ch;
        }
    }
    return out;
}

// Terminal columns a UTF-8 string takes, counting one per code point (no wide-character tables:
// names are mostly ASCII, and a misaligned column is harmless).
size_t width(std::string_view s) {
    size_t w = 0;
    for (const char ch : s)
        if ((static_cast<unsigned char>(ch) & 0xC0) != 0x80) ++w;
    return w;
}

std::string pad(const std::string& s, size_t w, bool right) {
    const size_t have = width(s);
    if (have >= w) return s;
    return right ? std::string(w - have, ' ') + s : s + std::string(w - have, ' ');
}

}  // namespace

std::string to_text(const Value& v) {
    switch (v.index()) {
        case 0: return std::get<bool>(v) ? "yes" : "no";
        case 1: return std::to_string(std::get<int64_t>(v));
        case 2: return std::to_string(std::get<uint64_t>(v));
        case 3: return number(std::get<double>(v), "%.6g");
        default: return printable(std::get<std::string>(v));
    }
}

std::string to_text(const Dict& d) {
    size_t w = 0;
    for (const auto& [k, v] : d) w = std::max(w, width(printable(k)) + 1);
    std::string out;
    for (const auto& [k, v] : d) {
        out += pad(printable(k) + ":", w, false);
        out += ' ';
        out += to_text(v);
        out += '\n';
    }
    return out;
}

std::string to_table(const List& l) {
    if (l.empty()) return "";
    std::vector<std::string> keys;
    std::set<std::string, std::less<>> seen;
    for (const Dict& d : l)
        for (const auto& [k, v] : d)
            if (seen.insert(k).second) keys.push_back(k);
    // Cells, and whether each column holds only numbers (right-aligned).
    std::vector<std::vector<std::string>> rows;
    std::vector<size_t> w(keys.size());
    std::vector<bool> numeric(keys.size(), true);
    std::vector<std::string> header;
    for (size_t c = 0; c < keys.size(); ++c) {
        header.push_back(printable(keys[c]));
        w[c] = width(header[c]);
    }
    for (const Dict& d : l) {
        std::vector<std::string> row;
        for (size_t c = 0; c < keys.size(); ++c) {
            const Value* v = find(d, keys[c]);
            row.push_back(v ? to_text(*v) : "-");
            if (v && !is_number(*v)) numeric[c] = false;
            w[c] = std::max(w[c], width(row.back()));
        }
        rows.push_back(std::move(row));
    }
    auto line = [&](const std::vector<std::string>& cells) {
        std::string out;
        for (size_t c = 0; c < cells.size(); ++c) {
            const bool last = c + 1 == cells.size();
            // The last column is not padded on the right: no trailing blanks.
            out += (last && !numeric[c]) ? cells[c] : pad(cells[c], w[c], numeric[c]);
            if (!last) out += "  ";
        }
        return out + '\n';
    };
    std::string out = line(header);
    for (const auto& r : rows) out += line(r);
    return out;
}

}  // namespace of::dbus
