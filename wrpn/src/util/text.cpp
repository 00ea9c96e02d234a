// Printable excerpts of file bytes and the strict JSON parser (see wrpn/util/text.h).

#include "wrpn/util/text.h"

#include <c10/util/Exception.h>

#include <cstdio>
#include <set>
#include <vector>

namespace wrpn {
namespace util {

namespace {

// Printable ASCII for `bytes` (at most max_chars of them), without quotes.
std::string escape(std::string_view bytes, size_t max_chars) {
  std::string out;
  const size_t n = bytes.size() < max_chars ? bytes.size() : max_chars;
  for (size_t i = 0; i < n; ++i) {
    const auto c = static_cast<unsigned char>(bytes[i]);
    if (c == '\'' || c == '\\') {
      out += '\\';
      out += static_cast<char>(c);
    } else if (c >= 0x20 && c < 0x7f) {
      out += static_cast<char>(c);
    } else {
      char hex[8];
      std::snprintf(hex, sizeof(hex), "\\x%02x", c);
      out += hex;
    }
  }
  if (n < bytes.size()) out += "...";
  return out;
}

}  // namespace

std::string printable(std::string_view bytes, size_t max_chars) {
  const std::string body = "'" + escape(bytes, max_chars) + "'";
  return bytes.size() > max_chars ? body + " (" + std::to_string(bytes.size()) + " bytes)" : body;
}

std::string json_excerpt(const nlohmann::json& value, size_t max_chars) {
  // Invalid UTF-8 cannot come from the parser, but a value built in code may hold it.
  const std::string text = value.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  if (text.size() <= max_chars) {
    bool plain = true;
    for (const char c : text) plain = plain && static_cast<unsigned char>(c) >= 0x20 && c != 0x7f;
    if (plain) return text;  // JSON escapes control characters; non-ASCII UTF-8 stays readable
  }
  return printable(text, max_chars);
}

namespace {

struct DuplicateKey {
  std::string key;
};
struct TooDeep {};

}  // namespace

nlohmann::json parse_json(std::string_view text, const std::string& what) {
  using json = nlohmann::json;
  std::vector<std::set<std::string>> keys;  // the keys seen in each open object
  const json::parser_callback_t check = [&](int depth, json::parse_event_t event, json& parsed) {
    switch (event) {
      case json::parse_event_t::object_start:
      case json::parse_event_t::array_start:
        if (depth >= kMaxJsonDepth) throw TooDeep{};
        if (event == json::parse_event_t::object_start) keys.emplace_back();
        break;
      case json::parse_event_t::object_end:
        if (!keys.empty()) keys.pop_back();
        break;
      case json::parse_event_t::key:
        if (!keys.empty() && !keys.back().insert(parsed.get<std::string>()).second) {
          throw DuplicateKey{parsed.get<std::string>()};
        }
        break;
      default:
        break;
    }
    return true;
  };
  std::string error;
  try {
    return json::parse(text.begin(), text.end(), check);
  } catch (const json::exception& e) {
    error = "not valid JSON (" + escape(e.what(), 300) + ")";
  } catch (const DuplicateKey& d) {
    error = "key " + printable(d.key) + " appears twice in one object";
  } catch (const TooDeep&) {
    error = "nested deeper than " + std::to_string(kMaxJsonDepth) + " levels";
  }
  TORCH_CHECK(false, what, ": ", error);
  return {};
}

}  // namespace util
}  // namespace wrpn
