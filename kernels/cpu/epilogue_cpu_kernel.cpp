// The CPU integer-inference epilogue, compiled once per CPU_CAPABILITY: a row loop over the
// shared per-element math that the compiler vectorises (the channel index is innermost).

#include <ATen/Parallel.h>

#include "wrpn/kernels/epilogue.h"

namespace wrpn::cpu::CPU_CAPABILITY {
namespace {

using kernels::EpilogueArgs;

template <bool kAffine, bool kResidual, bool kResidualCodes, typename In>
void rows_loop(const EpilogueArgs& p) {
  const In* in = static_cast<const In*>(p.input);
  const int64_t C = p.channels;
  const int64_t grain = std::max<int64_t>(1, 32768 / std::max<int64_t>(C, 1));
  at::parallel_for(0, p.rows, grain, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t base = r * C;
      for (int64_t c = 0; c < C; ++c) {
        kernels::epilogue_element<kAffine, kResidual, kResidualCodes>(
            p, kernels::epilogue_input(in[base + c], p.input_levels), base + c, c);
      }
    }
  });
}

template <typename In>
void by_residual(const EpilogueArgs& p, bool affine) {
  if (affine) {
    if (!p.residual) return rows_loop<true, false, false, In>(p);
    if (p.residual_is_codes) return rows_loop<true, true, true, In>(p);
    return rows_loop<true, true, false, In>(p);
  }
  if (!p.residual) return rows_loop<false, false, false, In>(p);
  if (p.residual_is_codes) return rows_loop<false, true, true, In>(p);
  return rows_loop<false, true, false, In>(p);
}

}  // namespace

void epilogue(const EpilogueArgs& p) {
  const bool affine = p.scale != nullptr && p.shift != nullptr;
  switch (p.input_type) {
    case EpilogueArgs::Input::kInt32:
      return by_residual<int32_t>(p, affine);
    case EpilogueArgs::Input::kCodes:
      return by_residual<uint8_t>(p, affine);
    case EpilogueArgs::Input::kFloat:
      break;
  }
  by_residual<float>(p, affine);
}

}  // namespace wrpn::cpu::CPU_CAPABILITY
