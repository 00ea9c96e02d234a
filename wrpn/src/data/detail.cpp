#include "detail.h"

#include <wrpn/data/transforms.h>
#include <zlib.h>

#include <cerrno>
#include <cstring>
#include <vector>

namespace wrpn::data::detail {

std::string read_gzip_file(const std::string& path, const std::string& hint) {
  gzFile file = gzopen(path.c_str(), "rb");
  if (file == nullptr) {
    throw DatasetError("wrpn::data: " + path + ": cannot open (" + std::strerror(errno) + ")");
  }
  std::string text;
  std::vector<char> buffer(1 << 16);
  int n = 0;
  while ((n = gzread(file, buffer.data(), static_cast<unsigned>(buffer.size()))) > 0) {
    text.append(buffer.data(), static_cast<size_t>(n));
  }
  int errnum = Z_OK;
  std::string message = gzerror(file, &errnum);
  const int closed = gzclose(file);
  if (n < 0 || (errnum != Z_OK && errnum != Z_STREAM_END) || closed != Z_OK) {
    if (message.empty()) message = "gzclose failed with code " + std::to_string(closed);
    throw DatasetError("wrpn::data: " + path + ": corrupt or truncated gzip data (" + message +
                       "); " + hint);
  }
  return text;
}

void finish_normalization(TensorData& data, const std::vector<double>& mean,
                          const std::vector<double>& std) {
  const size_t c = static_cast<size_t>(data.images.size(1));
  data.fill.clear();
  if (data.options.normalize()) {
    data.images = normalize(data.images, mean, std).contiguous();
    data.normalization = {mean, std};
    for (size_t i = 0; i < c; ++i) data.fill.push_back(-mean[i] / std[i]);
  } else {
    data.fill.assign(c, 0.0);
  }
}

}  // namespace wrpn::data::detail
