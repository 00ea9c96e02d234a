#pragma once
// Records the input and output shapes of wrpn::nn layers during one forward pass, for the cost
// report: LibTorch modules have no forward hooks, so the layers report themselves while a
// LayerTrace is active on the calling thread.

#include <ATen/core/Tensor.h>

#include <vector>

namespace torch {
namespace nn {
class Module;
}  // namespace nn
}  // namespace torch

namespace wrpn {
namespace nn {
namespace detail {

struct TracedCall {
  const torch::nn::Module* module;
  std::vector<int64_t> input_sizes;
  std::vector<int64_t> output_sizes;
};

/// While alive, collects every QuantConv2d / QuantLinear forward on this thread.
class LayerTrace {
 public:
  LayerTrace();
  ~LayerTrace();
  LayerTrace(const LayerTrace&) = delete;
  LayerTrace& operator=(const LayerTrace&) = delete;

  const std::vector<TracedCall>& calls() const { return calls_; }

 private:
  friend void trace_call(const torch::nn::Module*, const at::Tensor&, const at::Tensor&);
  std::vector<TracedCall> calls_;
  LayerTrace* previous_;
};

/// Called by the layers' forward(); a no-op unless a LayerTrace is active.
void trace_call(const torch::nn::Module* module, const at::Tensor& input, const at::Tensor& output);

}  // namespace detail
}  // namespace nn
}  // namespace wrpn
