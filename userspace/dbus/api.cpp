#include "dbus/api.h"

#include <cerrno>

namespace of::dbus {

const Method* find_method(std::string_view name) {
    for (const Method* m : kMethods)
        if (name == m->name) return m;
    return nullptr;
}

const char* reply_signature(Returns r) {
    switch (r) {
        case Returns::Dict: return "a{sv}";
        case Returns::List: return "aa{sv}";
        case Returns::Nothing: break;
    }
    return "";
}

namespace {

struct Mapping {
    int code;
    const char* suffix;
};

// The first row for a suffix is the code it maps back to on the client side.
constexpr Mapping kErrors[] = {
    {ENOENT, "NotFound"},     {ESRCH, "NotFound"},
    {EEXIST, "Exists"},
    {EINVAL, "Invalid"},      {ERANGE, "Invalid"},      {EBADMSG, "Invalid"},      {ENAMETOOLONG, "Invalid"},
    {EBADFD, "Refused"},      {EBUSY, "Refused"},       {EALREADY, "Refused"},
    {EPERM, "AccessDenied"},  {EACCES, "AccessDenied"},
    {EOPNOTSUPP, "NotSupported"}, {ENOSYS, "NotSupported"},
    {E2BIG, "LimitExceeded"}, {ENOSPC, "LimitExceeded"}, {EDQUOT, "LimitExceeded"},
    {ETIMEDOUT, "Timeout"},
    {EIO, "Failed"},
};

}  // namespace

std::string error_name(int code) {
    for (const auto& m : kErrors)
        if (m.code == code) return std::string(kErrorPrefix) + m.suffix;
    return std::string(kErrorPrefix) + "Failed";
}

int error_code(std::string_view name) {
    if (name.substr(0, kErrorPrefix.size()) != kErrorPrefix) return 0;
    const std::string_view suffix = name.substr(kErrorPrefix.size());
    for (const auto& m : kErrors)
        if (suffix == m.suffix) return m.code;
    return EIO;
}

}  // namespace of::dbus
