// courier-abuse: runs abuse scenarios against a courier server and prints the figures.
//
//   courier-abuse [--quick] [--transport unix|tcp] [--scenario NAME]... [--list] [--keep-logs]
//                 [--echo-client PATH]
//
// Each scenario runs in a forked child, against a fresh `courier-abuse --serve URI` process
// when it needs a server, within a time bound (after which it reports "timed out after X s"
// and both are killed). Prints "NAME: FIGURE (details)" per scenario and a table at the end.
// Exit status 0 when every scenario produced a figure, 1 otherwise, 2 on bad flags.
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "abuse/process.h"
#include "abuse/scenarios.h"
#include "abuse/server.h"
#include "transport/registry.h"

namespace courier::abuse {
namespace {

struct Flags {
  bool quick = false;
  bool list = false;
  bool keep_logs = false;
  std::string transport = "unix";
  std::vector<std::string> scenarios;
  std::string echo_client;  // empty: look next to this binary
};

struct Outcome {
  std::string name;
  std::string headline;
  double seconds = 0;
  bool ok = false;
};

int Usage() {
  std::fprintf(stderr,
               "usage: courier-abuse [--quick] [--transport unix|tcp] [--scenario NAME]... "
               "[--list] [--keep-logs] [--echo-client PATH]\n"
               "       courier-abuse --serve URI\n"
               "       courier-abuse --one-call URI [--timeout-ms MS] [--blocking]\n");
  return 2;
}

// The server under test, started afresh for a scenario.
struct ServerProcess {
  Spawned process;
  std::string uri;
  std::string log_path;
};

absl::StatusOr<ServerProcess> StartServer(const std::string& exe, const std::string& transport,
                                          const std::string& log_path) {
  absl::StatusOr<const transport::TransportInfo*> info = transport::FindTransport(transport);
  if (!info.ok()) return info.status();
  const std::string listen = (*info)->loopback_endpoint().ToString();
  absl::StatusOr<Spawned> child = Spawn({exe, "--serve", listen}, log_path);
  if (!child.ok()) return child.status();
  std::string buffer;
  absl::StatusOr<std::string> uri = ReadLineWithPrefix(child->output, buffer, "listening on ",
                                                       Clock::now() + std::chrono::seconds(10));
  if (!uri.ok()) {
    kill(child->pid, SIGKILL);
    waitpid(child->pid, nullptr, 0);
    close(child->output);
    return absl::UnavailableError(
        absl::StrCat("server did not start: ", uri.status().message(), " (see ", log_path, ")"));
  }
  // Its later output ("shut down") fits in the pipe; nobody needs to read it.
  fcntl(child->output, F_SETFL, O_NONBLOCK);
  return ServerProcess{*child, *uri, log_path};
}

// What the server logged: "N lines; first: ...; last: ...".
std::string LogSummary(const std::string& path) {
  std::ifstream in(path);
  std::vector<std::string> lines;
  size_t count = 0;
  std::string first, last;
  for (std::string line; std::getline(in, line);) {
    if (count++ == 0) first = line;
    last = line;
  }
  if (count == 0) return "";
  auto cut = [](const std::string& s) { return s.size() > 200 ? s.substr(0, 200) + "..." : s; };
  std::string text = absl::StrCat(count, count == 1 ? " line: " : " lines; first: ", cut(first));
  if (count > 1) absl::StrAppend(&text, "; last: ", cut(last));
  return text;
}

// Runs one scenario in a forked child and relays its report. The figure line is printed as
// "NAME: HEADLINE (TEXT)".
Outcome RunScenario(const Scenario& scenario, const Flags& flags, const std::string& exe,
                    const std::string& log_dir) {
  Outcome outcome;
  outcome.name = std::string(scenario.name);
  const Clock::time_point start = Clock::now();
  ScenarioContext ctx;
  ctx.transport = flags.transport;
  ctx.quick = flags.quick;
  ctx.self_exe = exe;
  ctx.echo_client = flags.echo_client;
  std::optional<ServerProcess> server;
  const std::string log_path = absl::StrCat(log_dir, "/", outcome.name, ".server.log");
  if (scenario.needs_server) {
    absl::StatusOr<ServerProcess> started = StartServer(exe, flags.transport, log_path);
    if (!started.ok()) {
      outcome.headline = "failed: " + started.status().ToString();
      std::printf("%s: %s\n", outcome.name.c_str(), outcome.headline.c_str());
      return outcome;
    }
    server = *std::move(started);
    ctx.server_pid = server->process.pid;
    ctx.uri = server->uri;
    absl::StatusOr<Endpoint> endpoint = ParseEndpoint(server->uri);
    if (endpoint.ok()) ctx.endpoint = *endpoint;
  }

  int pipe_fds[2];
  if (pipe2(pipe_fds, O_CLOEXEC) != 0) {
    outcome.headline = "failed: pipe2";
    return outcome;
  }
  std::fflush(stdout);
  const pid_t parent = getpid();
  const pid_t child = fork();
  if (child == 0) {
    setpgid(0, 0);
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(1);
    close(pipe_fds[0]);
    Report report(pipe_fds[1]);
    scenario.run(ctx, report);
    _exit(0);  // no destructors: the figure is out, and teardown may itself hang
  }
  close(pipe_fds[1]);
  const int from_child = pipe_fds[0];

  const Clock::time_point bound = start + std::chrono::seconds(scenario.bound_seconds);
  std::string buffer;
  bool have_figure = false;
  bool eof = false;
  while (!eof && !have_figure) {
    const auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(bound - Clock::now()).count();
    if (left <= 0) break;
    pollfd p{from_child, POLLIN, 0};
    if (poll(&p, 1, static_cast<int>(left)) <= 0) continue;
    char chunk[4096];
    ssize_t n = read(from_child, chunk, sizeof(chunk));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      eof = true;
    } else {
      buffer.append(chunk, static_cast<size_t>(n));
    }
    for (size_t nl; (nl = buffer.find('\n')) != std::string::npos;) {
      std::string line = buffer.substr(0, nl);
      buffer.erase(0, nl + 1);
      if (line.starts_with("detail ")) {
        std::printf("  . %s\n", line.c_str() + 7);
      } else if (line.starts_with("figure ") && !have_figure) {
        std::vector<std::string> parts = absl::StrSplit(line.substr(7), absl::MaxSplits('\t', 1));
        outcome.headline = parts[0];
        outcome.ok = true;
        have_figure = true;
        const std::string text = parts.size() > 1 ? parts[1] : "";
        std::printf("%s: %s%s\n", outcome.name.c_str(), outcome.headline.c_str(),
                    text.empty() ? "" : absl::StrCat(" (", text, ")").c_str());
      }
      std::fflush(stdout);
    }
  }
  outcome.seconds = SecondsSince(start);
  // Give the child a moment to end by itself, then end its whole process group.
  std::optional<int> status = WaitWithDeadline(
      child, have_figure || eof ? Clock::now() + std::chrono::seconds(2) : Clock::now());
  kill(-child, SIGKILL);
  if (!status) status = WaitWithDeadline(child, Clock::now() + std::chrono::seconds(5));
  close(from_child);
  if (!have_figure) {
    outcome.headline =
        eof ? absl::StrCat("failed: scenario process ", status ? DescribeWaitStatus(*status) : "?")
            : absl::StrFormat("timed out after %d s", scenario.bound_seconds);
    std::printf("%s: %s\n", outcome.name.c_str(), outcome.headline.c_str());
  }

  if (server) {
    const pid_t pid = server->process.pid;
    int server_status = 0;
    if (waitpid(pid, &server_status, WNOHANG) == pid) {
      if (!scenario.stops_server || !WIFEXITED(server_status) || WEXITSTATUS(server_status) != 0) {
        std::printf("  . server process ended during the scenario: %s\n",
                    DescribeWaitStatus(server_status).c_str());
      }
    } else {
      kill(pid, SIGKILL);
      waitpid(pid, nullptr, 0);
    }
    close(server->process.output);
    if (std::string log = LogSummary(log_path); !log.empty()) {
      std::printf("  . server log: %s\n", log.c_str());
    }
  }
  std::fflush(stdout);
  return outcome;
}

void PrintTable(const std::vector<Outcome>& outcomes, const Flags& flags) {
  size_t name_width = 8;
  size_t figure_width = 6;
  for (const Outcome& o : outcomes) {
    name_width = std::max(name_width, o.name.size());
    figure_width = std::max(figure_width, o.headline.size());
  }
  std::printf("\ncourier-abuse, %s transport%s\n", flags.transport.c_str(),
              flags.quick ? ", --quick" : "");
  std::printf("| %-*s | %-*s | %7s |\n", int(name_width), "scenario", int(figure_width), "figure",
              "seconds");
  std::printf("|%s|%s|%s|\n", std::string(name_width + 2, '-').c_str(),
              std::string(figure_width + 2, '-').c_str(), std::string(9, '-').c_str());
  for (const Outcome& o : outcomes) {
    std::printf("| %-*s | %-*s | %7.1f |\n", int(name_width), o.name.c_str(), int(figure_width),
                o.headline.c_str(), o.seconds);
  }
}

int DriverMain(Flags flags) {
  const std::string exe = SelfExe();
  if (flags.echo_client.empty()) {
    std::filesystem::path candidate =
        std::filesystem::path(exe).parent_path().parent_path() / "examples" / "echo_client";
    std::error_code ec;
    if (std::filesystem::exists(candidate, ec)) flags.echo_client = candidate.string();
  }
  std::vector<const Scenario*> chosen;
  for (const Scenario& s : AllScenarios()) {
    if (flags.list)
      std::printf("%-22s %s\n", std::string(s.name).c_str(), std::string(s.what).c_str());
    if (flags.scenarios.empty()) chosen.push_back(&s);
  }
  if (flags.list) return 0;
  for (const std::string& name : flags.scenarios) {
    const Scenario* found = nullptr;
    for (const Scenario& s : AllScenarios()) {
      if (s.name == name) found = &s;
    }
    if (found == nullptr) {
      std::fprintf(stderr, "courier-abuse: no scenario \"%s\" (see --list)\n", name.c_str());
      return 2;
    }
    chosen.push_back(found);
  }
  if (flags.transport != "unix" && flags.transport != "tcp") return Usage();

  signal(SIGPIPE, SIG_IGN);
  const long files = RaiseFileLimit();
  char dir_template[] = "/tmp/courier-abuse-XXXXXX";
  const char* made = mkdtemp(dir_template);
  if (made == nullptr) {
    std::perror("mkdtemp");
    return 1;
  }
  const std::string log_dir = made;
  std::printf(
      "courier-abuse: %s transport%s, %d scenario(s), RLIMIT_NOFILE %ld, server logs in "
      "%s\n",
      flags.transport.c_str(), flags.quick ? ", --quick" : "", int(chosen.size()), files,
      log_dir.c_str());
  std::fflush(stdout);
  std::vector<Outcome> outcomes;
  for (const Scenario* s : chosen) outcomes.push_back(RunScenario(*s, flags, exe, log_dir));
  PrintTable(outcomes, flags);
  if (!flags.keep_logs) {
    std::error_code ec;
    std::filesystem::remove_all(log_dir, ec);
  } else {
    std::printf("server logs kept in %s\n", log_dir.c_str());
  }
  for (const Outcome& o : outcomes) {
    if (!o.ok) return 1;
  }
  return 0;
}

}  // namespace
}  // namespace courier::abuse

int main(int argc, char** argv) {
  using namespace courier::abuse;
  Flags flags;
  std::string serve_uri;
  std::string one_call_uri;
  long timeout_ms = 1000;
  bool blocking = false;
  for (int i = 1; i < argc; ++i) {
    std::string_view arg = argv[i];
    auto value = [&]() -> const char* { return i + 1 < argc ? argv[++i] : nullptr; };
    if (arg == "--quick") {
      flags.quick = true;
    } else if (arg == "--list") {
      flags.list = true;
    } else if (arg == "--blocking") {
      blocking = true;
    } else if (arg == "--keep-logs") {
      flags.keep_logs = true;
    } else if (arg == "--transport" || arg == "--scenario" || arg == "--echo-client" ||
               arg == "--serve" || arg == "--one-call" || arg == "--timeout-ms") {
      const char* v = value();
      if (v == nullptr) return Usage();
      if (arg == "--transport") flags.transport = v;
      if (arg == "--scenario") {
        for (absl::string_view name : absl::StrSplit(v, ',', absl::SkipEmpty())) {
          flags.scenarios.emplace_back(name);
        }
      }
      if (arg == "--echo-client") flags.echo_client = v;
      if (arg == "--serve") serve_uri = v;
      if (arg == "--one-call") one_call_uri = v;
      if (arg == "--timeout-ms") timeout_ms = std::atol(v);
    } else {
      return Usage();
    }
  }
  if (!serve_uri.empty()) return ServeMain(serve_uri);
  if (!one_call_uri.empty()) return OneCallMain(one_call_uri, timeout_ms, blocking);
  return DriverMain(std::move(flags));
}
