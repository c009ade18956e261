// Turns Asio error codes into absl::Status, in one place (STYLE §5). Transport layer.
#pragma once

#include <string_view>

#include "absl/status/status.h"
#include "asio/error_code.hpp"

namespace courier::transport {

// Debian's Abseil has its own string_view type; StrCat and Status take it, not std::string_view.
inline absl::string_view AsAbsl(std::string_view s) {
  return absl::string_view(s.data(), s.size());
}

// operation_aborted/ECANCELED → kCancelled; ECONNRESET, EPIPE, ENOTCONN, ECONNABORTED,
// ECONNREFUSED, EOF → kUnavailable; ETIMEDOUT → kDeadlineExceeded; other system errors via
// absl::ErrnoToStatus; other categories kUnknown. The message is "what: reason".
absl::Status ToStatus(const asio::error_code& ec, std::string_view what);

// ToStatus for a system call's errno.
absl::Status ErrnoStatus(int error, std::string_view what);

// Prefixes `context` to the message, keeping the code. OK stays OK.
absl::Status Annotate(const absl::Status& status, std::string_view context);

}  // namespace courier::transport
