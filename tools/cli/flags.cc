#include "tools/cli/flags.h"

#include <string>

#include "absl/flags/flag.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"

ABSL_FLAG(courier::cli::ProtoList, proto, courier::cli::ProtoList{},
          "the schema from these .proto files (comma-separated or repeated) instead of the "
          "server's reflection service; each is found under an -I directory");
ABSL_FLAG(courier::cli::ImportList, I, courier::cli::ImportList{},
          "import paths for --proto (comma-separated or repeated); default: the current "
          "directory");
ABSL_FLAG(courier::cli::HeaderList, H, courier::cli::HeaderList{},
          "request metadata KEY:VALUE (repeated for several); keys a-z 0-9 - _ . (upper case "
          "is lowered)");
ABSL_FLAG(std::string, d, "",
          "the request as JSON, or @ to read it from stdin; streaming calls take one JSON "
          "object per line");
ABSL_FLAG(absl::Duration, timeout, absl::Seconds(30),
          "deadline of each call the command makes (e.g. 500ms, 10s, 2m; inf: none)");
ABSL_FLAG(std::string, cacert, "",
          "tls://: the CAs (PEM file) that vouch for the server; default: the system's store");
ABSL_FLAG(std::string, cert, "",
          "tls://: the client certificate (PEM file) to present for mutual TLS; needs --key");
ABSL_FLAG(std::string, key, "", "tls://: the private key (PEM file) of --cert");
ABSL_FLAG(std::string, servername, "",
          "tls://: the name the server's certificate must carry (and the SNI sent); default: "
          "the URI's host");
ABSL_FLAG(bool, watch, false,
          "health: stream the status (Watch) and print each change, instead of one Check");

namespace courier::cli {

bool HeaderTag::Check(std::string& item, std::string* error) {
  const size_t colon = item.find(':');
  if (colon == std::string::npos || colon == 0) {
    *error = "expected KEY:VALUE";
    return false;
  }
  std::string key = absl::AsciiStrToLower(item.substr(0, colon));
  for (char c : key) {
    const bool allowed =
        (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_' || c == '.';
    if (!allowed) {
      *error = absl::StrCat("metadata key '", key, "' may only hold a-z 0-9 - _ .");
      return false;
    }
  }
  std::string value(absl::StripAsciiWhitespace(item.substr(colon + 1)));
  item = absl::StrCat(key, ":", value);
  return true;
}

bool ProtoTag::Check(std::string& item, std::string* error) { return true; }

bool ImportTag::Check(std::string& item, std::string* error) { return true; }

}  // namespace courier::cli
