#pragma once
// Host entry points of the code-packing kernels (see pack_codes.h for the format). Tensors are
// contiguous; CUDA launches go on the current stream of the tensor's device.

#include <ATen/core/Tensor.h>

#include <cstdint>

#include "wrpn/kernels/pack_codes.h"

namespace wrpn::kernels {

/// Packs the codes round(x * scale) of x (float, double, half or bfloat16) into `out`
/// (packed_bytes(numel, bits) bytes). Returns false, leaving `out` unspecified, when some
/// element is not exactly code / scale with a code that fits the format: such a tensor is not a
/// quantizer's output and must be kept as it is.
bool pack_codes_cpu(const at::Tensor& x, const CodeFormat& f, uint8_t* out);
/// out (contiguous, its dtype) = code / scale from the packed bytes.
void unpack_codes_cpu(const uint8_t* in, const CodeFormat& f, const at::Tensor& out);

/// The 1-bit mask of x > 0 (bit i of the stream: element i), ceil(numel / 8) bytes: the format
/// of the quantizers' straight-through masks.
void pack_positive_cpu(const at::Tensor& x, uint8_t* out);

#ifdef WRPN_WITH_CUDA
void pack_positive_cuda(const at::Tensor& x, uint8_t* out);
/// The same on a CUDA tensor, without the exactness check (the caller packs only a quantizer's
/// own output).
void pack_codes_cuda(const at::Tensor& x, const CodeFormat& f, uint8_t* out);
void unpack_codes_cuda(const uint8_t* in, const CodeFormat& f, const at::Tensor& out);
#endif

}  // namespace wrpn::kernels
