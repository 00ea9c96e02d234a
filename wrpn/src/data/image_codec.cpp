// JPEG and PNG through libjpeg-turbo and libpng. libjpeg reports errors by calling error_exit,
// which here longjmps back to the setjmp in the function that called into the library; libpng's
// simplified API (png_image_*) does its own setjmp and returns an error message. Either way the
// failure becomes a DatasetError naming the file. The functions that call setjmp hold no objects
// with destructors of their own: buffers belong to their callers.

#include <wrpn/data/common.h>
#include <wrpn/data/image.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

#ifdef WRPN_HAVE_IMAGE_CODECS
#include <csetjmp>
// clang-format off
#include <jpeglib.h>
#include <jerror.h>
// clang-format on
#include <png.h>
#endif

namespace wrpn::data {
namespace {

// Larger images are refused rather than allocated (a corrupt header can claim anything).
constexpr int64_t kMaxPixels = int64_t{1} << 28;

[[noreturn]] void fail(const std::string& name, const std::string& what) {
  throw DatasetError("wrpn::data: " + name + ": " + what);
}

#ifndef WRPN_HAVE_IMAGE_CODECS
[[noreturn]] void fail_no_codecs(const std::string& name) {
  fail(name,
       "cannot decode or encode JPEG/PNG: this libwrpn was built without image codec support "
       "(libjpeg-turbo and libpng were not found at build time; install libjpeg-dev and "
       "libpng-dev and rebuild with -DWRPN_WITH_IMAGE_CODECS=AUTO or ON)");
}
#endif

// uint8 [H, W, C] with C = 1 or 3, contiguous.
torch::Tensor check_hwc_u8(const torch::Tensor& image, const std::string& path) {
  if (image.scalar_type() != torch::kUInt8 || (image.dim() != 2 && image.dim() != 3) ||
      (image.dim() == 3 && image.size(2) != 1 && image.size(2) != 3) || image.numel() == 0) {
    fail(path, "expected a non-empty uint8 image of shape [H, W, 3], [H, W, 1] or [H, W], got " +
                   std::string(c10::toString(image.scalar_type())) + " " + c10::str(image.sizes()));
  }
  auto out = image.dim() == 2 ? image.unsqueeze(2) : image;
  return out.contiguous();
}

#ifdef WRPN_HAVE_IMAGE_CODECS

struct JpegError {
  jpeg_error_mgr pub;
  std::jmp_buf jump;
  char message[JMSG_LENGTH_MAX];
};

void jpeg_error_exit(j_common_ptr cinfo) {
  auto* err = reinterpret_cast<JpegError*>(cinfo->err);
  (*cinfo->err->format_message)(cinfo, err->message);
  std::longjmp(err->jump, 1);
}

// Warnings are not printed. A premature end of data is an error: libjpeg would otherwise pad the
// image with grey and return it as if it were whole.
void jpeg_emit_message(j_common_ptr cinfo, int msg_level) {
  if (msg_level < 0) {
    if (cinfo->err->msg_code == JWRN_JPEG_EOF) jpeg_error_exit(cinfo);
    cinfo->err->num_warnings++;
  }
}

void cmyk_row_to_rgb(const uint8_t* cmyk, uint8_t* rgb, int64_t width, bool inverted) {
  for (int64_t x = 0; x < width; ++x) {
    int c = cmyk[4 * x], m = cmyk[4 * x + 1], y = cmyk[4 * x + 2], k = cmyk[4 * x + 3];
    if (!inverted) c = 255 - c, m = 255 - m, y = 255 - y, k = 255 - k;
    rgb[3 * x] = static_cast<uint8_t>((c * k + 127) / 255);
    rgb[3 * x + 1] = static_cast<uint8_t>((m * k + 127) / 255);
    rgb[3 * x + 2] = static_cast<uint8_t>((y * k + 127) / 255);
  }
}

// Decodes (or, with out == nullptr, only reads the header of) a JPEG. Returns false with
// `message` set on failure.
bool jpeg_decode(const uint8_t* data, size_t size, int64_t* height, int64_t* width,
                 std::vector<uint8_t>* out, std::vector<uint8_t>* scratch, char* message) {
  jpeg_decompress_struct cinfo;
  JpegError err;
  cinfo.err = jpeg_std_error(&err.pub);
  err.pub.error_exit = jpeg_error_exit;
  err.pub.emit_message = jpeg_emit_message;
  if (setjmp(err.jump)) {
    std::memcpy(message, err.message, JMSG_LENGTH_MAX);
    jpeg_destroy_decompress(&cinfo);
    return false;
  }
  jpeg_create_decompress(&cinfo);
  jpeg_mem_src(&cinfo, data, static_cast<unsigned long>(size));
  jpeg_read_header(&cinfo, TRUE);
  *height = cinfo.image_height;
  *width = cinfo.image_width;
  if (out == nullptr) {
    jpeg_destroy_decompress(&cinfo);
    return true;
  }
  if (*height * *width > kMaxPixels) {
    std::snprintf(message, JMSG_LENGTH_MAX, "image of %ux%u pixels is too large to decode",
                  cinfo.image_width, cinfo.image_height);
    jpeg_destroy_decompress(&cinfo);
    return false;
  }
  const bool cmyk = cinfo.jpeg_color_space == JCS_CMYK || cinfo.jpeg_color_space == JCS_YCCK;
  cinfo.out_color_space = cmyk ? JCS_CMYK : JCS_RGB;
  jpeg_start_decompress(&cinfo);
  const int64_t w = cinfo.output_width;
  out->assign(static_cast<size_t>(cinfo.output_height * w * 3), 0);
  if (cmyk) scratch->assign(static_cast<size_t>(w * 4), 0);
  while (cinfo.output_scanline < cinfo.output_height) {
    uint8_t* dst = out->data() + static_cast<int64_t>(cinfo.output_scanline) * w * 3;
    JSAMPROW row = cmyk ? scratch->data() : dst;
    jpeg_read_scanlines(&cinfo, &row, 1);
    if (cmyk) cmyk_row_to_rgb(scratch->data(), dst, w, cinfo.saw_Adobe_marker);
  }
  *height = cinfo.output_height;
  *width = w;
  jpeg_finish_decompress(&cinfo);
  jpeg_destroy_decompress(&cinfo);
  return true;
}

bool jpeg_encode(std::FILE* file, const uint8_t* pixels, int64_t height, int64_t width,
                 int channels, int quality, char* message) {
  jpeg_compress_struct cinfo;
  JpegError err;
  cinfo.err = jpeg_std_error(&err.pub);
  err.pub.error_exit = jpeg_error_exit;
  err.pub.emit_message = jpeg_emit_message;
  if (setjmp(err.jump)) {
    std::memcpy(message, err.message, JMSG_LENGTH_MAX);
    jpeg_destroy_compress(&cinfo);
    return false;
  }
  jpeg_create_compress(&cinfo);
  jpeg_stdio_dest(&cinfo, file);
  cinfo.image_width = static_cast<JDIMENSION>(width);
  cinfo.image_height = static_cast<JDIMENSION>(height);
  cinfo.input_components = channels;
  cinfo.in_color_space = channels == 3 ? JCS_RGB : JCS_GRAYSCALE;
  jpeg_set_defaults(&cinfo);
  jpeg_set_quality(&cinfo, quality, TRUE);
  jpeg_start_compress(&cinfo, TRUE);
  while (cinfo.next_scanline < cinfo.image_height) {
    JSAMPROW row =
        const_cast<uint8_t*>(pixels) + static_cast<int64_t>(cinfo.next_scanline) * width * channels;
    jpeg_write_scanlines(&cinfo, &row, 1);
  }
  jpeg_finish_compress(&cinfo);
  jpeg_destroy_compress(&cinfo);
  return true;
}

// Decodes (or, with out == nullptr, only reads the header of) a PNG.
void png_decode(const std::vector<uint8_t>& bytes, const std::string& name, int64_t* height,
                int64_t* width, std::vector<uint8_t>* out) {
  png_image image;
  std::memset(&image, 0, sizeof(image));
  image.version = PNG_IMAGE_VERSION;
  if (!png_image_begin_read_from_memory(&image, bytes.data(), bytes.size())) {
    fail(name, std::string("invalid PNG: ") + image.message);
  }
  *height = image.height;
  *width = image.width;
  if (out == nullptr) {
    png_image_free(&image);
    return;
  }
  if (*height * *width > kMaxPixels) {
    png_image_free(&image);
    fail(name, "PNG of " + std::to_string(*width) + "x" + std::to_string(*height) +
                   " pixels is too large to decode");
  }
  image.format = PNG_FORMAT_RGB;
  // Alpha is composited onto the buffer's contents: black.
  out->assign(PNG_IMAGE_SIZE(image), 0);
  if (!png_image_finish_read(&image, nullptr, out->data(), 0, nullptr)) {
    std::string message = image.message;
    png_image_free(&image);
    fail(name, "corrupt or truncated PNG: " + message);
  }
}

#endif  // WRPN_HAVE_IMAGE_CODECS

}  // namespace

bool image_codecs_available() {
#ifdef WRPN_HAVE_IMAGE_CODECS
  return true;
#else
  return false;
#endif
}

ImageFormat sniff_image_format(const uint8_t* data, size_t size) {
  static const uint8_t kPng[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
  if (size >= 3 && data[0] == 0xff && data[1] == 0xd8 && data[2] == 0xff) return ImageFormat::Jpeg;
  if (size >= 8 && std::memcmp(data, kPng, 8) == 0) return ImageFormat::Png;
  return ImageFormat::Unknown;
}

std::vector<uint8_t> read_file_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary | std::ios::ate);
  if (!in) fail(path, std::string("cannot open file: ") + std::strerror(errno));
  const std::streamoff size = in.tellg();
  if (size < 0) fail(path, "cannot determine the file size (is it a regular file?)");
  std::vector<uint8_t> bytes(static_cast<size_t>(size));
  in.seekg(0);
  if (size > 0 && !in.read(reinterpret_cast<char*>(bytes.data()), size)) {
    fail(path, "read error");
  }
  return bytes;
}

namespace {

// Decodes into `out` (nullptr: header only) and returns (height, width).
std::pair<int64_t, int64_t> decode_into(const std::vector<uint8_t>& bytes, const std::string& name,
                                        std::vector<uint8_t>* out) {
  const ImageFormat format = sniff_image_format(bytes.data(), bytes.size());
  if (format == ImageFormat::Unknown) {
    fail(name, bytes.empty() ? "empty file, expected a JPEG or PNG image"
                             : "not a JPEG or PNG image (unrecognised leading bytes)");
  }
#ifdef WRPN_HAVE_IMAGE_CODECS
  int64_t height = 0, width = 0;
  if (format == ImageFormat::Jpeg) {
    std::vector<uint8_t> scratch;
    char message[JMSG_LENGTH_MAX] = {0};
    if (!jpeg_decode(bytes.data(), bytes.size(), &height, &width, out, &scratch, message)) {
      fail(name, std::string("corrupt or truncated JPEG: ") + message);
    }
  } else {
    png_decode(bytes, name, &height, &width, out);
  }
  if (height <= 0 || width <= 0) fail(name, "image has no pixels");
  return {height, width};
#else
  fail_no_codecs(name);
#endif
}

}  // namespace

std::pair<int64_t, int64_t> image_size(const std::vector<uint8_t>& bytes, const std::string& name) {
  return decode_into(bytes, name, nullptr);
}

torch::Tensor decode_image(const std::vector<uint8_t>& bytes, const std::string& name) {
  auto pixels = std::make_shared<std::vector<uint8_t>>();
  const auto [height, width] = decode_into(bytes, name, pixels.get());
  void* data = pixels->data();
  return torch::from_blob(
      data, {height, width, 3}, [pixels](void*) mutable { pixels.reset(); },
      torch::TensorOptions().dtype(torch::kUInt8));
}

torch::Tensor read_image(const std::string& path) {
  return decode_image(read_file_bytes(path), path);
}

void write_png(const std::string& path, const torch::Tensor& image) {
  const torch::Tensor hwc = check_hwc_u8(image, path);
#ifdef WRPN_HAVE_IMAGE_CODECS
  png_image png;
  std::memset(&png, 0, sizeof(png));
  png.version = PNG_IMAGE_VERSION;
  png.width = static_cast<png_uint_32>(hwc.size(1));
  png.height = static_cast<png_uint_32>(hwc.size(0));
  png.format = hwc.size(2) == 3 ? PNG_FORMAT_RGB : PNG_FORMAT_GRAY;
  if (!png_image_write_to_file(&png, path.c_str(), 0, hwc.data_ptr<uint8_t>(), 0, nullptr)) {
    std::string message = png.message;
    png_image_free(&png);
    fail(path, "cannot write PNG: " + message);
  }
#else
  fail_no_codecs(path);
#endif
}

void write_jpeg(const std::string& path, const torch::Tensor& image, int quality) {
  const torch::Tensor hwc = check_hwc_u8(image, path);
  if (quality < 1 || quality > 100) {
    fail(path, "JPEG quality must be in 1..100, got " + std::to_string(quality));
  }
#ifdef WRPN_HAVE_IMAGE_CODECS
  std::FILE* file = std::fopen(path.c_str(), "wb");
  if (file == nullptr) fail(path, std::string("cannot create file: ") + std::strerror(errno));
  char message[JMSG_LENGTH_MAX] = {0};
  const bool ok = jpeg_encode(file, hwc.data_ptr<uint8_t>(), hwc.size(0), hwc.size(1),
                              static_cast<int>(hwc.size(2)), quality, message);
  const bool closed = std::fclose(file) == 0;
  if (!ok) fail(path, std::string("cannot write JPEG: ") + message);
  if (!closed) fail(path, "write error");
#else
  fail_no_codecs(path);
#endif
}

}  // namespace wrpn::data
