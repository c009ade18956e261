// Where the figures were measured: CPU model, core count, kernel, date.
#pragma once

#include "bench/results.h"

namespace courier::bench {

// Fills everything but the pinning fields.
MachineInfo DescribeMachine();

}  // namespace courier::bench
