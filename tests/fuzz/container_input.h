#pragma once
// Inputs of the container fuzz targets (checkpoint, packed export). A mutated file almost never
// passes the container's hash, so the first byte picks one of two forms:
//   even: the rest is the file, as it is (the preamble, lengths and trailer get fuzzed);
//   odd:  the rest is the container's sections separated by kSectionSeparator, wrapped into a
//         container with the right magic, version, lengths and hash (the header JSON, the state
//         and the payload get fuzzed past the hash).

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "container.h"  // models/src: build_container

namespace wrpn_fuzz {

constexpr std::string_view kSectionSeparator("\n--wrpn-section--\n");

inline std::string container_from_input(const uint8_t* data, size_t size, std::string_view magic,
                                        uint32_t version) {
  if (size == 0) return {};
  const std::string_view rest(reinterpret_cast<const char*>(data) + 1, size - 1);
  if ((data[0] & 1) == 0) return std::string(rest);
  std::vector<std::string_view> sections;
  size_t pos = 0;
  while (true) {
    const size_t next = rest.find(kSectionSeparator, pos);
    sections.push_back(
        rest.substr(pos, next == std::string_view::npos ? rest.size() - pos : next - pos));
    if (next == std::string_view::npos) break;
    pos = next + kSectionSeparator.size();
  }
  return wrpn::models::detail::build_container(magic, version, sections);
}

/// The inverse, for the seed generator: `file`'s sections in the odd form.
inline std::string sections_input(const std::vector<std::string_view>& sections) {
  std::string out = "\x01";
  for (size_t i = 0; i < sections.size(); ++i) {
    if (i > 0) out += kSectionSeparator;
    out += sections[i];
  }
  return out;
}

}  // namespace wrpn_fuzz
