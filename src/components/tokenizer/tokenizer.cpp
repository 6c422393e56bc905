// tokenizer.json pipeline: added tokens -> normalizer -> pre-tokenizer -> BPE -> post-processor, and
// the decoder chain. Offsets are tracked per normalized byte as a range of original bytes, as the
// `tokenizers` package's NormalizedString does. The stages live in their own files (tokenizer_pipeline.h).
#include "components/tokenizer/tokenizer.h"

#include <filesystem>
#include <unordered_map>

#include "components/tokenizer/tokenizer_pipeline.h"
#include "components/tokenizer/unicode.h"
#include "core/error.h"
#include "io/hf_dir.h"

namespace automodel::tokenizer {

using json = nlohmann::json;
namespace u = unicode;

using detail::AddedToken;
using detail::Bpe;
using detail::DecoderPtr;
using detail::Enc;
using detail::Matcher;
using detail::NormalizerPtr;
using detail::Piece;
using detail::PostProcessorPtr;
using detail::PreTokenizerPtr;
using detail::Range;
using detail::Vocab;

namespace {

std::optional<std::string> token_field(const json& cfg, const char* key) {
  if (!cfg.is_object() || !cfg.contains(key) || cfg[key].is_null()) return std::nullopt;
  const json& v = cfg[key];
  if (v.is_string()) return v.get<std::string>();
  if (v.is_object() && v.contains("content") && v["content"].is_string()) return v["content"].get<std::string>();
  throw Error(std::string("field '") + key + "' must be a string or an AddedToken object", "tokenizer_config.json");
}

}  // namespace

// ---------------------------------------------------------------- Impl

struct Tokenizer::Impl {
  NormalizerPtr normalizer;
  PreTokenizerPtr pre_tokenizer;
  std::unique_ptr<Bpe> model;
  PostProcessorPtr post_processor;
  DecoderPtr decoder;
  std::vector<AddedToken> added;
  std::unordered_map<int64_t, size_t> added_by_id;
  Vocab added_by_content;
  Matcher raw_matcher, normalized_matcher;

  std::string token_of(int64_t id) const {
    auto it = added_by_id.find(id);
    if (it != added_by_id.end()) return added[it->second].token;
    if (id >= 0 && static_cast<size_t>(id) < model->id_to_token.size())
      return model->id_to_token[static_cast<size_t>(id)];
    return "";
  }
};

Tokenizer Tokenizer::from_json(const json& j, const std::string& where) {
  auto impl = std::make_shared<Impl>();
  try {
    if (!j.is_object() || !j.contains("model")) throw Error("not a tokenizer.json (no 'model')", where);
    for (const char* key : {"truncation", "padding"})
      if (j.contains(key) && !j[key].is_null())
        throw Error(std::string("'") + key + "' in tokenizer.json is not supported (it must be null)", where);
    impl->model = detail::make_model(j.at("model"));
    impl->normalizer = detail::make_normalizer(j.value("normalizer", json()));
    impl->pre_tokenizer = detail::make_pre_tokenizer(j.value("pre_tokenizer", json()));
    impl->post_processor = detail::make_post_processor(j.value("post_processor", json()));
    impl->decoder = detail::make_decoder(j.value("decoder", json()));
    if (j.contains("added_tokens") && j["added_tokens"].is_array()) {
      for (const auto& t : j["added_tokens"]) {
        AddedToken a;
        a.id = t.at("id").get<int64_t>();
        a.content = t.at("content").get<std::string>();
        a.single_word = t.value("single_word", false);
        a.lstrip = t.value("lstrip", false);
        a.rstrip = t.value("rstrip", false);
        a.normalized = t.value("normalized", false);
        a.special = t.value("special", false);
        impl->added.push_back(a);
      }
    }
  } catch (const json::exception& e) {
    throw Error(std::string("malformed tokenizer.json: ") + e.what(), where);
  }
  for (size_t k = 0; k < impl->added.size(); ++k) {
    impl->added_by_id[impl->added[k].id] = k;
    impl->added_by_content[impl->added[k].content] = impl->added[k].id;
  }
  for (auto& a : impl->added) {
    a.token = a.content;
    if (a.normalized && impl->normalizer) {
      Piece p;
      p.s = a.content;
      p.al.assign(p.s.size(), Range{});
      impl->normalizer->apply(p);
      impl->normalized_matcher.add(p.s, &a);
      a.token = p.s;
    } else if (a.normalized) {
      impl->normalized_matcher.add(a.content, &a);
    } else {
      impl->raw_matcher.add(a.content, &a);
    }
  }
  Tokenizer t;
  t.impl_ = std::move(impl);
  return t;
}

Tokenizer Tokenizer::from_file(const std::string& path) { return from_json(io::read_json_file(path), path); }

Tokenizer Tokenizer::from_pretrained(const std::string& name) {
  namespace fs = std::filesystem;
  const fs::path dir(io::resolve_model_dir(name));
  fs::path tj = dir / "tokenizer.json";
  if (!fs::exists(tj)) throw Error("no tokenizer.json in the model directory", dir.string());
  Tokenizer t = from_file(tj.string());
  fs::path cj = dir / "tokenizer_config.json";
  if (fs::exists(cj)) {
    t.config_ = io::read_json_file(cj.string());
    const json& c = t.config_;
    t.bos_token_ = token_field(c, "bos_token");
    t.eos_token_ = token_field(c, "eos_token");
    t.pad_token_ = token_field(c, "pad_token");
    t.unk_token_ = token_field(c, "unk_token");
    if (c.contains("add_bos_token") && c["add_bos_token"].is_boolean())
      t.add_bos_token_ = c["add_bos_token"].get<bool>();
    if (c.contains("add_eos_token") && c["add_eos_token"].is_boolean())
      t.add_eos_token_ = c["add_eos_token"].get<bool>();
    if (c.contains("model_max_length") && c["model_max_length"].is_number()) {
      double v = c["model_max_length"].get<double>();
      t.model_max_length_ = v >= 9.2e18 ? INT64_MAX : static_cast<int64_t>(v);
    }
  }
  return t;
}

Tokenizer::Encoding Tokenizer::encode(std::string_view text, bool add_special_tokens) const {
  const Impl& m = *impl_;
  if (!u::valid_utf8(text)) throw Error("text is not valid UTF-8", "Tokenizer::encode");
  Piece whole;
  whole.s = std::string(text);
  whole.al.resize(text.size());
  for (size_t i = 0; i < text.size();) {
    size_t len = u::utf8_len(static_cast<unsigned char>(text[i]));
    for (size_t k = 0; k < len; ++k) whole.al[i + k] = Range{i, i + len};
    i += len;
  }
  // 1. added tokens on the raw text; 2. normalize the rest; 3. normalized added tokens.
  std::vector<Piece> pieces, raw;
  detail::split_added(whole, m.raw_matcher, raw);
  for (auto& p : raw) {
    if (p.token >= 0) {
      pieces.push_back(std::move(p));
      continue;
    }
    if (m.normalizer) m.normalizer->apply(p);
    detail::split_added(p, m.normalized_matcher, pieces);
  }
  if (m.pre_tokenizer) m.pre_tokenizer->apply(pieces);
  Enc e;
  std::vector<Bpe::Tok> toks;
  for (const auto& p : pieces) {
    if (p.token >= 0) {
      e.ids.push_back(p.token);
      e.offsets.push_back(p.al.empty() ? Range{} : Range{p.al.front().a, p.al.back().b});
      e.special.push_back(0);
      continue;
    }
    toks.clear();
    m.model->tokenize(p.s, toks);
    for (const auto& t : toks) {
      e.ids.push_back(t.id);
      e.offsets.push_back(t.b > t.a ? Range{p.al[t.a].a, p.al[t.b - 1].b} : Range{});
      e.special.push_back(0);
    }
  }
  if (m.post_processor)
    m.post_processor->apply(
        e, add_special_tokens, [&](int64_t id) { return m.token_of(id); }, text);
  Encoding out;
  out.ids = std::move(e.ids);
  out.special_tokens_mask = std::move(e.special);
  out.offsets.reserve(e.offsets.size());
  for (const auto& r : e.offsets) out.offsets.emplace_back(r.a, r.b);
  return out;
}

std::vector<Tokenizer::Encoding> Tokenizer::encode_batch(const std::vector<std::string>& texts,
                                                         bool add_special_tokens) const {
  std::vector<Encoding> out(texts.size());
  std::vector<std::string> errors(texts.size());
  const long n = static_cast<long>(texts.size());
#pragma omp parallel for schedule(dynamic, 16)
  for (long i = 0; i < n; ++i) {
    try {
      out[static_cast<size_t>(i)] = encode(texts[static_cast<size_t>(i)], add_special_tokens);
    } catch (const std::exception& e) {
      errors[static_cast<size_t>(i)] = e.what();
    }
  }
  for (size_t i = 0; i < errors.size(); ++i)
    if (!errors[i].empty()) throw Error(errors[i], automodel::detail::str("Tokenizer::encode_batch, text ", i));
  return out;
}

std::string Tokenizer::decode(const std::vector<int64_t>& ids, bool skip_special_tokens) const {
  const Impl& m = *impl_;
  std::vector<std::string> tokens;
  tokens.reserve(ids.size());
  for (int64_t id : ids) {
    auto it = m.added_by_id.find(id);
    if (it != m.added_by_id.end()) {
      if (skip_special_tokens && m.added[it->second].special) continue;
      tokens.push_back(m.added[it->second].token);
    } else if (id >= 0 && static_cast<size_t>(id) < m.model->id_to_token.size() &&
               !m.model->id_to_token[static_cast<size_t>(id)].empty()) {
      tokens.push_back(m.model->id_to_token[static_cast<size_t>(id)]);
    }
  }
  if (!m.decoder) {
    std::string out;
    for (size_t k = 0; k < tokens.size(); ++k) out += (k ? " " : "") + tokens[k];
    return out;
  }
  m.decoder->apply(tokens);
  std::string out;
  for (auto& t : tokens) out += t;
  return out;
}

std::optional<int64_t> Tokenizer::token_to_id(const std::string& token) const {
  auto it = impl_->added_by_content.find(token);
  if (it != impl_->added_by_content.end()) return it->second;
  auto jt = impl_->model->vocab.find(token);
  if (jt != impl_->model->vocab.end()) return jt->second;
  return std::nullopt;
}

std::string Tokenizer::id_to_token(int64_t id) const { return impl_->token_of(id); }

int64_t Tokenizer::vocab_size() const {
  int64_t n = static_cast<int64_t>(impl_->model->vocab.size());
  for (const auto& a : impl_->added)
    if (!impl_->model->vocab.count(a.content)) ++n;
  return n;
}

}  // namespace automodel::tokenizer
