// courier: the command-line client of courier servers, in the spirit of grpcurl.
//   courier list URI [SERVICE]         services, or a service's methods, one per line
//   courier describe URI [SYMBOL]      the .proto definition of a service, method or message
//   courier call URI METHOD [JSON]     one call; each response printed as a line of JSON
//   courier health URI [SERVICE]       grpc.health.v1 Check (or --watch); exit 0 iff SERVING
// The schema comes from the server's reflection service, or from --proto files (-I import
// paths). Exit status: 0 OK, 1 a failed command ("CODE_NAME: message" on stderr), 2 a usage
// error. `courier VERB --help` prints a verb's usage and flags.
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/reflection.h"
#include "absl/flags/usage.h"
#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/time/time.h"
#include "grpc/health/v1/health.courier.h"
#include "rpc/call.h"
#include "rpc/channel.h"
#include "tools/cli/flags.h"
#include "tools/cli/invoke.h"
#include "tools/cli/schema.h"

namespace courier::cli {
namespace {

constexpr int kExitFailed = 1;
constexpr int kExitUsage = 2;

int Fail(const absl::Status& status) {
  std::fprintf(stderr, "%s: %s\n", absl::StatusCodeToString(status.code()).c_str(),
               std::string(status.message()).c_str());
  return kExitFailed;
}

int UsageError(const std::string& message) {
  std::fprintf(stderr, "INVALID_ARGUMENT: %s (see courier --help)\n", message.c_str());
  return kExitUsage;
}

// The flags a verb takes, each with the placeholder its help shows.
struct FlagUse {
  const char* name;
  const char* value;  // "" for a boolean flag
};

struct Verb {
  const char* name;
  const char* synopsis;  // after "courier "
  const char* summary;
  std::vector<FlagUse> flags;
  int min_args;  // positional arguments after the verb
  int max_args;
  int (*run)(const std::vector<std::string>& args);
};

std::string FlagSpelling(const FlagUse& use) {
  const std::string dashes = std::string_view(use.name).size() == 1 ? "-" : "--";
  return absl::StrCat(dashes, use.name, *use.value ? " " : "", use.value);
}

// --- What every verb shares.

absl::StatusOr<std::shared_ptr<Channel>> Connect(const std::string& uri) {
  ChannelOptions options;
  options.tls.ca_file = absl::GetFlag(FLAGS_cacert);
  options.tls.certificate_file = absl::GetFlag(FLAGS_cert);
  options.tls.private_key_file = absl::GetFlag(FLAGS_key);
  options.tls.server_name = absl::GetFlag(FLAGS_servername);
  return Channel::Create(uri, options);
}

CallOptions OptionsFromFlags() {
  CallOptions options;
  const absl::Duration timeout = absl::GetFlag(FLAGS_timeout);
  // A century or more is no deadline (and now + timeout cannot overflow the clock).
  options.timeout =
      timeout >= absl::Hours(24 * 365 * 100)
          ? Clock::duration::max()
          : std::chrono::duration_cast<Clock::duration>(absl::ToChronoNanoseconds(timeout));
  for (const std::string& header : absl::GetFlag(FLAGS_H).items) {
    const size_t colon = header.find(':');  // HeaderTag::Check made sure there is one
    options.metadata.emplace_back(header.substr(0, colon), header.substr(colon + 1));
  }
  return options;
}

// The schema from --proto files if any were given (`channel` unused), else from the server's
// reflection service.
absl::StatusOr<std::unique_ptr<Schema>> OpenSchema(const std::string& uri,
                                                   std::shared_ptr<Channel>* channel_out) {
  const std::vector<std::string> protos = absl::GetFlag(FLAGS_proto).items;
  if (!protos.empty()) return NewProtoFileSchema(protos, absl::GetFlag(FLAGS_I).items);
  absl::StatusOr<std::shared_ptr<Channel>> channel = Connect(uri);
  if (!channel.ok()) return channel.status();
  if (channel_out != nullptr) *channel_out = *channel;
  return NewReflectionSchema(*std::move(channel), OptionsFromFlags());
}

// --- The verbs. args[0] is the URI.

int RunList(const std::vector<std::string>& args) {
  absl::StatusOr<std::unique_ptr<Schema>> schema = OpenSchema(args[0], nullptr);
  if (!schema.ok()) return Fail(schema.status());
  if (args.size() == 1) {
    absl::StatusOr<std::vector<std::string>> services = (*schema)->ListServices();
    if (!services.ok()) return Fail(services.status());
    for (const std::string& name : *services) std::printf("%s\n", name.c_str());
    return 0;
  }
  absl::StatusOr<const google::protobuf::ServiceDescriptor*> service =
      (*schema)->FindService(args[1]);
  if (!service.ok()) return Fail(service.status());
  for (int i = 0; i < (*service)->method_count(); ++i) {
    std::printf("%s\n", (*service)->method(i)->full_name().c_str());
  }
  return 0;
}

int RunDescribe(const std::vector<std::string>& args) {
  absl::StatusOr<std::unique_ptr<Schema>> schema = OpenSchema(args[0], nullptr);
  if (!schema.ok()) return Fail(schema.status());
  std::vector<std::string> symbols;
  if (args.size() == 2) {
    symbols.push_back(args[1]);
  } else {
    absl::StatusOr<std::vector<std::string>> services = (*schema)->ListServices();
    if (!services.ok()) return Fail(services.status());
    symbols = *std::move(services);
  }
  for (const std::string& symbol : symbols) {
    absl::StatusOr<std::string> text = (*schema)->Describe(symbol);
    if (!text.ok()) return Fail(text.status());
    std::printf("%s", text->c_str());
  }
  return 0;
}

int RunCall(const std::vector<std::string>& args) {
  const std::string data = absl::GetFlag(FLAGS_d);
  if (!data.empty() && args.size() == 3) {
    return UsageError("give the request either as an argument or with -d, not both");
  }
  std::shared_ptr<Channel> channel;
  absl::StatusOr<std::unique_ptr<Schema>> schema = OpenSchema(args[0], &channel);
  if (!schema.ok()) return Fail(schema.status());
  // The method is looked up before anything is sent: an unknown one is NOT_FOUND naming it.
  absl::StatusOr<const google::protobuf::MethodDescriptor*> method = (*schema)->FindMethod(args[1]);
  if (!method.ok()) return Fail(method.status());
  if (channel == nullptr) {  // the schema came from --proto files
    absl::StatusOr<std::shared_ptr<Channel>> connected = Connect(args[0]);
    if (!connected.ok()) return Fail(connected.status());
    channel = *std::move(connected);
  }
  RequestSource requests = data == "@"        ? RequestSource::FromFile(stdin)
                           : !data.empty()    ? RequestSource::FromText(data)
                           : args.size() == 3 ? RequestSource::FromText(args[2])
                                              : RequestSource::FromText("");
  absl::Status status = Invoke(channel, **method, requests, OptionsFromFlags(), stdout);
  return status.ok() ? 0 : Fail(status);
}

int RunHealth(const std::vector<std::string>& args) {
  absl::StatusOr<std::shared_ptr<Channel>> channel = Connect(args[0]);
  if (!channel.ok()) return Fail(channel.status());
  grpc::health::v1::HealthStub stub(*channel);
  grpc::health::v1::HealthCheckRequest request;
  if (args.size() == 2) request.set_service(args[1]);
  using grpc::health::v1::HealthCheckResponse;
  if (!absl::GetFlag(FLAGS_watch)) {
    absl::StatusOr<HealthCheckResponse> response = stub.BlockingCheck(request, OptionsFromFlags());
    if (!response.ok()) return Fail(response.status());
    std::printf("%s\n", HealthCheckResponse::ServingStatus_Name(response->status()).c_str());
    return response->status() == HealthCheckResponse::SERVING ? 0 : kExitFailed;
  }
  BlockingClientReader<HealthCheckResponse> watch = stub.BlockingWatch(request, OptionsFromFlags());
  std::optional<HealthCheckResponse> last;
  while (std::optional<HealthCheckResponse> response = watch.Read()) {
    std::printf("%s\n", HealthCheckResponse::ServingStatus_Name(response->status()).c_str());
    std::fflush(stdout);
    last = std::move(response);
  }
  if (absl::Status status = watch.Finish(); !status.ok()) return Fail(status);
  return last && last->status() == HealthCheckResponse::SERVING ? 0 : kExitFailed;
}

const std::vector<Verb>& Verbs() {
  static const std::vector<Verb> verbs = {
      {"list",
       "list URI [SERVICE]",
       "Prints the services the server serves, one per line; with SERVICE, its methods (fully "
       "qualified: package.Service.Method). With --proto: the services the files define (URI is "
       "not contacted).",
       {{"proto", "FILE"},
        {"I", "DIR"},
        {"H", "KEY:VALUE"},
        {"timeout", "DURATION"},
        {"cacert", "FILE"},
        {"cert", "FILE"},
        {"key", "FILE"},
        {"servername", "NAME"}},
       1,
       2,
       &RunList},
      {"describe",
       "describe URI [SYMBOL]",
       "Prints the .proto definition of SYMBOL: a service, a method (package.Service.Method or "
       "package.Service/Method), a message, an enum or a field; without SYMBOL, every service. "
       "With --proto: from the files (URI is not contacted).",
       {{"proto", "FILE"},
        {"I", "DIR"},
        {"H", "KEY:VALUE"},
        {"timeout", "DURATION"},
        {"cacert", "FILE"},
        {"cert", "FILE"},
        {"key", "FILE"},
        {"servername", "NAME"}},
       1,
       2,
       &RunDescribe},
      {"call",
       "call URI package.Service/Method [JSON]",
       "Calls the method (also package.Service.Method) with the request JSON (the argument, -d "
       "JSON, or -d @ for stdin; none: {}) and prints each response as one line of JSON as it "
       "arrives. Streaming requests are one JSON object per line.",
       {{"d", "JSON|@"},
        {"H", "KEY:VALUE"},
        {"timeout", "DURATION"},
        {"proto", "FILE"},
        {"I", "DIR"},
        {"cacert", "FILE"},
        {"cert", "FILE"},
        {"key", "FILE"},
        {"servername", "NAME"}},
       2,
       3,
       &RunCall},
      {"health",
       "health URI [SERVICE]",
       "Asks grpc.health.v1.Health/Check about SERVICE (default: the whole server) and prints "
       "the status (SERVING, NOT_SERVING, ...); exits 0 only for SERVING.",
       {{"watch", ""},
        {"H", "KEY:VALUE"},
        {"timeout", "DURATION"},
        {"cacert", "FILE"},
        {"cert", "FILE"},
        {"key", "FILE"},
        {"servername", "NAME"}},
       1,
       2,
       &RunHealth},
  };
  return verbs;
}

// Every flag any verb takes, for the check that a verb is given only its own.
const std::vector<FlagUse>& AllFlags() {
  static const std::vector<FlagUse> all = {
      {"proto", "FILE"},       {"I", "DIR"},          {"H", "KEY:VALUE"}, {"d", "JSON|@"},
      {"timeout", "DURATION"}, {"watch", ""},         {"cacert", "FILE"}, {"cert", "FILE"},
      {"key", "FILE"},         {"servername", "NAME"}};
  return all;
}

// `text` broken into lines of at most 100 columns, each starting with `indent` spaces.
std::string Wrap(const std::string& text, size_t indent) {
  constexpr size_t kWidth = 100;
  std::string out, line;
  for (absl::string_view word : absl::StrSplit(text, ' ', absl::SkipEmpty())) {
    if (!line.empty() && indent + line.size() + 1 + word.size() > kWidth) {
      absl::StrAppend(&out, std::string(indent, ' '), line, "\n");
      line.clear();
    }
    absl::StrAppend(&line, line.empty() ? "" : " ", word);
  }
  if (!line.empty()) absl::StrAppend(&out, std::string(indent, ' '), line, "\n");
  return out;
}

// Built from the flags' own help and defaults (absl's registry), so it cannot drift from them.
std::string VerbHelp(const Verb& verb) {
  std::string text = absl::StrCat("usage: courier ", verb.synopsis, "\n\n", Wrap(verb.summary, 0));
  if (!verb.flags.empty()) absl::StrAppend(&text, "\nflags:\n");
  for (const FlagUse& use : verb.flags) {
    const absl::CommandLineFlag* flag = absl::FindCommandLineFlag(use.name);
    if (flag == nullptr) continue;
    std::string help = flag->Help();
    const std::string default_value = flag->DefaultValue();
    if (!default_value.empty() && default_value != "false") {
      absl::StrAppend(&help, " (default: ", default_value, ")");
    }
    absl::StrAppend(&text, "  ", FlagSpelling(use), "\n", Wrap(help, 6));
  }
  return text;
}

std::string GeneralHelp() {
  std::string text =
      "usage: courier VERB URI ARGS... [flags]\n\n"
      "A command-line client for courier servers. URI is any courier endpoint: unix://PATH,\n"
      "tcp://HOST:PORT, udp://HOST:PORT, shm://NAME, fifo://PATH, pipe://PROGRAM ARGS...\n"
      "The schema comes from the server's reflection service, or from --proto files.\n\n"
      "verbs:\n";
  for (const Verb& verb : Verbs()) absl::StrAppend(&text, "  courier ", verb.synopsis, "\n");
  absl::StrAppend(&text,
                  "\n`courier VERB --help` describes a verb and its flags.\n"
                  "Exit status: 0 OK; 1 the command failed (CODE_NAME: message on stderr); "
                  "2 a usage error.\n");
  return text;
}

// A request for help among the flags (absl's own --help would exit 1 and list absl's flags too).
bool IsHelpFlag(std::string_view arg) {
  return arg == "--help" || arg == "-help" || arg == "-h" || arg == "--helpfull";
}

// absl::ParseCommandLine reports a bad flag (unknown, malformed value) in one "ERROR: ..." line
// on stderr and calls exit(1). A usage error exits 2: while flags are parsed, this exit handler
// turns that exit(1) into _Exit(2).
std::atomic<bool> parsing_flags{false};
void ExitHandler() {
  if (parsing_flags) std::_Exit(kExitUsage);
}

int Main(int argc, char** argv) {
  if (argc < 2) {
    std::fputs(GeneralHelp().c_str(), stderr);
    return kExitUsage;
  }
  const std::string_view verb_name = argv[1];
  if (IsHelpFlag(verb_name) || verb_name == "help") {
    if (argc >= 3) {
      for (const Verb& verb : Verbs()) {
        if (verb.name == std::string_view(argv[2])) {
          std::fputs(VerbHelp(verb).c_str(), stdout);
          return 0;
        }
      }
    }
    std::fputs(GeneralHelp().c_str(), stdout);
    return 0;
  }
  const Verb* verb = nullptr;
  for (const Verb& v : Verbs()) {
    if (v.name == verb_name) verb = &v;
  }
  if (verb == nullptr) {
    std::vector<std::string> names;
    for (const Verb& v : Verbs()) names.push_back(v.name);
    return UsageError(absl::StrCat("unknown verb '", std::string(verb_name),
                                   "'; the verbs are: ", absl::StrJoin(names, ", ")));
  }
  for (int i = 2; i < argc && std::string_view(argv[i]) != "--"; ++i) {
    if (IsHelpFlag(argv[i])) {
      std::fputs(VerbHelp(*verb).c_str(), stdout);
      return 0;
    }
  }

  absl::SetProgramUsageMessage(GeneralHelp());
  std::atexit(ExitHandler);
  parsing_flags = true;
  std::vector<char*> positional = absl::ParseCommandLine(argc, argv);
  parsing_flags = false;

  for (const FlagUse& use : AllFlags()) {
    bool takes = false;
    for (const FlagUse& own : verb->flags) takes = takes || std::string_view(own.name) == use.name;
    const absl::CommandLineFlag* flag = absl::FindCommandLineFlag(use.name);
    if (!takes && flag != nullptr && flag->CurrentValue() != flag->DefaultValue()) {
      return UsageError(
          absl::StrCat(FlagSpelling(use), " does not apply to 'courier ", verb->name, "'"));
    }
  }
  // positional[0] is the program, [1] the verb.
  std::vector<std::string> args(positional.begin() + 2, positional.end());
  if (static_cast<int>(args.size()) < verb->min_args ||
      static_cast<int>(args.size()) > verb->max_args) {
    return UsageError(absl::StrCat("usage: courier ", verb->synopsis, " (got ", args.size(),
                                   " argument", args.size() == 1 ? "" : "s", " after '", verb->name,
                                   "')"));
  }
  const bool tls_flags = !absl::GetFlag(FLAGS_cacert).empty() ||
                         !absl::GetFlag(FLAGS_cert).empty() || !absl::GetFlag(FLAGS_key).empty() ||
                         !absl::GetFlag(FLAGS_servername).empty();
  if (tls_flags && !absl::StartsWith(args[0], "tls://")) {
    return UsageError(
        absl::StrCat("--cacert, --cert, --key and --servername apply to tls:// "
                     "URIs, not ",
                     args[0]));
  }
  if (absl::GetFlag(FLAGS_cert).empty() != absl::GetFlag(FLAGS_key).empty()) {
    return UsageError("--cert and --key go together");
  }
  if (absl::GetFlag(FLAGS_timeout) <= absl::ZeroDuration()) {
    return UsageError(absl::StrCat("--timeout must be positive, not ",
                                   absl::FormatDuration(absl::GetFlag(FLAGS_timeout))));
  }
  return verb->run(args);
}

}  // namespace
}  // namespace courier::cli

int main(int argc, char** argv) { return courier::cli::Main(argc, argv); }
