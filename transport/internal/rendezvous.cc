#include "transport/internal/rendezvous.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "transport/status.h"

namespace courier::transport::internal {
namespace {

// Checks an existing rendezvous directory: a real directory (not a symlink), ours, mode 0700
// or narrower.
absl::Status CheckOwnDirectory(const std::string& dir, const struct stat& st) {
  std::string what = absl::StrCat("rendezvous directory ", dir);
  if (S_ISLNK(st.st_mode)) {
    return absl::PermissionDeniedError(absl::StrCat(what, ": is a symlink"));
  }
  if (!S_ISDIR(st.st_mode)) {
    return absl::PermissionDeniedError(absl::StrCat(what, ": is not a directory"));
  }
  if (st.st_uid != ::geteuid()) {
    return absl::PermissionDeniedError(
        absl::StrCat(what, ": owned by uid ", st.st_uid, ", not us (uid ", ::geteuid(), ")"));
  }
  if ((st.st_mode & 077) != 0) {
    return absl::PermissionDeniedError(
        absl::StrCat(what, ": mode ", OctalMode(st.st_mode), " lets group/others in (want 0700)"));
  }
  return absl::OkStatus();
}

// $XDG_RUNTIME_DIR/courier if XDG_RUNTIME_DIR is an absolute path naming a directory we own,
// else /tmp/courier-<euid>.
std::string RendezvousDirectoryPath() {
  const char* xdg = std::getenv("XDG_RUNTIME_DIR");
  if (xdg != nullptr && xdg[0] == '/') {
    struct stat st;
    if (::lstat(xdg, &st) == 0 && S_ISDIR(st.st_mode) && st.st_uid == ::geteuid()) {
      std::string dir = xdg;
      while (dir.size() > 1 && dir.back() == '/') dir.pop_back();
      return dir == "/" ? "/courier" : dir + "/courier";
    }
  }
  return absl::StrCat("/tmp/courier-", ::geteuid());
}

}  // namespace

std::string OctalMode(mode_t mode) { return absl::StrFormat("%04o", mode & 07777); }

absl::StatusOr<std::string> RendezvousDirectory(bool create) {
  std::string dir = RendezvousDirectoryPath();
  std::string what = absl::StrCat("rendezvous directory ", dir);
  struct stat st;
  if (::lstat(dir.c_str(), &st) != 0) {
    int error = errno;
    if (error != ENOENT) return ErrnoStatus(error, what);
    if (!create) return absl::UnavailableError(absl::StrCat(what, ": does not exist"));
    // Someone (another server of ours) may create it first: EEXIST is fine, we check it below.
    if (::mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST) {
      return ErrnoStatus(errno, absl::StrCat(what, ": mkdir"));
    }
    if (::lstat(dir.c_str(), &st) != 0) return ErrnoStatus(errno, what);
  }
  if (absl::Status s = CheckOwnDirectory(dir, st); !s.ok()) return s;
  return dir;
}

}  // namespace courier::transport::internal
