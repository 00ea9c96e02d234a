#pragma once
/// JPEG (libjpeg-turbo) and PNG (libpng) decoding and encoding for wrpn::data. The codecs are
/// optional at build time (CMake WRPN_WITH_IMAGE_CODECS); without them these functions throw.
/// Decoder errors become wrpn::data::DatasetError naming the file; they never end the process.

#include <torch/types.h>

#include <cstdint>
#include <string>
#include <vector>

namespace wrpn::data {

/// Whether this libwrpn was built with JPEG and PNG support.
bool image_codecs_available();

/// Image file formats recognised by their leading bytes, whatever the file name says.
enum class ImageFormat { Unknown, Jpeg, Png };

/// The format of an encoded image from its first bytes.
ImageFormat sniff_image_format(const uint8_t* data, size_t size);

/// Height and width of an encoded image from its header, without decoding the pixels. Throws
/// DatasetError (naming `name`) for non-images and malformed headers.
std::pair<int64_t, int64_t> image_size(const std::vector<uint8_t>& bytes, const std::string& name);

/// Decodes a JPEG or PNG to uint8 [H, W, 3] RGB (grey, palette, CMYK and 16-bit inputs are
/// converted; alpha is composited on black). Truncated or corrupt data throws DatasetError.
torch::Tensor decode_image(const std::vector<uint8_t>& bytes, const std::string& name = "<memory>");

/// Reads and decodes an image file (see decode_image).
torch::Tensor read_image(const std::string& path);

/// Writes a uint8 [H, W, 3], [H, W, 1] or [H, W] image as PNG.
void write_png(const std::string& path, const torch::Tensor& image);

/// Writes a uint8 [H, W, 3], [H, W, 1] or [H, W] image as baseline JPEG of `quality` (1..100).
void write_jpeg(const std::string& path, const torch::Tensor& image, int quality = 90);

/// Reads a whole file; throws DatasetError naming it when it cannot be opened or read.
std::vector<uint8_t> read_file_bytes(const std::string& path);

}  // namespace wrpn::data
