#pragma once
/// Umbrella header: everything a LibTorch project needs from wrpn.

#include <wrpn/analysis.h>
#include <wrpn/data.h>
#include <wrpn/models/checkpoint.h>
#include <wrpn/models/classifier.h>
#include <wrpn/models/cost.h>
#include <wrpn/models/packed.h>
#include <wrpn/models/registry.h>
#include <wrpn/models/resnet.h>
#include <wrpn/nn/fixed_point.h>
#include <wrpn/nn/init.h>
#include <wrpn/nn/observer.h>
#include <wrpn/nn/quant_conv.h>
#include <wrpn/nn/quant_linear.h>
#include <wrpn/nn/quant_relu.h>
#include <wrpn/ops.h>
#include <wrpn/precision.h>
#include <wrpn/train/distill.h>
#include <wrpn/version.h>
