#pragma once
// Small POSIX file-system helpers for wrpn::data. std::filesystem is avoided on purpose: the
// PyTorch wheels' libtorch.so exports statically linked copies of std::filesystem functions
// (pytorch/pytorch#133437) that calls from our code can bind to, and some of them crash.

#include <dirent.h>
#include <sys/stat.h>

#include <algorithm>
#include <string>
#include <vector>

namespace wrpn::data::detail {

inline bool is_directory(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

inline bool is_regular_file(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

inline std::string join(const std::string& dir, const std::string& name) {
  if (dir.empty()) return name;
  return dir.back() == '/' ? dir + name : dir + "/" + name;
}

// Names in `dir` (following symbolic links) that are directories (want_dirs) or regular files,
// sorted; empty when `dir` cannot be read.
inline std::vector<std::string> list_directory(const std::string& dir, bool want_dirs) {
  std::vector<std::string> names;
  DIR* d = ::opendir(dir.c_str());
  if (d == nullptr) return names;
  while (const dirent* entry = ::readdir(d)) {
    const std::string name = entry->d_name;
    if (name == "." || name == "..") continue;
    const std::string path = join(dir, name);
    if (want_dirs ? is_directory(path) : is_regular_file(path)) names.push_back(name);
  }
  ::closedir(d);
  std::sort(names.begin(), names.end());
  return names;
}

// The extension of the last path component including the dot, lower-cased ("" if none).
inline std::string lower_extension(const std::string& path) {
  const size_t slash = path.find_last_of('/');
  const size_t dot = path.find_last_of('.');
  if (dot == std::string::npos || (slash != std::string::npos && dot < slash)) return {};
  std::string ext = path.substr(dot);
  std::transform(ext.begin(), ext.end(), ext.begin(), [](unsigned char c) {
    return static_cast<char>(c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c);
  });
  return ext;
}

}  // namespace wrpn::data::detail
