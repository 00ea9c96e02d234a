#pragma once
/// Umbrella header: everything a LibTorch project needs from wrpn (every floor: core, zoo,
/// training). It lives in the top floor, the only one that may include all the others.

#include <wrpn/analysis.h>
#include <wrpn/data.h>
#include <wrpn/deploy/integer_model.h>
#include <wrpn/models/checkpoint.h>
#include <wrpn/models/classifier.h>
#include <wrpn/models/cost.h>
#include <wrpn/models/language_model.h>
#include <wrpn/models/packed.h>
#include <wrpn/models/registry.h>
#include <wrpn/models/resnet.h>
#include <wrpn/nn/init.h>
#include <wrpn/nn/layers.h>
#include <wrpn/nn/observer.h>
#include <wrpn/nn/quant_conv.h>
#include <wrpn/nn/quant_linear.h>
#include <wrpn/nn/quant_relu.h>
#include <wrpn/nn/quant_rnn.h>
#include <wrpn/nn/quantizer.h>
#include <wrpn/nn/saved_codes.h>
#include <wrpn/ops.h>
#include <wrpn/precision.h>
#include <wrpn/train/distill.h>
#include <wrpn/train/distributed.h>
#include <wrpn/train/language_model.h>
#include <wrpn/train/options.h>
#include <wrpn/train/trainer.h>
#include <wrpn/train/utils.h>
#include <wrpn/util/fs.h>
#include <wrpn/util/memory.h>
#include <wrpn/util/text.h>
#include <wrpn/version.h>
