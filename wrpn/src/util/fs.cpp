// File-system helpers on plain POSIX calls (see wrpn/util/fs.h for why not std::filesystem).

#include "wrpn/util/fs.h"

#include <c10/util/Exception.h>
#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <fstream>

namespace wrpn {
namespace fs {
namespace {

std::string os_error() { return std::strerror(errno); }

[[noreturn]] void fail_errno(const std::string& what, const std::string& path) {
  TORCH_CHECK(false, what, " '", path, "': ", os_error());
}

void fsync_directory(const std::string& dir) {
  const int fd = ::open(dir.empty() ? "." : dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd >= 0) {
    ::fsync(fd);
    ::close(fd);
  }
}

/// Writes all of `data`; false (errno set) on failure.
bool write_all(int fd, std::string_view data) {
  size_t done = 0;
  while (done < data.size()) {
    const ssize_t n = ::write(fd, data.data() + done, data.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    done += static_cast<size_t>(n);
  }
  return true;
}

}  // namespace

void atomic_write(const std::string& path, std::string_view bytes, bool make_parents) {
  static std::atomic<uint64_t> counter{0};
  const size_t slash = path.rfind('/');
  const std::string name = slash == std::string::npos ? path : path.substr(slash + 1);
  TORCH_CHECK(!name.empty(), "cannot write '", path, "': it names a directory, not a file");
  if (make_parents) make_directories(parent_path(path));
  const std::string tmp = (slash == std::string::npos ? std::string() : path.substr(0, slash + 1)) +
                          "." + name + ".tmp." + std::to_string(::getpid()) + "." +
                          std::to_string(counter.fetch_add(1));
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  TORCH_CHECK(fd >= 0, "cannot write '", path, "': creating the temporary file '", tmp,
              "' failed: ", os_error());
  auto fail = [&](const std::string& step, bool close_fd) {
    const std::string err = os_error();
    if (close_fd) ::close(fd);
    ::unlink(tmp.c_str());
    TORCH_CHECK(false, "cannot write '", path, "': ", step, " failed: ", err);
  };
  if (!write_all(fd, bytes)) fail("writing the temporary file", true);
  if (::fsync(fd) != 0) fail("fsync of the temporary file", true);
  if (::close(fd) != 0) fail("closing the temporary file", false);
  if (::rename(tmp.c_str(), path.c_str()) != 0) fail("renaming the temporary file over it", false);
  // Make the rename itself durable.
  fsync_directory(parent_path(path));
}

int64_t regular_file_size(const std::string& path, const std::string& what) {
  const std::string name = what.empty() ? "'" + path + "'" : what;
  struct stat st {};
  TORCH_CHECK(::stat(path.c_str(), &st) == 0, "cannot open ", name, ": ", os_error());
  const char* kind = S_ISDIR(st.st_mode)    ? "a directory"
                     : S_ISFIFO(st.st_mode) ? "a FIFO (named pipe)"
                     : S_ISSOCK(st.st_mode) ? "a socket"
                     : S_ISCHR(st.st_mode)  ? "a character device"
                     : S_ISBLK(st.st_mode)  ? "a block device"
                                            : nullptr;
  TORCH_CHECK(kind == nullptr && S_ISREG(st.st_mode), "cannot read ", name, ": it is ",
              kind ? kind : "not a regular file", ", not a regular file");
  return static_cast<int64_t>(st.st_size);
}

std::string read_prefix(const std::string& path, size_t n, const std::string& what) {
  const std::string name = what.empty() ? "'" + path + "'" : what;
  const int64_t size = regular_file_size(path, what);
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  TORCH_CHECK(fd >= 0, "cannot open ", name, ": ", os_error());
  std::string data(std::min<size_t>(n, static_cast<size_t>(size)), '\0');
  size_t done = 0;
  while (done < data.size()) {
    const ssize_t r = ::read(fd, data.data() + done, data.size() - done);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) break;
    done += static_cast<size_t>(r);
  }
  ::close(fd);
  data.resize(done);
  return data;
}

std::string read_file(const std::string& path, const std::string& what, int64_t max_bytes) {
  const std::string name = what.empty() ? "'" + path + "'" : what;
  const int64_t bytes = regular_file_size(path, what);
  TORCH_CHECK(max_bytes < 0 || bytes <= max_bytes, name, " is ", bytes, " bytes, more than the ",
              max_bytes, " it may be");
  std::ifstream in(path, std::ios::binary);
  TORCH_CHECK(in.is_open(), "cannot open ", name, ": ", os_error());
  in.seekg(0, std::ios::end);
  const std::streamoff size = in.tellg();
  TORCH_CHECK(size >= 0, "cannot read ", name, ": it is not a regular file");
  in.seekg(0, std::ios::beg);
  std::string data(static_cast<size_t>(size), '\0');
  in.read(data.data(), size);
  TORCH_CHECK(in.gcount() == size, "cannot read ", name, ": ", os_error());
  return data;
}

void append_line(const std::string& path, const std::string& line) {
  make_directories(parent_path(path));
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (fd < 0) fail_errno("cannot open", path);
  const std::string bytes = line + "\n";
  if (!write_all(fd, bytes)) {
    const int e = errno;
    ::close(fd);
    errno = e;
    fail_errno("cannot write", path);
  }
  ::fsync(fd);
  ::close(fd);
}

bool path_exists(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0;
}

bool is_directory(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

bool is_regular_file(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

void make_directories(const std::string& path) {
  if (path.empty() || path_exists(path)) return;
  make_directories(parent_path(path));
  if (::mkdir(path.c_str(), 0755) != 0 && errno != EEXIST) {
    fail_errno("cannot create the directory", path);
  }
}

void remove_file(const std::string& path) {
  if (::unlink(path.c_str()) != 0 && errno != ENOENT) fail_errno("cannot remove", path);
}

std::string parent_path(const std::string& path) {
  const auto slash = path.find_last_of('/');
  if (slash == std::string::npos) return "";
  return slash == 0 ? "/" : path.substr(0, slash);
}

std::string join(const std::string& dir, const std::string& name) {
  if (dir.empty()) return name;
  return dir.back() == '/' ? dir + name : dir + "/" + name;
}

std::vector<std::string> list_directory(const std::string& dir, bool want_dirs) {
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

std::string lower_extension(const std::string& path) {
  const size_t slash = path.find_last_of('/');
  const size_t dot = path.find_last_of('.');
  if (dot == std::string::npos || (slash != std::string::npos && dot < slash)) return {};
  std::string ext = path.substr(dot);
  std::transform(ext.begin(), ext.end(), ext.begin(), [](unsigned char c) {
    return static_cast<char>(c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c);
  });
  return ext;
}

}  // namespace fs
}  // namespace wrpn
