#include "container.h"

#include <c10/util/Exception.h>

#include <cstring>

#include "wrpn/util/fs.h"

namespace wrpn {
namespace models {
namespace detail {

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
              "the wrpn file formats are little-endian; add byte swapping for this platform");

namespace {

constexpr std::string_view kTrailer("WRPNEND\0", 8);

void put_u32(std::string& out, uint32_t v) { out.append(reinterpret_cast<const char*>(&v), 4); }
void put_u64(std::string& out, uint64_t v) { out.append(reinterpret_cast<const char*>(&v), 8); }

template <typename T>
T get(std::string_view data, size_t pos) {
  T v;
  std::memcpy(&v, data.data() + pos, sizeof(T));
  return v;
}

}  // namespace

uint64_t fnv1a64(std::string_view data) {
  uint64_t h = 0xcbf29ce484222325ULL;
  for (unsigned char c : data) {
    h ^= c;
    h *= 0x100000001b3ULL;
  }
  return h;
}

std::string build_container(std::string_view magic, uint32_t version,
                            const std::vector<std::string_view>& sections) {
  size_t total = 16 + 16;
  for (auto s : sections) total += 8 + s.size();
  std::string out;
  out.reserve(total);
  out.append(magic);
  put_u32(out, version);
  put_u32(out, 0);
  for (auto s : sections) {
    put_u64(out, s.size());
    out.append(s);
  }
  const uint64_t hash = fnv1a64(out);
  out.append(kTrailer);
  put_u64(out, hash);
  return out;
}

namespace {
void check_preamble(std::string_view data, std::string_view magic, uint32_t version,
                    const std::string& what) {
  TORCH_CHECK(data.size() >= 16, what, " is truncated or not a wrpn file: ", data.size(),
              " bytes, fewer than the 16-byte preamble");
  TORCH_CHECK(data.substr(0, 8) == magic, what, " is not a wrpn ",
              magic == "WRPNCKPT" ? "checkpoint" : "packed export", " (expected magic \"", magic,
              "\" at offset 0)");
  const uint32_t file_version = get<uint32_t>(data, 8);
  TORCH_CHECK(file_version == version, what, " has format version ", file_version,
              "; this wrpn reads version ", version);
}
}  // namespace

std::string read_container_file(const std::string& path, std::string_view magic, uint32_t version,
                                const std::string& what) {
  const int64_t size = fs::regular_file_size(path, what);
  const std::string head = fs::read_prefix(path, 24, what);
  check_preamble(head, magic, version, what);
  if (head.size() >= 24) {
    const uint64_t n = get<uint64_t>(head, 16);
    TORCH_CHECK(n <= static_cast<uint64_t>(size) - 24, what,
                " is truncated or corrupt: its "
                "first section claims ",
                n, " bytes but the file has ", size);
  }
  return fs::read_file(path, what);
}

std::vector<std::string_view> parse_container(std::string_view data, std::string_view magic,
                                              uint32_t version, size_t num_sections,
                                              const std::string& what) {
  check_preamble(data, magic, version, what);
  std::vector<std::string_view> sections;
  size_t pos = 16;
  for (size_t i = 0; i < num_sections; ++i) {
    TORCH_CHECK(data.size() >= pos + 8, what, " is truncated: it ends at byte ", data.size(),
                " inside the length of section ", i + 1, " of ", num_sections);
    const uint64_t n = get<uint64_t>(data, pos);
    pos += 8;
    TORCH_CHECK(n <= data.size() - pos, what, " is truncated: section ", i + 1, " of ",
                num_sections, " needs ", n, " bytes from offset ", pos, " but the file is ",
                data.size(), " bytes");
    sections.push_back(data.substr(pos, n));
    pos += n;
  }
  TORCH_CHECK(data.size() >= pos + 16, what, " is truncated: ", data.size(),
              " bytes, the end marker should span bytes ", pos, "..", pos + 16);
  TORCH_CHECK(data.substr(pos, 8) == kTrailer, what, " is corrupt: no end marker at byte ", pos);
  TORCH_CHECK(data.size() == pos + 16, what, " has ", data.size() - pos - 16,
              " unexpected bytes after its end marker");
  TORCH_CHECK(get<uint64_t>(data, pos + 8) == fnv1a64(data.substr(0, pos)), what,
              " is corrupt: its content does not match its checksum");
  return sections;
}

}  // namespace detail
}  // namespace models
}  // namespace wrpn
