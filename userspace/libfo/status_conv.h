// Internal to libfo: the uapi status struct to Status, and what each errno means here.
#pragma once

#include "libfo/libfo.h"

#include <cerrno>
#include <cstring>
#include <string>

namespace of::fo {

inline Status from_uapi(const fo_status& st) {
    Status s;
    s.now = FoState{Type(st.type), State(st.state)};
    s.last_cause = Cause(st.last_cause);
    s.generation = st.generation;
    s.message_armed = (st.flags & FO_STATUS_MESSAGE_ARMED) != 0;
    s.registered = st.registered;
    s.critical = st.critical;
    s.messages_sent = st.messages_sent;
    s.message_errors = st.message_errors;
    s.signals_dropped = st.signals_dropped;
    s.critical_deaths = st.critical_deaths;
    return s;
}

// The same errno means the same thing on both backends (kmod/include/uapi/linux/failover.h).
inline std::string errno_meaning(int e) {
    switch (e) {
    case EPROTO: return "transition not allowed by Fig. 5";
    case ESTALE: return "current state is not the expected one";
    case EPERM: return "refused: needs CAP_NET_ADMIN (or not the registering process)";
    case ENOSPC: return "too many registrations (" + std::to_string(FO_MAX_REGISTRATIONS) + ")";
    case EBUSY: return "registered by another process";
    case ENOENT: return "not registered";
    case EINVAL: return "invalid argument";
    default: return std::strerror(e);
    }
}

}  // namespace of::fo
