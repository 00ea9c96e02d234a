#pragma once
/// File-system helpers on plain POSIX calls: crash-safe writes, whole-file reads, paths.
/// std::filesystem is avoided on purpose: the PyTorch wheels' libtorch.so exports statically
/// linked copies of some std::filesystem functions that calls from other code can bind to, and
/// some of them crash (pytorch/pytorch issue 133437).

#include <string>
#include <string_view>
#include <vector>

namespace wrpn {
namespace fs {

/// Writes `bytes` to `path` so that a crash leaves either the old file or the new one: a
/// temporary file in the same directory, fsync, rename over `path`, fsync of the directory.
/// `make_parents` creates missing parent directories first. On failure the temporary file is
/// removed and c10::Error says "cannot write '<path>': <step> failed: <OS error>".
void atomic_write(const std::string& path, std::string_view bytes, bool make_parents = true);

/// The whole file. Throws c10::Error "cannot open <what>: <OS error>" (or "cannot read ..."),
/// `what` defaulting to the quoted path; a file larger than `max_bytes` is refused before it
/// is read ("<what> is N bytes, more than the M a <kind> can be").
std::string read_file(const std::string& path, const std::string& what = "",
                      int64_t max_bytes = -1);

/// The largest config file (precision config, training options) readers accept: 16 MiB.
constexpr int64_t kMaxConfigBytes = int64_t{16} << 20;

/// Throws unless `path` (links followed) is a regular file, naming what it is instead (a
/// directory, a FIFO, a device, a socket) or why it cannot be read; returns its size in bytes.
/// Readers call it before they read or allocate anything: a FIFO would block them forever.
int64_t regular_file_size(const std::string& path, const std::string& what = "");

/// The first min(n, size) bytes of a regular file (checked as regular_file_size() does).
std::string read_prefix(const std::string& path, size_t n, const std::string& what = "");

/// Appends `line` and a newline to `path` (created with its parents) and fsyncs it.
void append_line(const std::string& path, const std::string& line);

bool path_exists(const std::string& path);
bool is_directory(const std::string& path);
bool is_regular_file(const std::string& path);
/// Creates `path` and its missing parents (like mkdir -p); throws naming the path on failure.
void make_directories(const std::string& path);
/// Removes a file if it exists; throws naming the path on other failures.
void remove_file(const std::string& path);
/// The directory part of `path` ("" when it has none, "/" for a file in the root).
std::string parent_path(const std::string& path);
/// `dir` + "/" + `name` (no doubled slash; `name` alone when `dir` is empty).
std::string join(const std::string& dir, const std::string& name);
/// Names in `dir` (following symbolic links) that are directories (`want_dirs`) or regular
/// files, sorted; empty when `dir` cannot be read.
std::vector<std::string> list_directory(const std::string& dir, bool want_dirs);
/// The extension of the last path component including the dot, lower-cased ("" if none).
std::string lower_extension(const std::string& path);

}  // namespace fs
}  // namespace wrpn
