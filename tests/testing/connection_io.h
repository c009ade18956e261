// Writing and reading a transport::Connection whole, for the transport tests.
#pragma once

#include <cstddef>
#include <span>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "asio/awaitable.hpp"
#include "asio/buffer.hpp"
#include "transport/transport.h"

namespace courier::testing {

// All of `data`, in one Write.
inline asio::awaitable<absl::Status> Write(transport::Connection& connection,
                                           std::string_view data) {
  asio::const_buffer buffer(data.data(), data.size());
  co_return co_await connection.Write(std::span<const asio::const_buffer>(&buffer, 1));
}

// Exactly `n` bytes; kDataLoss if the stream ends first.
inline asio::awaitable<absl::StatusOr<std::string>> ReadExactly(transport::Connection& connection,
                                                                size_t n) {
  std::string data(n, '\0');
  size_t filled = 0;
  while (filled < n) {
    absl::StatusOr<size_t> got =
        co_await connection.Read(asio::buffer(data.data() + filled, n - filled));
    if (!got.ok()) co_return got.status();
    if (*got == 0) {
      co_return absl::DataLossError(absl::StrCat("end of stream after ", filled, " of ", n));
    }
    filled += *got;
  }
  co_return data;
}

}  // namespace courier::testing
