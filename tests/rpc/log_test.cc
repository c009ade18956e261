// LogRateLimited: lines a peer can cause are bounded, and what was dropped is counted.
#include "rpc/log.h"

#include <chrono>
#include <string>
#include <thread>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace courier {
namespace {

using ::testing::HasSubstr;

TEST(LogRateLimited, KeepsABurstThenSaysHowManyItDropped) {
  std::vector<std::string> lines;
  SetLogSink([&](LogSeverity, std::string_view line) { lines.emplace_back(line); });
  for (int i = 0; i < 10 * kLogBurst; ++i) LogRateLimited(LogSeverity::kWarning, "bad peer");
  EXPECT_GE(lines.size(), size_t(kLogBurst));
  EXPECT_LE(lines.size(), size_t(kLogBurst) + 2) << "the rest were dropped";
  // Once the budget refills, the next line reports the suppressed ones.
  SetLogSink([&](LogSeverity, std::string_view line) { lines.emplace_back(line); });
  lines.clear();
  LogRateLimited(LogSeverity::kWarning, "first after reset");
  ASSERT_EQ(lines.size(), 1u);
  EXPECT_EQ(lines[0], "first after reset");
  SetLogSink(nullptr);
}

TEST(LogRateLimited, ReportsSuppressedLines) {
  std::vector<std::string> lines;
  SetLogSink([&](LogSeverity, std::string_view line) { lines.emplace_back(line); });
  for (int i = 0; i < kLogBurst + 50; ++i) LogRateLimited(LogSeverity::kWarning, "flood");
  const size_t kept = lines.size();
  // The budget refills at kLogLinesPerSecond: wait for one line's worth.
  std::this_thread::sleep_for(std::chrono::milliseconds(1000 / kLogLinesPerSecond + 50));
  LogRateLimited(LogSeverity::kWarning, "later");
  ASSERT_EQ(lines.size(), kept + 1);
  EXPECT_THAT(lines.back(), HasSubstr("similar lines suppressed"));
  SetLogSink(nullptr);
}

TEST(Log, PlainLogIsNotLimited) {
  int count = 0;
  SetLogSink([&](LogSeverity, std::string_view) { ++count; });
  for (int i = 0; i < 5 * kLogBurst; ++i) Log(LogSeverity::kInfo, "x");
  EXPECT_EQ(count, 5 * kLogBurst);
  SetLogSink(nullptr);
}

}  // namespace
}  // namespace courier
