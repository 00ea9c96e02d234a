#pragma once
/// Forward observers: LibTorch C++ modules have no forward hooks, so the wrpn::nn layers report
/// each forward call to the observers active on the calling thread. Analysis tools (ranges,
/// sparsity) use this to see every layer's input, effective weight and output.

#include <torch/types.h>

#include <functional>

namespace torch {
namespace nn {
class Module;
}  // namespace nn
}  // namespace torch

namespace wrpn {
namespace nn {

/// What one QuantConv2d, QuantLinear or QuantReLU forward call saw.
struct LayerCall {
  /// The layer itself; map it to a name with named_modules().
  const torch::nn::Module* module = nullptr;
  /// The tensor forward() received.
  torch::Tensor input;
  /// The weight forward() used (quantized, or fp32 at 32 bits); undefined for QuantReLU.
  torch::Tensor weight;
  /// What forward() returned.
  torch::Tensor output;
};

/// While alive, every QuantConv2d, QuantLinear and QuantReLU forward on this thread calls the
/// callback (after computing its output). Observers nest: all active ones are called, innermost
/// first. Tensors are passed as they are (with autograd history); detach them to keep them.
class ForwardObserver {
 public:
  using Callback = std::function<void(const LayerCall&)>;
  explicit ForwardObserver(Callback fn);
  ~ForwardObserver();
  ForwardObserver(const ForwardObserver&) = delete;
  ForwardObserver& operator=(const ForwardObserver&) = delete;

 private:
  friend void notify_observers(const LayerCall& call);
  Callback fn_;
  ForwardObserver* previous_;
};

/// Called by the layers' forward(); a no-op (one thread-local read) unless an observer is active.
void notify_observers(const LayerCall& call);

}  // namespace nn
}  // namespace wrpn
