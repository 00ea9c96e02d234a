#pragma once
/// Umbrella header: everything a LibTorch project needs from wrpn.

#include <wrpn/ops.h>
#include <wrpn/version.h>
