// The `courier` tool's command-line flags (absl flags; each verb uses some of them) and the
// repeatable flag type absl lacks. Command-line tool, tools/cli.
#pragma once

#include <string>
#include <vector>

#include "absl/flags/declare.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"

namespace courier::cli {

// A flag that may be given more than once, each occurrence adding to one list (absl has no
// repeatable flag: it parses every occurrence into a fresh copy of the default and keeps the
// last). AbslParseFlag therefore appends each occurrence's items to a list kept per flag type
// and sets the flag to everything parsed so far, so the last occurrence holds them all. `Tag`
// says whether an occurrence is a comma-separated list and how one item is checked.
template <typename Tag>
struct RepeatedFlag {
  std::vector<std::string> items;
};

// -H KEY:VALUE. Each item is normalised to "key:value" (key lowercased, blanks around the value
// trimmed); keys are what courier metadata allows (a-z 0-9 - _ .).
struct HeaderTag {
  static constexpr bool kCommaList = false;
  static bool Check(std::string& item, std::string* error);
};
// --proto FILE[,FILE...] and -I DIR[,DIR...].
struct ProtoTag {
  static constexpr bool kCommaList = true;
  static bool Check(std::string& item, std::string* error);
};
struct ImportTag {
  static constexpr bool kCommaList = true;
  static bool Check(std::string& item, std::string* error);
};

using HeaderList = RepeatedFlag<HeaderTag>;
using ProtoList = RepeatedFlag<ProtoTag>;
using ImportList = RepeatedFlag<ImportTag>;

// Everything the command line gave so far for flags of type RepeatedFlag<Tag>.
template <typename Tag>
std::vector<std::string>& Accumulated() {
  static std::vector<std::string> items;
  return items;
}

// An empty text adds nothing (absl parses the unparsed default, "", as a self-check).
template <typename Tag>
bool AbslParseFlag(absl::string_view text, RepeatedFlag<Tag>* out, std::string* error) {
  std::vector<std::string> parsed;
  if (text.empty()) {
    out->items = Accumulated<Tag>();
    return true;
  }
  if (Tag::kCommaList) {
    size_t start = 0;
    while (start <= text.size()) {
      size_t comma = text.find(',', start);
      if (comma == absl::string_view::npos) comma = text.size();
      if (comma > start) parsed.emplace_back(text.substr(start, comma - start));
      start = comma + 1;
    }
  } else {
    parsed.emplace_back(text);
  }
  for (std::string& item : parsed) {
    if (!Tag::Check(item, error)) return false;
  }
  std::vector<std::string>& all = Accumulated<Tag>();
  all.insert(all.end(), parsed.begin(), parsed.end());
  out->items = all;
  return true;
}

// The items joined by commas ("" for none), for --help's defaults.
template <typename Tag>
std::string AbslUnparseFlag(const RepeatedFlag<Tag>& flag) {
  std::string text;
  for (const std::string& item : flag.items) {
    if (!text.empty()) text += ',';
    text += item;
  }
  return text;
}

}  // namespace courier::cli

ABSL_DECLARE_FLAG(courier::cli::ProtoList, proto);
ABSL_DECLARE_FLAG(courier::cli::ImportList, I);
ABSL_DECLARE_FLAG(courier::cli::HeaderList, H);
ABSL_DECLARE_FLAG(std::string, d);
ABSL_DECLARE_FLAG(absl::Duration, timeout);
ABSL_DECLARE_FLAG(bool, watch);
ABSL_DECLARE_FLAG(std::string, cacert);
ABSL_DECLARE_FLAG(std::string, cert);
ABSL_DECLARE_FLAG(std::string, key);
ABSL_DECLARE_FLAG(std::string, servername);
