#pragma once
/// Text from files for error messages, and strict JSON for the files users write.
///
/// Errors name the bad bytes, but never echo a file raw: printable() shows any bytes as
/// printable ASCII, cut to a few dozen characters. parse_json() refuses what nlohmann_json
/// accepts silently (a repeated key keeps the last value) or handles badly (nesting deep enough
/// to exhaust the stack when the value is printed).

#include <cstddef>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

namespace wrpn {
namespace util {

/// `bytes` in single quotes, as printable ASCII: a byte outside 0x20..0x7e (a control
/// character, a tab, a byte of a UTF-8 sequence, invalid or not) is written \xNN, a quote or a
/// backslash is escaped. Past `max_chars` input bytes the text is cut and says how long the
/// whole was: 'abc...' (1234 bytes).
std::string printable(std::string_view bytes, size_t max_chars = 40);

/// A JSON value for an error message: its compact text cut like printable() does.
std::string json_excerpt(const nlohmann::json& value, size_t max_chars = 60);

/// The deepest nesting of arrays and objects parse_json() accepts.
constexpr int kMaxJsonDepth = 64;

/// Parses JSON text, refusing invalid JSON, a key repeated in one object and nesting deeper
/// than kMaxJsonDepth. Throws c10::Error "<what>: not valid JSON (<reason>)" or "<what>: key
/// \"k\" appears twice in one object", one printable line.
nlohmann::json parse_json(std::string_view text, const std::string& what);

}  // namespace util
}  // namespace wrpn
