// FUZZ_CHECK(cond): what the fuzz targets assert. Aborts with the condition and its place, so
// libFuzzer (and the corpus replays) report the input as a crash. Fuzz targets only.
#pragma once

#include <cstdio>
#include <cstdlib>

#define FUZZ_CHECK(cond)                                                            \
  do {                                                                              \
    if (!(cond)) {                                                                  \
      std::fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond); \
      std::abort();                                                                 \
    }                                                                               \
  } while (0)
