// Decoders: token strings back to text (ByteLevel, Metaspace, Replace, ByteFallback, Fuse, Strip,
// Sequence).
#include "components/tokenizer/tokenizer_pipeline.h"
#include "core/error.h"

namespace automodel::tokenizer::detail {

namespace {

struct ByteLevelDec : Decoder {
  void apply(std::vector<std::string>& tokens) const override {
    const auto& bt = byte_tables();
    std::string bytes;
    for (const auto& t : tokens) {
      std::string tb;
      bool ok = true;
      for (size_t k = 0; k < t.size();) {
        size_t len;
        uint32_t cp = u::decode_at(t, k, &len);
        auto it = bt.char_to_byte.find(cp);
        if (it == bt.char_to_byte.end()) {
          ok = false;
          break;
        }
        tb += static_cast<char>(it->second);
        k += len;
      }
      bytes += ok ? tb : t;
    }
    tokens.assign(1, u::from_utf8_lossy(bytes));
  }
};

struct MetaspaceDec : Decoder {
  std::string replacement = "\xE2\x96\x81";
  PrependScheme scheme = PrependScheme::Always;
  void apply(std::vector<std::string>& tokens) const override {
    for (size_t i = 0; i < tokens.size(); ++i) {
      std::string out;
      const std::string& t = tokens[i];
      for (size_t k = 0; k < t.size();) {
        if (t.compare(k, replacement.size(), replacement) == 0) {
          if (!(i == 0 && scheme != PrependScheme::Never)) out += ' ';
          k += replacement.size();
        } else {
          out += t[k++];
        }
      }
      tokens[i] = std::move(out);
    }
  }
};

struct ReplaceDec : Decoder {
  Pattern pattern;
  std::string content;
  void apply(std::vector<std::string>& tokens) const override {
    for (auto& t : tokens) {
      auto m = pattern.find_all(t);
      if (m.empty()) continue;
      std::string out;
      size_t prev = 0;
      for (auto [a, b] : m) {
        out.append(t, prev, a - prev);
        out += content;
        prev = b;
      }
      out.append(t, prev, std::string::npos);
      t = std::move(out);
    }
  }
};

struct ByteFallbackDec : Decoder {
  void apply(std::vector<std::string>& tokens) const override {
    std::vector<std::string> out;
    std::string bytes;
    size_t nbytes = 0;
    auto flush = [&] {
      if (nbytes == 0) return;
      if (u::valid_utf8(bytes))
        out.push_back(bytes);
      else
        for (size_t k = 0; k < nbytes; ++k) out.push_back("\xEF\xBF\xBD");
      bytes.clear();
      nbytes = 0;
    };
    for (auto& t : tokens) {
      unsigned v = 0;
      auto hex = [](char c) -> int {
        if (c >= '0' && c <= '9') return c - '0';
        if (c >= 'A' && c <= 'F') return c - 'A' + 10;
        if (c >= 'a' && c <= 'f') return c - 'a' + 10;
        return -1;
      };
      if (t.size() == 6 && t[0] == '<' && t[1] == '0' && t[2] == 'x' && t[5] == '>' && hex(t[3]) >= 0 &&
          hex(t[4]) >= 0) {
        v = static_cast<unsigned>(hex(t[3]) * 16 + hex(t[4]));
        bytes += static_cast<char>(v);
        ++nbytes;
      } else {
        flush();
        out.push_back(std::move(t));
      }
    }
    flush();
    tokens = std::move(out);
  }
};

struct FuseDec : Decoder {
  void apply(std::vector<std::string>& tokens) const override {
    std::string all;
    for (auto& t : tokens) all += t;
    tokens.assign(1, all);
  }
};

struct StripDec : Decoder {
  std::string content;
  size_t start = 0, stop = 0;
  void apply(std::vector<std::string>& tokens) const override {
    for (auto& t : tokens) {
      std::vector<std::pair<size_t, size_t>> chars;
      for (size_t k = 0; k < t.size();) {
        size_t len;
        u::decode_at(t, k, &len);
        chars.emplace_back(k, len);
        k += len;
      }
      size_t a = 0, b = chars.size();
      for (size_t n = 0; n < start && a < b && t.compare(chars[a].first, chars[a].second, content) == 0; ++n) ++a;
      for (size_t n = 0; n < stop && b > a && t.compare(chars[b - 1].first, chars[b - 1].second, content) == 0; ++n)
        --b;
      size_t ba = a < chars.size() ? chars[a].first : t.size();
      size_t bb = b < chars.size() ? chars[b].first : t.size();
      t = t.substr(ba, bb - ba);
    }
  }
};

struct SequenceDec : Decoder {
  std::vector<DecoderPtr> items;
  void apply(std::vector<std::string>& tokens) const override {
    for (const auto& d : items) d->apply(tokens);
  }
};

}  // namespace

DecoderPtr make_decoder(const json& j) {
  std::string type = component_type(j, "decoder");
  if (type.empty()) return nullptr;
  std::string where = "decoder " + type;
  if (type == "Sequence") {
    auto s = std::make_unique<SequenceDec>();
    for (const auto& item : json_list(j, "decoders", where))
      if (auto d = make_decoder(item)) s->items.push_back(std::move(d));
    return s;
  }
  if (type == "ByteLevel") return std::make_unique<ByteLevelDec>();
  if (type == "Metaspace") {
    auto d = std::make_unique<MetaspaceDec>();
    d->replacement = json_str(j, "replacement", where, d->replacement);
    if (d->replacement.empty() || u::utf8_len(static_cast<unsigned char>(d->replacement[0])) != d->replacement.size())
      throw Error("Metaspace replacement '" + d->replacement + "' must be exactly one character", where);
    if (j.contains("prepend_scheme") && !j["prepend_scheme"].is_null()) {
      std::string s = json_str(j, "prepend_scheme", where);
      d->scheme = s == "never" ? PrependScheme::Never : s == "first" ? PrependScheme::First : PrependScheme::Always;
    } else if (j.contains("add_prefix_space")) {
      d->scheme = json_bool(j, "add_prefix_space", true, where) ? PrependScheme::Always : PrependScheme::Never;
    }
    return d;
  }
  if (type == "Replace") {
    auto d = std::make_unique<ReplaceDec>();
    d->pattern = parse_pattern(j.contains("pattern") ? j["pattern"] : json(), where);
    d->content = json_str(j, "content", where);
    return d;
  }
  if (type == "ByteFallback") return std::make_unique<ByteFallbackDec>();
  if (type == "Fuse") return std::make_unique<FuseDec>();
  if (type == "Strip") {
    auto d = std::make_unique<StripDec>();
    d->content = json_str(j, "content", where, " ");
    d->start = json_size(j, "start", 0, where);
    d->stop = json_size(j, "stop", 0, where);
    return d;
  }
  throw Error("unsupported decoder type '" + type + "'", where,
              "supported: Sequence, ByteLevel, Metaspace, Replace, ByteFallback, Fuse, Strip");
}

}  // namespace automodel::tokenizer::detail
