#include "common/result.h"

#include <cstring>

namespace of {

Error errno_error(const std::string& what, int err) {
    return Error{err, what + ": " + std::strerror(err)};
}

}  // namespace of
