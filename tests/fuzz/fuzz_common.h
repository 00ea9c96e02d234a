#pragma once
// What every fuzz target shares: a scratch file per process for readers that take a path, and
// the property each input is held to. A reader may accept an input or refuse it, but a refusal
// must be one of wrpn's errors (c10::Error, wrpn::data::DatasetError, std::invalid_argument)
// whose message is one printable line of sane length: no exception of another type (a library
// internal such as nlohmann's type_error or std::bad_alloc), no control characters or invalid
// UTF-8 copied from the input, no multi-kilobyte echo. Anything else aborts, which libFuzzer
// (and the corpus driver in CTest) reports as a defect with the input that caused it.

#include <c10/util/Exception.h>
#include <unistd.h>
#include <wrpn/data/common.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <fstream>
#include <new>
#include <stdexcept>
#include <string>
#include <string_view>

namespace wrpn_fuzz {

/// A directory private to this process (under $TMPDIR or /tmp), created on first use.
inline const std::string& scratch_dir() {
  static const std::string dir = [] {
    const char* base = std::getenv("TMPDIR");
    std::string templ =
        std::string(base != nullptr && *base != '\0' ? base : "/tmp") + "/wrpn-fuzz-XXXXXX";
    if (::mkdtemp(templ.data()) == nullptr) {
      std::perror("wrpn fuzz: mkdtemp");
      std::abort();
    }
    return templ;
  }();
  return dir;
}

/// Writes `data` to scratch_dir()/name and returns the path.
inline std::string write_scratch(const std::string& name, const uint8_t* data, size_t size) {
  const std::string path = scratch_dir() + "/" + name;
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(size));
  if (!out) {
    std::perror(("wrpn fuzz: cannot write " + path).c_str());
    std::abort();
  }
  return path;
}

/// Valid UTF-8 without control characters (tab included), at most `max_bytes` long.
inline bool is_clean_line(std::string_view s, size_t max_bytes = 4000) {
  if (s.empty() || s.size() > max_bytes) return false;
  for (size_t i = 0; i < s.size();) {
    const auto c = static_cast<unsigned char>(s[i]);
    if (c < 0x20 || c == 0x7f) return false;
    size_t len = c < 0x80           ? 1
                 : (c >> 5) == 0x6  ? 2
                 : (c >> 4) == 0xe  ? 3
                 : (c >> 3) == 0x1e ? 4
                                    : 0;
    if (len == 0 || i + len > s.size()) return false;
    for (size_t k = 1; k < len; ++k) {
      if ((static_cast<unsigned char>(s[i + k]) >> 6) != 0x2) return false;
    }
    i += len;
  }
  return true;
}

[[noreturn]] inline void defect(const char* kind, std::string_view message) {
  std::fprintf(stderr, "wrpn fuzz: DEFECT: %s: %.*s\n", kind, static_cast<int>(message.size()),
               message.data());
  std::abort();
}

inline void check_message(const char* kind, std::string_view message) {
  if (!is_clean_line(message)) defect(kind, message);
}

/// Runs `f` and holds what it throws to the property above.
template <typename F>
void expect_clean(F&& f) {
  try {
    f();
  } catch (const c10::Error& e) {
    check_message("c10::Error with a message that is not one clean line",
                  e.what_without_backtrace());
  } catch (const wrpn::data::DatasetError& e) {
    check_message("DatasetError with a message that is not one clean line", e.what());
  } catch (const std::invalid_argument& e) {
    check_message("std::invalid_argument with a message that is not one clean line", e.what());
  } catch (const std::bad_alloc& e) {
    defect("std::bad_alloc (an allocation the input's size did not justify)", e.what());
  } catch (const std::exception& e) {
    defect("an exception that is not one of wrpn's errors", e.what());
  } catch (...) {
    defect("a non-standard exception", "");
  }
}

}  // namespace wrpn_fuzz
