#include "dbus/client.h"

#include <cstring>
#include <sstream>
#include <utility>

namespace of::dbus {

Result<Client> Client::connect(const std::string& address, std::chrono::microseconds timeout) {
    sd_bus* bus = nullptr;
    int r;
    if (address.empty()) {
        r = sd_bus_open_system(&bus);
        if (r < 0) return errno_error("cannot connect to the system bus", -r);
    } else {
        r = sd_bus_new(&bus);
        if (r < 0) return errno_error("sd_bus_new", -r);
        r = sd_bus_set_address(bus, address.c_str());
        if (r >= 0) r = sd_bus_set_bus_client(bus, 1);
        if (r >= 0) r = sd_bus_start(bus);
        if (r < 0) {
            sd_bus_unref(bus);
            return errno_error("cannot connect to bus " + address, -r);
        }
    }
    // Bounds the wait for authentication and Hello too, which happen on the first call.
    r = sd_bus_set_method_call_timeout(bus, uint64_t(timeout.count()));
    if (r < 0) {
        sd_bus_unref(bus);
        return errno_error("sd_bus_set_method_call_timeout", -r);
    }
    return Client(bus);
}

Client::Client(Client&& o) noexcept : bus_(std::exchange(o.bus_, nullptr)) {}

Client& Client::operator=(Client&& o) noexcept {
    if (this != &o) {
        sd_bus_flush_close_unref(bus_);
        bus_ = std::exchange(o.bus_, nullptr);
    }
    return *this;
}

Client::~Client() { sd_bus_flush_close_unref(bus_); }

std::string signature_of(const std::vector<Arg>& args) {
    static constexpr const char* kSig[] = {"s", "b", "u", "t", "x", "d", "a{sv}"};
    static_assert(std::variant_size_v<Arg> == std::size(kSig));
    std::string sig;
    for (const Arg& a : args) sig += kSig[a.index()];
    return sig;
}

namespace {

Status append_arg(sd_bus_message* m, const Arg& a) {
    int r = 0;
    switch (a.index()) {
        case 0: r = sd_bus_message_append_basic(m, 's', utf8_sanitize(std::get<std::string>(a)).c_str()); break;
        case 1: {
            int b = std::get<bool>(a);
            r = sd_bus_message_append_basic(m, 'b', &b);
            break;
        }
        case 2: r = sd_bus_message_append_basic(m, 'u', &std::get<uint32_t>(a)); break;
        case 3: r = sd_bus_message_append_basic(m, 't', &std::get<uint64_t>(a)); break;
        case 4: r = sd_bus_message_append_basic(m, 'x', &std::get<int64_t>(a)); break;
        case 5: r = sd_bus_message_append_basic(m, 'd', &std::get<double>(a)); break;
        case 6: return append_dict(m, std::get<Dict>(a));
    }
    if (r < 0) return errno_error("append argument", -r);
    return {};
}

std::string seconds(std::chrono::microseconds t) {
    std::ostringstream o;
    o << double(t.count()) / 1e6 << " s";
    return o.str();
}

}  // namespace

Error error_from_bus(const sd_bus_error& e, int r, const Method& method, std::chrono::microseconds timeout) {
    const std::string name = e.name ? e.name : "";
    const std::string text = e.message ? e.message : "";
    if (int code = error_code(name)) return make_error(code, text.empty() ? std::strerror(code) : text);
    if (name == "org.freedesktop.DBus.Error.ServiceUnknown" || name == "org.freedesktop.DBus.Error.NameHasNoOwner")
        return make_error(EHOSTDOWN, std::string("oneframed is not running (nobody owns ") + kBusName + " on this bus)");
    if (r == -ETIMEDOUT || name == "org.freedesktop.DBus.Error.NoReply" || name == "org.freedesktop.DBus.Error.Timeout")
        return make_error(ETIMEDOUT, std::string("no answer from oneframed to ") + method.name + " within " + seconds(timeout));
    if (name == "org.freedesktop.DBus.Error.AccessDenied")
        return make_error(EACCES, std::string("the bus policy refuses ") + method.name + " to this user (" + text + ")");
    if (name == "org.freedesktop.DBus.Error.UnknownMethod" || name == "org.freedesktop.DBus.Error.UnknownObject" ||
        name == "org.freedesktop.DBus.Error.UnknownInterface")
        return make_error(EOPNOTSUPP, std::string("this oneframed does not offer ") + method.name + " (" + text + ")");
    if (!name.empty()) return make_error(sd_bus_error_get_errno(&e) > 0 ? sd_bus_error_get_errno(&e) : EIO, name + ": " + text);
    return errno_error(std::string("calling ") + method.name, r < 0 ? -r : EIO);
}

Result<Response> Client::call(const Method& method, const std::vector<Arg>& args, std::chrono::microseconds timeout,
                              const ReadLimits& limits) {
    if (!bus_) return make_error(EINVAL, "not connected");
    const std::string sig = signature_of(args);
    if (sig != method.signature)
        return make_error(EINVAL, std::string(method.name) + " takes (" + method.signature + "), not (" + sig + ")");
    sd_bus_message* m = nullptr;
    int r = sd_bus_message_new_method_call(bus_, &m, kBusName, kObjectPath, kInterface, method.name);
    if (r < 0) return errno_error("cannot build the call", -r);
    for (const Arg& a : args) {
        if (auto s = append_arg(m, a); !s) {
            sd_bus_message_unref(m);
            return s.error();
        }
    }
    sd_bus_error err = SD_BUS_ERROR_NULL;
    sd_bus_message* reply = nullptr;
    r = sd_bus_call(bus_, m, uint64_t(timeout.count()), &err, &reply);
    sd_bus_message_unref(m);
    if (r < 0) {
        Error e = error_from_bus(err, r, method, timeout);
        sd_bus_error_free(&err);
        return e;
    }
    Result<Response> out = Response{};
    switch (method.returns) {
        case Returns::Nothing: break;
        case Returns::Dict: {
            auto d = read_dict(reply, limits);
            if (!d) out = make_error(d.error().code, std::string("bad reply to ") + method.name + ": " + d.error().message);
            else out = Response{std::move(*d)};
            break;
        }
        case Returns::List: {
            auto l = read_list(reply, limits);
            if (!l) out = make_error(l.error().code, std::string("bad reply to ") + method.name + ": " + l.error().message);
            else out = Response{std::move(*l)};
            break;
        }
    }
    sd_bus_message_unref(reply);
    return out;
}

}  // namespace of::dbus
