// The client side of the D-Bus API, used by foctl and by tests and tools that drive oneframed.
#pragma once

#include <systemd/sd-bus.h>

#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "common/result.h"
#include "dbus/api.h"
#include "dbus/marshal.h"
#include "dbus/value.h"

namespace of::dbus {

// One method argument; its D-Bus type follows from the alternative: s b u t x d a{sv}.
using Arg = std::variant<std::string, bool, uint32_t, uint64_t, int64_t, double, Dict>;
// A decoded reply: nothing, a dictionary or a list, as the Method says.
using Response = std::variant<std::monostate, Dict, List>;

class Client {
public:
    // address: a D-Bus address such as "unix:path=/run/x/bus"; empty means the system bus. The
    // timeout bounds connecting and authenticating as well as each call's default.
    static Result<Client> connect(const std::string& address, std::chrono::microseconds timeout);

    Client(Client&& o) noexcept;
    Client& operator=(Client&& o) noexcept;
    Client(const Client&) = delete;
    Client& operator=(const Client&) = delete;
    ~Client();

    // Calls method on kBusName/kObjectPath/kInterface and waits at most timeout for the answer.
    // Errors: the daemon's own (codes as in api.h), EINVAL if args do not match the method's
    // signature, EHOSTDOWN if nobody owns kBusName, ETIMEDOUT, EACCES if the bus policy refuses,
    // EOPNOTSUPP if the daemon does not know the method, EBADMSG for a malformed reply.
    Result<Response> call(const Method& method, const std::vector<Arg>& args, std::chrono::microseconds timeout,
                          const ReadLimits& limits = {});

    sd_bus* bus() const { return bus_; }

private:
    explicit Client(sd_bus* bus) : bus_(bus) {}
    sd_bus* bus_ = nullptr;
};

// The D-Bus signature of a list of arguments, e.g. "sa{sv}".
std::string signature_of(const std::vector<Arg>& args);

// Turns a D-Bus error reply into an of::Error (code from api.h for oneframe errors, a readable
// message for the bus's own errors). method names the call in messages.
Error error_from_bus(const sd_bus_error& e, int r, const Method& method, std::chrono::microseconds timeout);

}  // namespace of::dbus
