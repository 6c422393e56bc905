// Helpers the pipeline stages share for reading their tokenizer.json entries: typed fields and the
// {"String"} / {"Regex"} patterns of Replace and Split.
#include "components/tokenizer/tokenizer_pipeline.h"

#include "core/error.h"

namespace automodel::tokenizer::detail {

std::string where_of(const std::string& component, const json& j) {
  std::string type = j.is_object() && j.contains("type") && j["type"].is_string() ? j["type"].get<std::string>() : "?";
  return component + " " + type;
}

std::string json_str(const json& j, const char* key, const std::string& where, const std::string& fallback) {
  if (!j.contains(key) || j[key].is_null()) return fallback;
  if (!j[key].is_string()) throw Error(std::string("field '") + key + "' must be a string", where);
  return j[key].get<std::string>();
}
bool json_bool(const json& j, const char* key, bool fallback) {
  if (!j.contains(key) || j[key].is_null()) return fallback;
  return j[key].get<bool>();
}

Pattern parse_pattern(const json& j, const std::string& where) {
  Pattern p;
  if (j.is_object() && j.contains("String")) {
    p.literal = j["String"].get<std::string>();
  } else if (j.is_object() && j.contains("Regex")) {
    p.regex = std::make_shared<u::Regex>(j["Regex"].get<std::string>());
  } else {
    throw Error("pattern must be {\"String\": ...} or {\"Regex\": ...}", where);
  }
  return p;
}

}  // namespace automodel::tokenizer::detail
