// ConfigNode: the tree, dotted access, typed getters with errors that name file, line and key; check_keys.
#include <algorithm>

#include "components/config/config.h"
#include "core/error.h"

namespace automodel::config {

namespace {

std::vector<std::string> split_dotted(const std::string& key) {
  std::vector<std::string> parts;
  size_t start = 0;
  while (true) {
    size_t dot = key.find('.', start);
    parts.push_back(key.substr(start, dot == std::string::npos ? std::string::npos : dot - start));
    if (dot == std::string::npos) break;
    start = dot + 1;
  }
  return parts;
}

bool parse_index(const std::string& s, size_t& out) {
  if (s.empty() || s.size() > 18 || !std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; }))
    return false;
  out = static_cast<size_t>(std::stoull(s));
  return true;
}

std::string describe_scalar(const ConfigNode& n) {
  switch (n.kind()) {
    case ConfigNode::Kind::Null: return "null";
    case ConfigNode::Kind::Bool: return n.as_bool() ? "bool true" : "bool false";
    case ConfigNode::Kind::Int: return "int " + std::to_string(n.as_int());
    case ConfigNode::Kind::Double: return "float " + std::to_string(n.as_double());
    case ConfigNode::Kind::String: return "string \"" + n.as_string() + "\"";
    case ConfigNode::Kind::List: return "a list";
    case ConfigNode::Kind::Map: return "a map";
  }
  return "";
}

std::string prefix(const ConfigNode& n) {
  std::string w = n.where();
  return w.empty() ? "" : w + ": ";
}

}  // namespace

ConfigNode ConfigNode::boolean(bool v) {
  ConfigNode n;
  n.kind_ = Kind::Bool;
  n.b_ = v;
  return n;
}
ConfigNode ConfigNode::integer(int64_t v) {
  ConfigNode n;
  n.kind_ = Kind::Int;
  n.i_ = v;
  return n;
}
ConfigNode ConfigNode::real(double v) {
  ConfigNode n;
  n.kind_ = Kind::Double;
  n.d_ = v;
  return n;
}
ConfigNode ConfigNode::string(std::string v) {
  ConfigNode n;
  n.kind_ = Kind::String;
  n.s_ = std::move(v);
  return n;
}
ConfigNode ConfigNode::list() {
  ConfigNode n;
  n.kind_ = Kind::List;
  return n;
}
ConfigNode ConfigNode::map() {
  ConfigNode n;
  n.kind_ = Kind::Map;
  return n;
}

const char* ConfigNode::kind_name(Kind k) {
  switch (k) {
    case Kind::Null: return "null";
    case Kind::Bool: return "bool";
    case Kind::Int: return "int";
    case Kind::Double: return "float";
    case Kind::String: return "string";
    case Kind::List: return "list";
    case Kind::Map: return "map";
  }
  return "?";
}

std::string ConfigNode::where() const {
  if (file_.empty()) return line_ > 0 ? "line " + std::to_string(line_) : "";
  return line_ > 0 ? file_ + ":" + std::to_string(line_) : file_;
}

void ConfigNode::set_origin(const std::string& file, int line) {
  file_ = file;
  line_ = line;
}

void ConfigNode::type_error(const char* expected) const {
  std::string key = path_.empty() ? "the config root" : "'" + path_ + "'";
  throw Error(prefix(*this) + key + ": expected " + expected + ", got " + describe_scalar(*this), where(),
              "fix the value in the YAML file or override it on the command line");
}

bool ConfigNode::as_bool() const {
  if (kind_ != Kind::Bool) type_error("a bool (true/false)");
  return b_;
}
int64_t ConfigNode::as_int() const {
  if (kind_ != Kind::Int) type_error("an integer");
  return i_;
}
int64_t ConfigNode::as_int_in(int64_t lo, int64_t hi, const char* type_name) const {
  if (kind_ != Kind::Int) type_error(type_name);
  if (i_ < lo || i_ > hi) {
    std::string what = std::string(type_name) + " in [" + std::to_string(lo) + ", " + std::to_string(hi) + "]";
    type_error(what.c_str());
  }
  return i_;
}
double ConfigNode::as_double() const {
  if (kind_ == Kind::Int) return static_cast<double>(i_);
  if (kind_ != Kind::Double) type_error("a number");
  return d_;
}
const std::string& ConfigNode::as_string() const {
  if (kind_ != Kind::String) type_error("a string");
  return s_;
}

const ConfigNode* ConfigNode::find(const std::string& dotted_key) const {
  const ConfigNode* cur = this;
  for (const std::string& part : split_dotted(dotted_key)) {
    if (cur->kind_ == Kind::Map) {
      auto it = std::find(cur->keys_.begin(), cur->keys_.end(), part);
      if (it == cur->keys_.end()) return nullptr;
      cur = &cur->children_[static_cast<size_t>(it - cur->keys_.begin())];
    } else if (cur->kind_ == Kind::List) {
      size_t idx = 0;
      if (!parse_index(part, idx) || idx >= cur->children_.size()) return nullptr;
      cur = &cur->children_[idx];
    } else {
      return nullptr;
    }
  }
  return cur;
}

const ConfigNode& ConfigNode::at(const std::string& dotted_key) const {
  if (const ConfigNode* n = find(dotted_key)) return *n;
  std::string full = path_.empty() ? dotted_key : path_ + "." + dotted_key;
  // The deepest existing ancestor says where to add the key.
  std::vector<std::string> parts = split_dotted(dotted_key);
  const ConfigNode* deepest = this;
  std::string sofar;
  for (size_t i = 0; i + 1 < parts.size(); ++i) {
    sofar += (i ? "." : "") + parts[i];
    const ConfigNode* n = find(sofar);
    if (n == nullptr) break;
    deepest = n;
  }
  std::string file = deepest->file_.empty() ? std::string("the config") : deepest->file_;
  std::string msg = file + ": missing required key '" + full + "'";
  if (deepest->line_ > 0 && !deepest->path_.empty())
    msg += " (section '" + deepest->path_ + "' at line " + std::to_string(deepest->line_) + ")";
  throw Error(msg, deepest->where(), "add '" + full + "' to the YAML file or pass --" + full + " <value>");
}

const std::vector<std::string>& ConfigNode::keys() const {
  if (kind_ != Kind::Map) type_error("a map");
  return keys_;
}

size_t ConfigNode::size() const { return (kind_ == Kind::Map || kind_ == Kind::List) ? children_.size() : 0; }

const ConfigNode& ConfigNode::operator[](size_t i) const {
  if (kind_ != Kind::List && kind_ != Kind::Map) type_error("a list");
  if (i >= children_.size())
    throw Error(prefix(*this) + "'" + path_ + "': index " + std::to_string(i) + " out of range (size " +
                std::to_string(children_.size()) + ")");
  return children_[i];
}

std::string ConfigNode::child_path(const std::string& key) const { return path_.empty() ? key : path_ + "." + key; }

void ConfigNode::rebase(const std::string& path) {
  // Every child's path is its parent's plus its key (insert, push_back and set keep it so): a node already at `path`
  // has its whole subtree there.
  if (path_ == path) return;
  path_ = path;
  if (kind_ == Kind::Map) {
    for (size_t i = 0; i < keys_.size(); ++i) children_[i].rebase(child_path(keys_[i]));
  } else if (kind_ == Kind::List) {
    for (size_t i = 0; i < children_.size(); ++i) children_[i].rebase(child_path(std::to_string(i)));
  }
}

void ConfigNode::push_back(ConfigNode value) {
  if (kind_ == Kind::Null) kind_ = Kind::List;
  if (kind_ != Kind::List) type_error("a list");
  value.rebase(child_path(std::to_string(children_.size())));
  children_.push_back(std::move(value));
}

void ConfigNode::set(const std::string& dotted_key, ConfigNode value) {
  std::vector<std::string> parts = split_dotted(dotted_key);
  ConfigNode* cur = this;
  for (size_t i = 0; i < parts.size(); ++i) {
    const std::string& part = parts[i];
    if (part.empty()) throw Error("config key '" + dotted_key + "' has an empty part", "", "write keys like a.b.c");
    bool last = i + 1 == parts.size();
    ConfigNode* next = nullptr;
    if (cur->kind_ == Kind::List) {
      size_t idx = 0;
      if (!parse_index(part, idx) || idx >= cur->children_.size())
        throw Error(prefix(*cur) + "'" + cur->path_ + "' is a list of " + std::to_string(cur->children_.size()) +
                        " items; cannot set '" + dotted_key + "'",
                    "", "index a list with 0.." + std::to_string(cur->children_.size()));
      next = &cur->children_[idx];
    } else {
      if (cur->kind_ != Kind::Map) {
        // As NeMo's set_by_dotted: a scalar on the way becomes a map.
        std::string file = cur->file_, path = cur->path_;
        int line = cur->line_;
        *cur = ConfigNode::map();
        cur->file_ = file;
        cur->line_ = line;
        cur->path_ = path;
      }
      auto it = std::find(cur->keys_.begin(), cur->keys_.end(), part);
      if (it == cur->keys_.end()) {
        cur->keys_.push_back(part);
        ConfigNode fresh = last ? ConfigNode() : ConfigNode::map();
        fresh.file_ = value.file_;
        fresh.line_ = value.line_;
        fresh.path_ = cur->child_path(part);
        cur->children_.push_back(std::move(fresh));
        next = &cur->children_.back();
      } else {
        next = &cur->children_[static_cast<size_t>(it - cur->keys_.begin())];
      }
    }
    if (last) {
      std::string path = next->path_;
      *next = std::move(value);
      next->rebase(path);
      return;
    }
    cur = next;
  }
}

void ConfigNode::insert(const std::string& key, ConfigNode value) {
  if (kind_ == Kind::Null) kind_ = Kind::Map;
  if (kind_ != Kind::Map) type_error("a map");
  value.rebase(child_path(key));
  auto it = std::find(keys_.begin(), keys_.end(), key);
  if (it != keys_.end()) {
    children_[static_cast<size_t>(it - keys_.begin())] = std::move(value);
    return;
  }
  keys_.push_back(key);
  children_.push_back(std::move(value));
}

bool ConfigNode::erase(const std::string& key) {
  if (kind_ != Kind::Map) return false;
  auto it = std::find(keys_.begin(), keys_.end(), key);
  if (it == keys_.end()) return false;
  size_t i = static_cast<size_t>(it - keys_.begin());
  keys_.erase(it);
  children_.erase(children_.begin() + static_cast<std::ptrdiff_t>(i));
  return true;
}

bool ConfigNode::operator==(const ConfigNode& o) const {
  if (kind_ != o.kind_) return false;
  switch (kind_) {
    case Kind::Null: return true;
    case Kind::Bool: return b_ == o.b_;
    case Kind::Int: return i_ == o.i_;
    case Kind::Double: return d_ == o.d_;
    case Kind::String: return s_ == o.s_;
    case Kind::List: return children_ == o.children_;
    case Kind::Map: return keys_ == o.keys_ && children_ == o.children_;
  }
  return false;
}

size_t edit_distance(const std::string& a, const std::string& b) {
  std::vector<size_t> prev(b.size() + 1), cur(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) prev[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    cur[0] = i;
    for (size_t j = 1; j <= b.size(); ++j)
      cur[j] = std::min({prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1)});
    std::swap(prev, cur);
  }
  return prev[b.size()];
}

void check_keys(const ConfigNode& map_node, const std::vector<std::string>& allowed) {
  const std::vector<std::string>& keys = map_node.keys();
  for (size_t i = 0; i < keys.size(); ++i) {
    const std::string& key = keys[i];
    if (std::find(allowed.begin(), allowed.end(), key) != allowed.end()) continue;
    const ConfigNode& child = map_node[i];
    std::string full = child.path().empty() ? key : child.path();
    std::string best;
    size_t best_d = std::string::npos;
    for (const std::string& a : allowed) {
      size_t d = edit_distance(key, a);
      if (d < best_d) best_d = d, best = a;
    }
    std::string list;
    for (const std::string& a : allowed) list += (list.empty() ? "" : ", ") + a;
    std::string msg = prefix(child) + "unknown key '" + full + "'";
    if (!best.empty() && best_d <= std::max<size_t>(2, key.size() / 3)) msg += "; did you mean '" + best + "'?";
    throw Error(msg, child.where(), "allowed keys here: " + list);
  }
}

}  // namespace automodel::config
