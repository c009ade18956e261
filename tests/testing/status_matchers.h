// Status matchers and coroutine helpers for courier's tests (Abseil ships no status matchers).
#pragma once

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <optional>
#include <type_traits>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "asio/co_spawn.hpp"
#include "asio/io_context.hpp"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace courier::testing {

inline const absl::Status& GetStatus(const absl::Status& s) { return s; }
template <typename T>
const absl::Status& GetStatus(const absl::StatusOr<T>& s) {
  return s.status();
}

// EXPECT_THAT(result, StatusIs(absl::StatusCode::kUnavailable));
MATCHER_P(StatusIs, code, "has status code " + absl::StatusCodeToString(code)) {
  const absl::Status& s = ::courier::testing::GetStatus(arg);
  *result_listener << "status is " << s;
  return s.code() == code;
}
MATCHER_P2(StatusIs, code, message_matcher, "") {
  const absl::Status& s = ::courier::testing::GetStatus(arg);
  *result_listener << "status is " << s;
  return s.code() == code && ::testing::Matches(message_matcher)(std::string(s.message()));
}
MATCHER(IsOk, "is OK") {
  const absl::Status& s = ::courier::testing::GetStatus(arg);
  *result_listener << "status is " << s;
  return s.ok();
}

#define COURIER_ASSERT_OK(expr) ASSERT_THAT((expr), ::courier::testing::IsOk())
#define COURIER_EXPECT_OK(expr) EXPECT_THAT((expr), ::courier::testing::IsOk())

// Runs `op` on `io` until it completes and returns its result (RunCoro(op) uses a fresh
// io_context). Aborts the test binary after `hang_guard`, so a hang is a failure, not a stuck CI
// job. Exceptions from `op` are rethrown.
template <typename T>
T RunCoro(asio::io_context& io, asio::awaitable<T> op,
          std::chrono::steady_clock::duration hang_guard = std::chrono::seconds(10)) {
  constexpr bool kVoid = std::is_void_v<T>;
  using Stored = std::conditional_t<kVoid, bool, T>;
  std::optional<Stored> result;
  std::exception_ptr error;
  bool done = false;
  auto wrapped = [](asio::awaitable<T> op) -> asio::awaitable<Stored> {
    if constexpr (kVoid) {
      co_await std::move(op);
      co_return true;
    } else {
      co_return co_await std::move(op);
    }
  };
  asio::co_spawn(io, wrapped(std::move(op)), [&](std::exception_ptr e, Stored value) {
    error = e;
    if (!e) result.emplace(std::move(value));
    done = true;
  });
  auto until = std::chrono::steady_clock::now() + hang_guard;
  while (!done) {
    io.restart();
    if (io.run_one_until(until) == 0 && std::chrono::steady_clock::now() >= until) {
      std::fprintf(stderr, "RunCoro: coroutine still running after the hang guard\n");
      std::abort();
    }
  }
  if (error) std::rethrow_exception(error);
  if constexpr (!kVoid) return std::move(*result);
}

template <typename T>
T RunCoro(asio::awaitable<T> op,
          std::chrono::steady_clock::duration hang_guard = std::chrono::seconds(10)) {
  asio::io_context io;
  return RunCoro(io, std::move(op), hang_guard);
}

// Runs `io` until `done()` holds; false if it still does not after `timeout`. For waiting on
// effects that no coroutine returns (a handler seeing cancellation, a connection closing).
template <typename Pred>
bool RunUntil(asio::io_context& io, Pred done,
              std::chrono::steady_clock::duration timeout = std::chrono::seconds(10)) {
  const auto until = std::chrono::steady_clock::now() + timeout;
  while (!done()) {
    if (std::chrono::steady_clock::now() >= until) return false;
    io.restart();
    io.run_one_for(std::chrono::milliseconds(5));
  }
  return true;
}

}  // namespace courier::testing
