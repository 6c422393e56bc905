#pragma once
// components/config: a recipe YAML (NeMo Automodel's shape) as a ConfigNode tree that remembers, per node, the file
// and line it came from, so every error says "recipe.yaml:12: ...".
//
// Scalars are typed as NeMo Automodel types them: PyYAML's safe_load (YAML 1.1: yes/no/on/off/true/True/...,
// ~/null/NULL, 0x1F, 0o-style 017, 1_000, 1.5, 1.0e-5 with a signed exponent, .inf, .nan), then every value that is
// still a string goes through translate_value(): "none"/"None" -> null, "true"/"True"/"false"/"False" -> bool, else a
// Python literal (ast.literal_eval: 1e-5, 10, [1, 2], (1, 2), {'a': 1}, 'text') when it is one, else the string.
// Values of `_target_` and of keys ending in `_fn` are never translated (NeMo resolves them as names).
// ${VAR}, ${VAR,default}, ${oc.env:VAR}, ${oc.env:VAR,default} in a scalar are replaced from the environment at
// load time, and the result is typed like a string (translate_value).
#include <cstddef>
#include <cstdint>
#include <limits>
#include <optional>
#include <string>
#include <type_traits>
#include <vector>

namespace automodel::config {

namespace detail {
struct Builder;
}  // namespace detail

class ConfigNode {
 public:
  enum class Kind { Null, Bool, Int, Double, String, List, Map };

  ConfigNode() = default;  // null
  static ConfigNode null() { return ConfigNode(); }
  static ConfigNode boolean(bool v);
  static ConfigNode integer(int64_t v);
  static ConfigNode real(double v);
  static ConfigNode string(std::string v);
  static ConfigNode list();
  static ConfigNode map();

  Kind kind() const { return kind_; }
  bool is_null() const { return kind_ == Kind::Null; }
  bool is_map() const { return kind_ == Kind::Map; }
  bool is_list() const { return kind_ == Kind::List; }
  bool is_scalar() const { return !is_map() && !is_list(); }
  static const char* kind_name(Kind k);

  // Where the node came from: its file ("" when built in code), its 1-based line (0 when unknown) and its dotted
  // path from the root ("" for the root). where() is "file:line" (or what of it is known).
  const std::string& file() const { return file_; }
  int line() const { return line_; }
  const std::string& path() const { return path_; }
  std::string where() const;
  void set_origin(const std::string& file, int line);

  // Scalars, with an automodel::Error naming the line, the key and the expected type when the kind differs.
  // as_double() also accepts an integer.
  bool as_bool() const;
  int64_t as_int() const;
  double as_double() const;
  const std::string& as_string() const;

  // Maps keep their keys in file order. Dotted keys ("optimizer.lr", "a.list.0") walk maps and list indices.
  bool contains(const std::string& dotted_key) const { return find(dotted_key) != nullptr; }
  const ConfigNode* find(const std::string& dotted_key) const;
  const ConfigNode& at(const std::string& dotted_key) const;  // Error naming the full dotted path and the file
  const std::vector<std::string>& keys() const;               // Error unless a map
  const ConfigNode& operator[](const std::string& key) const { return at(key); }
  // Sets a dotted key, creating the maps on the way (a non-map on the way is replaced by a map, as NeMo's
  // set_by_dotted does; an integer part indexes an existing list). The value's paths are rebased on the key.
  void set(const std::string& dotted_key, ConfigNode value);
  bool erase(const std::string& key);  // a direct child of a map
  // Sets a direct child of a map (the key is not split at dots; a null node becomes a map).
  void insert(const std::string& key, ConfigNode value);

  size_t size() const;  // children of a list or map, 0 for scalars
  const ConfigNode& operator[](size_t i) const;
  void push_back(ConfigNode value);

  template <class T>
  T as() const;
  template <class T>
  T get(const std::string& dotted_key) const {
    return at(dotted_key).as<T>();
  }
  // nullopt when the key is absent or null.
  template <class T>
  std::optional<T> get_optional(const std::string& dotted_key) const {
    const ConfigNode* n = find(dotted_key);
    return (n == nullptr || n->is_null()) ? std::nullopt : std::optional<T>(n->as<T>());
  }
  // The fallback when the key is absent or null.
  template <class T>
  T get(const std::string& dotted_key, const std::type_identity_t<T>& fallback) const {
    const ConfigNode* n = find(dotted_key);
    return (n == nullptr || n->is_null()) ? fallback : n->as<T>();
  }

  // Block-style YAML that parse_yaml reads back into an equal tree (strings quoted where needed).
  std::string to_yaml() const;

  // Structural equality: kinds, values, keys in order; origins are ignored.
  bool operator==(const ConfigNode& other) const;

 private:
  friend struct detail::Builder;  // the readers of this component (builder.h)

  [[noreturn]] void type_error(const char* expected) const;
  int64_t as_int_in(int64_t lo, int64_t hi, const char* type_name) const;
  void rebase(const std::string& path);
  std::string child_path(const std::string& key) const;

  Kind kind_ = Kind::Null;
  bool b_ = false;
  int64_t i_ = 0;
  double d_ = 0;
  std::string s_;
  std::vector<std::string> keys_;     // Map
  std::vector<ConfigNode> children_;  // Map (parallel to keys_) or List
  std::string file_, path_;
  int line_ = 0;
};

namespace detail {
template <class T>
struct is_vector : std::false_type {};
template <class T, class A>
struct is_vector<std::vector<T, A>> : std::true_type {};
}  // namespace detail

template <class T>
T ConfigNode::as() const {
  if constexpr (std::is_same_v<T, ConfigNode>) {
    return *this;
  } else if constexpr (std::is_same_v<T, bool>) {
    return as_bool();
  } else if constexpr (std::is_same_v<T, std::string>) {
    return as_string();
  } else if constexpr (std::is_floating_point_v<T>) {
    return static_cast<T>(as_double());
  } else if constexpr (std::is_integral_v<T>) {
    constexpr int64_t lo = std::is_signed_v<T> ? static_cast<int64_t>(std::numeric_limits<T>::min()) : 0;
    constexpr int64_t hi = sizeof(T) >= sizeof(int64_t) ? std::numeric_limits<int64_t>::max()
                                                        : static_cast<int64_t>(std::numeric_limits<T>::max());
    return static_cast<T>(as_int_in(lo, hi, std::is_signed_v<T> ? "an integer" : "a non-negative integer"));
  } else if constexpr (detail::is_vector<T>::value) {
    if (!is_list()) type_error("a list");
    T out;
    out.reserve(size());
    for (size_t i = 0; i < size(); ++i) out.push_back((*this)[i].template as<typename T::value_type>());
    return out;
  } else {
    static_assert(sizeof(T) == 0, "ConfigNode::as<T>: unsupported type");
  }
}

// Reading. A syntax error names the source and line; the file must exist. A key given twice in one map is an Error
// naming both lines (PyYAML keeps the last one silently). Aliases are expanded as PyYAML does, within bounds: an
// alias inside its own anchored node (a cycle), nesting deeper than kMaxYamlDepth lists and maps, or an expansion
// past kMaxYamlValues values or kMaxYamlBytes bytes of keys and text (a "billion laughs" document) is an Error.
inline constexpr size_t kMaxYamlDepth = 100;
inline constexpr size_t kMaxYamlValues = 1'000'000;
inline constexpr size_t kMaxYamlBytes = size_t(256) << 20;
ConfigNode load_yaml(const std::string& path);
ConfigNode parse_yaml(const std::string& text, const std::string& source_name);

// The typing of a string value as NeMo Automodel's translate_value does it (see the top of this file).
ConfigNode translate_value(const std::string& text);
// The typing of a plain (unquoted) YAML scalar: PyYAML's YAML 1.1 resolver, then translate_value for strings.
ConfigNode type_plain_scalar(const std::string& text);
// ${VAR}, ${VAR,default}, ${oc.env:VAR}, ${oc.env:VAR,default} from the environment; "\${" stays a literal "${".
// `where` (e.g. "recipe.yaml:7: model.path") prefixes the error for an unset variable without a default.
std::string interpolate_env(const std::string& text, const std::string& where);

// CLI overrides, as NeMo Automodel's parse_cli_argv reads them: `--a.b.c value`, `--a.b.c=value`, bare `--flag`
// (= true; also when the next token starts with "--"). Values are typed by translate_value. Every token must be an
// override or the value of one (the CLI removes `-c/--config <path>` and subcommands first).
struct Override {
  std::string key;   // dotted
  std::string text;  // the value as given ("True" for a bare flag)
  ConfigNode value;
};
std::vector<Override> parse_overrides(const std::vector<std::string>& args);
void apply_overrides(ConfigNode& root, const std::vector<Override>& overrides);

// An Error, at the map's line, for its first key not in `allowed`, with the closest allowed key suggested.
void check_keys(const ConfigNode& map_node, const std::vector<std::string>& allowed);

// Levenshtein distance (exposed for the suggestions).
size_t edit_distance(const std::string& a, const std::string& b);

}  // namespace automodel::config
