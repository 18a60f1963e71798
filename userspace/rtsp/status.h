// RTSP 1.0 status codes (RFC 2326 section 7.1.1) and the mapping from of::Error codes to them.
#pragma once

#include <string_view>

#include "common/result.h"

namespace of::rtsp {

// The reason phrase RFC 2326 gives for a status code; "Unknown" for codes it does not define.
std::string_view reason_phrase(int status);

// Maps a backend error to the status a client is answered with:
//   ENOENT 404 Not Found                 ESRCH 454 Session Not Found
//   ENOSPC, EDQUOT 453 Not Enough Bandwidth (stream count or bandwidth limits)
//   EINVAL 400 Bad Request               ENOTSUP/EOPNOTSUPP 461 Unsupported Transport
//   EBADFD 455 Method Not Valid in This State   ERANGE 457 Invalid Range
//   EACCES, EPERM 403 Forbidden          anything else 500 Internal Server Error
int rtsp_status_for(const Error& error);

}  // namespace of::rtsp
