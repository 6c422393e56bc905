// Helpers the pipeline stages share for reading their tokenizer.json entries: typed fields and the
// {"String"} / {"Regex"} patterns of Replace and Split.
#include "components/tokenizer/tokenizer_pipeline.h"

#include "core/error.h"

namespace automodel::tokenizer::detail {

std::string where_of(const std::string& component, const json& j) {
  std::string type = j.is_object() && j.contains("type") && j["type"].is_string() ? j["type"].get<std::string>() : "?";
  return component + " " + type;
}

namespace {
std::string type_name(const json& v) { return v.type_name(); }
std::string detail_str(size_t offset, size_t piece_size, const std::string& excerpt) {
  return "input text at byte " + std::to_string(offset) + " (in a pre-tokenized piece of " +
         std::to_string(piece_size) + " bytes): " + excerpt;
}
}  // namespace

std::string json_str(const json& j, const char* key, const std::string& where, const std::string& fallback) {
  if (!j.contains(key) || j[key].is_null()) return fallback;
  if (!j[key].is_string())
    throw Error(std::string("field '") + key + "' must be a string, got " + type_name(j[key]), where);
  return j[key].get<std::string>();
}

bool json_bool(const json& j, const char* key, bool fallback, const std::string& where) {
  if (!j.contains(key) || j[key].is_null()) return fallback;
  if (!j[key].is_boolean())
    throw Error(std::string("field '") + key + "' must be true or false, got " + j[key].dump(), where);
  return j[key].get<bool>();
}

size_t json_size(const json& j, const char* key, size_t fallback, const std::string& where) {
  if (!j.contains(key) || j[key].is_null()) return fallback;
  const json& v = j[key];
  if (v.is_number_unsigned() || (v.is_number_integer() && v.get<int64_t>() >= 0)) return v.get<size_t>();
  throw Error(std::string("field '") + key + "' must be a non-negative integer, got " + v.dump(), where);
}

std::string component_type(const json& j, const std::string& component) {
  if (j.is_null()) return "";
  if (!j.is_object())
    throw Error("'" + component + "' must be an object with a \"type\" (or null), got " + type_name(j), component);
  if (!j.contains("type") || !j["type"].is_string())
    throw Error("'" + component + "' has no \"type\" string", component);
  return j["type"].get<std::string>();
}

const json& json_list(const json& j, const char* key, const std::string& where) {
  if (!j.contains(key) || !j[key].is_array())
    throw Error(
        std::string("field '") + key + "' must be a list, got " + (j.contains(key) ? type_name(j[key]) : "nothing"),
        where);
  return j[key];
}

int64_t json_token_id(const json& v, const std::string& what, const std::string& where) {
  if (v.is_number_unsigned() && v.get<uint64_t>() <= UINT32_MAX) return static_cast<int64_t>(v.get<uint64_t>());
  if (v.is_number_integer() && !v.is_number_unsigned() && v.get<int64_t>() >= 0 && v.get<int64_t>() <= UINT32_MAX)
    return v.get<int64_t>();
  std::string why = v.is_number_integer() || v.is_number_unsigned() ? "out of range"
                    : v.is_number_float()                           ? "not an integer"
                                                                    : "a " + type_name(v) + ", not a number";
  throw Error(what + " has id " + v.dump() + " (" + why + ")", where,
              "token ids are integers from 0 to 4294967295, as the tokenizers package reads them; fix the id");
}

void regex_failed(const u::RegexMatchError& e, const u::Regex& re, std::string_view subject, size_t input_offset,
                  const std::string& stage) {
  // A short excerpt from the failure on, cut at a character boundary, with control characters escaped.
  size_t from = std::min(e.offset, subject.size()), to = from;
  while (to < subject.size() && to - from < 40) to += u::utf8_len(static_cast<unsigned char>(subject[to]));
  to = std::min(to, subject.size());
  std::string excerpt = json(u::from_utf8_lossy(subject.substr(from, to - from))).dump();
  if (to < subject.size()) excerpt += "...";
  std::string what = e.resource_limit ? "the regex match limit was hit: " : "regex matching failed: ";
  throw Error(what + e.what() + ", matching the tokenizer.json " + stage + " pattern /" + re.pattern() + "/",
              detail_str(input_offset, subject.size(), excerpt),
              e.resource_limit
                  ? "the input has a run that makes this pattern backtrack far too much: split or clean up "
                    "that part of the text (or simplify the pattern in tokenizer.json)"
                  : "report this input and tokenizer.json: the tokenizers package may accept it");
}

Pattern parse_pattern(const json& j, const std::string& where) {
  Pattern p;
  p.stage = where;
  if (j.is_object() && j.contains("String") && j["String"].is_string()) {
    p.literal = j["String"].get<std::string>();
  } else if (j.is_object() && j.contains("Regex") && j["Regex"].is_string()) {
    try {
      p.regex = std::make_shared<u::Regex>(j["Regex"].get<std::string>());
    } catch (const Error& e) {
      throw Error(e.what_part(), where + " pattern",
                  "fix the regex (PCRE2 syntax, as in the tokenizers package's Oniguruma)");
    }
  } else {
    throw Error("pattern must be {\"String\": \"...\"} or {\"Regex\": \"...\"}, got " + j.dump(), where);
  }
  return p;
}

}  // namespace automodel::tokenizer::detail
