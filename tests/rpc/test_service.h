// A service for the RPC behaviour suites: echo, sleep (observing cancellation), fail, metadata.
// Counters let tests see what handlers saw without sleeping.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <string>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "asio/steady_timer.hpp"
#include "asio/this_coro.hpp"
#include "rpc/call.h"
#include "rpc/service.h"

namespace courier::testing {

inline constexpr char kEcho[] = "/courier.test.Test/Echo";
inline constexpr char kSleep[] = "/courier.test.Test/Sleep";  // request: milliseconds
inline constexpr char kFail[] = "/courier.test.Test/Fail";    // request: status code number
inline constexpr char kInspect[] = "/courier.test.Test/Inspect";
inline constexpr char kBig[] = "/courier.test.Test/Big";  // request: response size in bytes

class TestService {
 public:
  std::atomic<int> sleep_started{0};
  std::atomic<int> sleep_cancelled{0};
  std::atomic<int> sleep_finished{0};

  TestService() {
    service_.AddRawMethod(
        kEcho,
        [](ServerContext&, std::string_view request)
            -> asio::awaitable<absl::StatusOr<std::string>> { co_return std::string(request); });
    service_.AddRawMethod(
        kSleep,
        [this](ServerContext& ctx,
               std::string_view request) -> asio::awaitable<absl::StatusOr<std::string>> {
          // Report cancellation as a Status, not an exception, so the counter sees every case.
          co_await asio::this_coro::throw_if_cancelled(false);
          ++sleep_started;
          int ms = 0;
          if (!absl::SimpleAtoi(absl::string_view(request.data(), request.size()), &ms))
            co_return absl::InvalidArgumentError("not a number");
          asio::steady_timer timer(co_await asio::this_coro::executor,
                                   std::chrono::milliseconds(ms));
          auto [ec] = co_await timer.async_wait(internal::use_nothrow);
          if (ec || ctx.cancelled()) {
            ++sleep_cancelled;
            co_return absl::CancelledError("sleep cancelled");
          }
          ++sleep_finished;
          co_return std::string(request);
        });
    service_.AddRawMethod(
        kFail,
        [](ServerContext&,
           std::string_view request) -> asio::awaitable<absl::StatusOr<std::string>> {
          int code = 0;
          if (!absl::SimpleAtoi(absl::string_view(request.data(), request.size()), &code))
            co_return absl::InvalidArgumentError("not a number");
          co_return absl::Status(static_cast<absl::StatusCode>(code), "failed on purpose");
        });
    service_.AddRawMethod(
        kInspect,
        [](ServerContext& ctx, std::string_view) -> asio::awaitable<absl::StatusOr<std::string>> {
          std::string out = absl::StrCat("method=", ctx.method(), ";peer=", ctx.peer().address);
          if (ctx.peer().credentials) {
            absl::StrAppend(&out, ";uid=", ctx.peer().credentials->uid,
                            ";pid=", ctx.peer().credentials->pid);
          }
          for (const auto& [k, v] : ctx.metadata()) absl::StrAppend(&out, ";", k, "=", v);
          const auto left = ctx.deadline() - Clock::now();
          absl::StrAppend(&out, ";deadline_ms=",
                          std::chrono::duration_cast<std::chrono::milliseconds>(left).count());
          ctx.AddResponseMetadata("served-by", "test");
          co_return out;
        });
    service_.AddRawMethod(
        kBig,
        [](ServerContext&,
           std::string_view request) -> asio::awaitable<absl::StatusOr<std::string>> {
          size_t size = 0;
          if (!absl::SimpleAtoi(absl::string_view(request.data(), request.size()), &size))
            co_return absl::InvalidArgumentError("not a number");
          co_return std::string(size, 'b');
        });
  }

  ServiceBase& service() { return service_; }

 private:
  GenericService service_;
};

}  // namespace courier::testing
