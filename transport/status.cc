#include "transport/status.h"

#include <cerrno>

#include "absl/strings/str_cat.h"
#include "asio/error.hpp"

namespace courier::transport {

absl::Status ErrnoStatus(int error, std::string_view what) {
  return ToStatus(asio::error_code(error, asio::system_category()), what);
}

absl::Status ToStatus(const asio::error_code& ec, std::string_view what) {
  if (!ec) return absl::OkStatus();
  std::string message = absl::StrCat(AsAbsl(what), ": ", ec.message());
  if (ec == asio::error::operation_aborted) return absl::CancelledError(message);
  if (ec == asio::error::eof)
    return absl::UnavailableError(absl::StrCat(AsAbsl(what), ": peer closed"));
  if (ec.category() == asio::system_category()) {
    switch (ec.value()) {
      case ECANCELED:
        return absl::CancelledError(message);
      case ECONNRESET:
      case EPIPE:
      case ENOTCONN:
      case ECONNABORTED:
      case ECONNREFUSED:
      case ENOENT:  // a UNIX socket path nobody listens on
      case EHOSTUNREACH:
      case ENETUNREACH:
        return absl::UnavailableError(message);
      case EADDRNOTAVAIL:  // e.g. out of ephemeral ports on connect
        return absl::UnavailableError(message);
      case EADDRINUSE:
        return absl::AlreadyExistsError(message);
      case ETIMEDOUT:
        return absl::DeadlineExceededError(message);
      default:
        return absl::ErrnoToStatus(ec.value(), message);
    }
  }
  if (ec.category() == asio::error::get_netdb_category()) return absl::UnavailableError(message);
  return absl::UnknownError(message);
}

absl::Status Annotate(const absl::Status& status, std::string_view context) {
  if (status.ok()) return status;
  return absl::Status(status.code(), absl::StrCat(AsAbsl(context), ": ", status.message()));
}

}  // namespace courier::transport
