// Post-processors: special tokens around the encoding (TemplateProcessing) and ByteLevel's offset
// trimming, in a Sequence.
#include <algorithm>

#include "components/tokenizer/tokenizer_pipeline.h"
#include "core/error.h"

namespace automodel::tokenizer::detail {

namespace {

struct ByteLevelPost : PostProcessor {
  bool trim_offsets = true, add_prefix_space = true;
  bool ids_around(bool, std::vector<int64_t>&, std::vector<int64_t>&) const override { return true; }  // offsets only
  void apply(Enc& e, bool, const std::function<std::string(int64_t)>& tok, std::string_view text) const override {
    if (!trim_offsets) return;
    static const std::string space_char = "\xC4\xA0";  // byte-level 'Ġ'
    for (size_t i = 0; i < e.ids.size(); ++i) {
      std::string t = tok(e.ids[i]);
      auto is_sp = [&](uint32_t cp) { return cp == 0x120 || u::is_whitespace(cp); };
      size_t lead = 0, trail = 0;
      std::vector<uint32_t> cps;
      for (size_t k = 0; k < t.size();) {
        size_t len;
        cps.push_back(u::decode_at(t, k, &len));
        k += len;
      }
      while (lead < cps.size() && is_sp(cps[lead])) ++lead;
      while (trail < cps.size() && is_sp(cps[cps.size() - 1 - trail])) ++trail;
      Range& r = e.offsets[i];
      // The tokenizers package trims in characters of the input (its Python offsets are character
      // offsets), so a space that add_prefix_space inserted moves the start past a whole character.
      if (lead > 0) {
        bool first = i == 0 || r.a == 0;
        if (first && add_prefix_space && lead == 1) lead = 0;
        for (size_t k = 0; k < lead && r.a < r.b; ++k) r.a += u::utf8_len(static_cast<unsigned char>(text[r.a]));
        r.a = std::min(r.a, r.b);
      }
      if (trail > 0 && r.b >= trail) {
        for (size_t k = 0; k < trail && r.b > r.a; ++k) {
          --r.b;
          while (r.b > r.a && (static_cast<unsigned char>(text[r.b]) & 0xC0) == 0x80) --r.b;
        }
      }
    }
  }
};

struct TemplatePost : PostProcessor {
  struct Item {
    bool is_special;
    std::string name;  // special token name or sequence "A"/"B"
  };
  std::vector<Item> single;
  std::unordered_map<std::string, std::vector<int64_t>> special_ids;
  bool ids_around(bool add_special, std::vector<int64_t>& before, std::vector<int64_t>& after) const override {
    if (!add_special) return true;
    bool seen_sequence = false;
    for (const auto& it : single) {
      if (!it.is_special) {
        seen_sequence = true;
        continue;
      }
      auto& side = seen_sequence ? after : before;
      const auto& ids = special_ids.at(it.name);
      side.insert(side.end(), ids.begin(), ids.end());
    }
    return seen_sequence;
  }
  void apply(Enc& e, bool add_special, const std::function<std::string(int64_t)>&, std::string_view) const override {
    if (!add_special) return;
    Enc out;
    for (const auto& it : single) {
      if (it.is_special) {
        for (int64_t id : special_ids.at(it.name)) {
          out.ids.push_back(id);
          out.offsets.push_back({0, 0});
          out.special.push_back(1);
        }
      } else {
        out.ids.insert(out.ids.end(), e.ids.begin(), e.ids.end());
        out.offsets.insert(out.offsets.end(), e.offsets.begin(), e.offsets.end());
        out.special.insert(out.special.end(), e.special.begin(), e.special.end());
      }
    }
    e = std::move(out);
  }
};

struct SequencePost : PostProcessor {
  std::vector<PostProcessorPtr> items;
  bool ids_around(bool add_special, std::vector<int64_t>& before, std::vector<int64_t>& after) const override {
    for (const auto& p : items) {
      std::vector<int64_t> b, a;
      if (!p->ids_around(add_special, b, a)) return false;
      before.insert(before.begin(), b.begin(), b.end());
      after.insert(after.end(), a.begin(), a.end());
    }
    return true;
  }
  void apply(Enc& e, bool add_special, const std::function<std::string(int64_t)>& tok,
             std::string_view text) const override {
    for (const auto& p : items) p->apply(e, add_special, tok, text);
  }
};

}  // namespace

PostProcessorPtr make_post_processor(const json& j) {
  std::string type = component_type(j, "post_processor");
  if (type.empty()) return nullptr;
  std::string where = "post_processor " + type;
  if (type == "Sequence") {
    auto s = std::make_unique<SequencePost>();
    for (const auto& item : json_list(j, "processors", where))
      if (auto p = make_post_processor(item)) s->items.push_back(std::move(p));
    return s;
  }
  if (type == "ByteLevel") {
    auto p = std::make_unique<ByteLevelPost>();
    p->trim_offsets = json_bool(j, "trim_offsets", true, where);
    p->add_prefix_space = json_bool(j, "add_prefix_space", true, where);
    return p;
  }
  if (type == "TemplateProcessing") {
    auto p = std::make_unique<TemplatePost>();
    auto string_id = [&](const json& item, const char* kind) {
      const json& inner = item[kind];
      if (!inner.is_object() || !inner.contains("id") || !inner["id"].is_string())
        throw Error(std::string("template item ") + item.dump() + " has no string \"id\"", where + " single");
      return inner["id"].get<std::string>();
    };
    for (const auto& item : json_list(j, "single", where)) {
      if (item.is_object() && item.contains("SpecialToken")) {
        p->single.push_back({true, string_id(item, "SpecialToken")});
      } else if (item.is_object() && item.contains("Sequence")) {
        std::string id = string_id(item, "Sequence");
        if (id != "A") throw Error("single template uses sequence $" + id, where);
        p->single.push_back({false, id});
      } else {
        throw Error("unknown template item " + item.dump(), where);
      }
    }
    if (!j.contains("special_tokens") || !j["special_tokens"].is_object())
      throw Error("field 'special_tokens' must be an object", where);
    for (auto it = j["special_tokens"].begin(); it != j["special_tokens"].end(); ++it) {
      std::string at = where + " special_tokens['" + it.key() + "']";
      if (!it.value().is_object()) throw Error("a special token must be an object with \"ids\"", at);
      for (const auto& id : json_list(it.value(), "ids", at))
        p->special_ids[it.key()].push_back(json_token_id(id, "special token '" + it.key() + "'", at));
      p->special_ids[it.key()];  // present even with no ids
    }
    for (const auto& item : p->single)
      if (item.is_special && !p->special_ids.count(item.name))
        throw Error("template special token '" + item.name + "' is not in special_tokens", where);
    return p;
  }
  throw Error("unsupported post_processor type '" + type + "'", where,
              "supported: Sequence, ByteLevel, TemplateProcessing");
}

}  // namespace automodel::tokenizer::detail
