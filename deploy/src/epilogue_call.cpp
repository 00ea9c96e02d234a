// Tensor checks and allocation around the epilogue kernels.

#include "epilogue_call.h"

#include <ATen/ATen.h>

#include "wrpn/kernels/epilogue.h"

#ifdef WRPN_WITH_CUDA
#include <c10/cuda/CUDAGuard.h>
#endif

namespace wrpn {
namespace deploy {
namespace {

/// Dense with the channel (dim 1) innermost: channels-last for 4-D, contiguous for 2-D.
at::Tensor channel_innermost(const at::Tensor& t) {
  return t.dim() == 4 ? t.contiguous(at::MemoryFormat::ChannelsLast) : t.contiguous();
}

at::Tensor empty_like_layout(const at::Tensor& ref, at::ScalarType dtype) {
  auto opts = ref.options().dtype(dtype);
  if (ref.dim() == 4)
    return at::empty(ref.sizes(), opts.memory_format(at::MemoryFormat::ChannelsLast));
  return at::empty(ref.sizes(), opts);
}

}  // namespace

EpilogueResult run_epilogue(const EpilogueCall& call) {
  using kernels::EpilogueArgs;
  TORCH_CHECK(call.input.defined() && (call.input.dim() == 4 || call.input.dim() == 2),
              "epilogue: expected a 4-D or 2-D input");
  const at::Tensor in = channel_innermost(call.input);
  EpilogueArgs a;
  a.channels = in.size(1);
  a.rows = a.channels == 0 ? 0 : in.numel() / a.channels;
  a.input = in.data_ptr();
  switch (in.scalar_type()) {
    case at::kInt:
      a.input_type = EpilogueArgs::Input::kInt32;
      break;
    case at::kFloat:
      a.input_type = EpilogueArgs::Input::kFloat;
      break;
    case at::kByte:
      TORCH_CHECK(call.input_levels >= 1, "epilogue: codes input needs its levels");
      a.input_type = EpilogueArgs::Input::kCodes;
      a.input_levels = static_cast<float>(call.input_levels);
      break;
    default:
      TORCH_CHECK(false, "epilogue: input must be int32, float or uint8, got ", in.scalar_type());
  }
  at::Tensor scale, shift, residual;
  if (call.scale.defined() && call.shift.defined()) {
    scale = call.scale.contiguous();
    shift = call.shift.contiguous();
    TORCH_CHECK(scale.numel() == a.channels && shift.numel() == a.channels &&
                    scale.scalar_type() == at::kFloat && shift.scalar_type() == at::kFloat,
                "epilogue: scale and shift must be float [", a.channels, "]");
    a.scale = scale.data_ptr<float>();
    a.shift = shift.data_ptr<float>();
  }
  if (call.residual.defined()) {
    TORCH_CHECK(call.residual.sizes() == in.sizes(), "epilogue: residual ", call.residual.sizes(),
                " does not match the input ", in.sizes());
    residual = channel_innermost(call.residual);
    if (residual.scalar_type() == at::kByte) {
      TORCH_CHECK(call.residual_levels >= 1, "epilogue: a codes residual needs its levels");
      a.residual_is_codes = true;
      a.residual_levels = static_cast<float>(call.residual_levels);
    } else {
      TORCH_CHECK(residual.scalar_type() == at::kFloat,
                  "epilogue: residual must be float or uint8 codes, got ", residual.scalar_type());
    }
    a.residual = residual.data_ptr();
  }
  EpilogueResult r;
  if (call.want_value) {
    r.value = empty_like_layout(in, at::kFloat);
    a.value_out = r.value.data_ptr<float>();
    a.relu = call.relu;
  }
  if (call.code_levels > 0) {
    TORCH_CHECK(call.code_levels <= 255, "epilogue: code levels must be 1..255, got ",
                call.code_levels);
    r.codes = empty_like_layout(in, at::kByte);
    a.codes_out = r.codes.data_ptr<uint8_t>();
    a.code_levels = static_cast<float>(call.code_levels);
  }
  if (in.is_cuda()) {
#ifdef WRPN_WITH_CUDA
    const c10::cuda::CUDAGuard guard(in.device());
    kernels::epilogue_cuda(a);
#else
    TORCH_CHECK(false, "epilogue: this wrpn build has no CUDA kernels");
#endif
  } else {
    kernels::epilogue_cpu(a);
  }
  return r;
}

}  // namespace deploy
}  // namespace wrpn
