#pragma once
// The file container shared by checkpoints and packed exports: magic, version, length-prefixed
// sections and a hashed trailer (see wrpn/models/checkpoint.h).

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace wrpn {
namespace models {
namespace detail {

/// FNV-1a, 64-bit.
uint64_t fnv1a64(std::string_view data);

/// magic (8 bytes) | u32 version | u32 0 | (u64 length | bytes) per section | trailer.
std::string build_container(std::string_view magic, uint32_t version,
                            const std::vector<std::string_view>& sections);

/// Checks magic, version, section bounds, trailer and hash; returns views into `data`.
/// `what` ("checkpoint 'x.ckpt'") starts every error message.
std::vector<std::string_view> parse_container(std::string_view data, std::string_view magic,
                                              uint32_t version, size_t num_sections,
                                              const std::string& what);

/// The bytes of a container file, read only after the file has proved to be one: a regular
/// file (never a directory or a FIFO), whose 16-byte preamble holds `magic` and `version`, and
/// whose first section's length fits in the file. So a large file that is not a wrpn file is
/// refused after reading 24 bytes, in constant memory. Errors start with `what`.
std::string read_container_file(const std::string& path, std::string_view magic, uint32_t version,
                                const std::string& what);

}  // namespace detail
}  // namespace models
}  // namespace wrpn
