#pragma once
// Pieces the in-memory dataset readers share: whole-file reads through zlib (gzip-compressed or
// plain) and the normalisation step.

#include <wrpn/data/common.h>

#include <string>
#include <vector>

namespace wrpn::data::detail {

/// The decompressed contents of `path` (a plain file is returned as it is). Throws DatasetError
/// "wrpn::data: <path>: cannot open (...)" or "...: corrupt or truncated gzip data (...); <hint>".
std::string read_gzip_file(const std::string& path, const std::string& hint);

/// Normalises data.images with (mean, std) when data.options.normalize() and records it in
/// data.normalization; sets data.fill to a black pixel (after normalisation when applied).
void finish_normalization(TensorData& data, const std::vector<double>& mean,
                          const std::vector<double>& std);

}  // namespace wrpn::data::detail
