#include "abuse/scenarios.h"

#include <unistd.h>

#include <algorithm>
#include <cerrno>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace courier::abuse {

void Report::Write(std::string line) {
  std::replace(line.begin(), line.end(), '\n', ' ');
  line += '\n';
  const char* data = line.data();
  size_t size = line.size();
  while (size > 0) {
    ssize_t n = write(fd_, data, size);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return;
    data += n;
    size -= static_cast<size_t>(n);
  }
}

void Report::Detail(std::string_view text) { Write(absl::StrCat("detail ", std::string(text))); }

void Report::Figure(std::string_view headline, std::string_view text) {
  std::string h(headline);
  std::replace(h.begin(), h.end(), '\t', ' ');
  Write(absl::StrCat("figure ", h, "\t", std::string(text)));
}

std::string Mib(double mib) { return absl::StrFormat("%.1f MiB", mib); }
std::string Grow(double delta) { return absl::StrFormat("%+.1f MiB", delta); }
std::string Seconds(double s) { return absl::StrFormat("%.2f s", s); }

std::span<const Scenario> AllScenarios() {
  // name, what, needs_server, stops_server, bound_seconds, run
  static constexpr Scenario kScenarios[] = {
      {"header-commit", "connections that send only a frame header declaring 64 MiB: server RSS",
       true, false, 60, &HeaderCommit},
      {"non-reading-client", "3000 x 64 KiB echo requests, responses never read: server RSS", true,
       false, 90, &NonReadingClient},
      {"sleeping-handlers", "100k Sleep(60 s) calls on one connection: server RSS, refused", true,
       false, 120, &SleepingHandlers},
      {"sleeping-handlers-channel",
       "the same through one courier::Channel: server and client RSS, where calls wait", true,
       false, 120, &SleepingHandlersChannel},
      {"unread-pongs", "1M pings whose pongs are never read: server RSS", true, false, 120,
       &UnreadPongs},
      {"shutdown-non-reading", "SIGTERM with a non-reading client connected: time to exit", true,
       true, 90, &ShutdownNonReading},
      {"flood-fairness", "echo p50/p99 while another connection floods REQUEST+CANCEL", true, false,
       150, &FloodFairness},
      {"deadline-scan", "500 short-deadline calls/s beside 100k open calls: server CPU", true,
       false, 240, &DeadlineScan},
      {"idle-connections", "10k idle channels: server and client RSS per connection", true, false,
       300, &IdleConnections},
      {"dead-server", "calls to an endpoint with no server: connects/s, failed calls", false, false,
       90, &DeadServer},
      {"stopped-server", "SIGSTOPped server: client RSS, one-call process exit time", true, false,
       120, &StoppedServer},
  };
  return kScenarios;
}

}  // namespace courier::abuse
