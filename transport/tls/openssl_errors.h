// OpenSSL's error queue as text, for the messages of tls:// and dev_cert. Transport internals.
#pragma once

#include <openssl/err.h>

#include <string>

#include "absl/strings/str_cat.h"

namespace courier::transport::tls {

// The reasons OpenSSL queued on this thread, "; "-joined (and the queue cleared); empty if none.
inline std::string OpenSslReasons() {
  std::string reasons;
  while (unsigned long code = ERR_get_error()) {
    const char* reason = ERR_reason_error_string(code);
    absl::StrAppend(&reasons, reasons.empty() ? "" : "; ",
                    reason != nullptr ? reason : absl::StrCat("error ", code));
  }
  return reasons;
}

}  // namespace courier::transport::tls
