#pragma once
// Pieces the in-memory dataset readers share: whole-file reads through zlib (gzip-compressed or
// plain) and the normalisation step.

#include <wrpn/data/common.h>

#include <cstdint>
#include <string>
#include <vector>

namespace wrpn::data::detail {

/// A gzip-compressed or plain file, read in pieces: a reader checks a header before it reads
/// (or allocates for) the rest. Errors are DatasetError naming the file; non-regular files (a
/// directory, a FIFO) are refused when it is opened.
class GzipReader {
 public:
  GzipReader(const std::string& path, std::string hint);
  ~GzipReader();
  GzipReader(const GzipReader&) = delete;
  GzipReader& operator=(const GzipReader&) = delete;
  /// Up to `n` more decompressed bytes (fewer only at the end of the data).
  std::string read(size_t n);

 private:
  std::string path_, hint_;
  void* file_ = nullptr;  // gzFile
};

/// The decompressed contents of `path` (a plain file is returned as it is). Throws DatasetError
/// "wrpn::data: <path>: cannot open (...)" or "...: corrupt or truncated gzip data (...); <hint>",
/// or, past `max_bytes` decompressed bytes (when >= 0), "...: more than N bytes ...".
std::string read_gzip_file(const std::string& path, const std::string& hint,
                           int64_t max_bytes = -1);

/// Normalises data.images with (mean, std) when data.options.normalize() and records it in
/// data.normalization; sets data.fill to a black pixel (after normalisation when applied).
void finish_normalization(TensorData& data, const std::vector<double>& mean,
                          const std::vector<double>& std);

}  // namespace wrpn::data::detail
