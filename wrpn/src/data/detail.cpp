#include "detail.h"

#include <c10/util/Exception.h>
#include <wrpn/data/transforms.h>
#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <vector>

#include "wrpn/util/fs.h"

namespace wrpn::data::detail {

GzipReader::GzipReader(const std::string& path, std::string hint)
    : path_(path), hint_(std::move(hint)) {
  try {
    fs::regular_file_size(path, path);  // a FIFO would block gzopen forever
  } catch (const c10::Error& e) {
    throw DatasetError(std::string("wrpn::data: ") + e.what_without_backtrace());
  }
  file_ = gzopen(path.c_str(), "rb");
  if (file_ == nullptr) {
    throw DatasetError("wrpn::data: " + path + ": cannot open (" + std::strerror(errno) + ")");
  }
  gzbuffer(static_cast<gzFile>(file_), 1 << 16);
}

GzipReader::~GzipReader() {
  if (file_ != nullptr) gzclose(static_cast<gzFile>(file_));
}

std::string GzipReader::read(size_t n) {
  auto* file = static_cast<gzFile>(file_);
  std::string out;
  std::vector<char> buffer(std::min<size_t>(n, 1 << 16));
  while (out.size() < n) {
    const size_t want = std::min(buffer.size(), n - out.size());
    const int got = gzread(file, buffer.data(), static_cast<unsigned>(want));
    if (got < 0) break;
    out.append(buffer.data(), static_cast<size_t>(got));
    if (static_cast<size_t>(got) < want) break;
  }
  int errnum = Z_OK;
  std::string message = gzerror(file, &errnum);
  if (errnum != Z_OK && errnum != Z_STREAM_END) {
    if (message.empty()) message = "zlib error " + std::to_string(errnum);
    throw DatasetError("wrpn::data: " + path_ + ": corrupt or truncated gzip data (" + message +
                       "); " + hint_);
  }
  return out;
}

std::string read_gzip_file(const std::string& path, const std::string& hint, int64_t max_bytes) {
  GzipReader reader(path, hint);
  std::string text;
  while (true) {
    std::string piece = reader.read(1 << 20);
    text += piece;
    if (max_bytes >= 0 && static_cast<int64_t>(text.size()) > max_bytes) {
      throw DatasetError("wrpn::data: " + path + ": more than " + std::to_string(max_bytes) +
                         " bytes of data, larger than this dataset's files can be; " + hint);
    }
    if (piece.size() < (1u << 20)) break;
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
