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

std::optional<std::string> token_field(const json& cfg, const char* key, const std::string& where) {
  if (!cfg.is_object() || !cfg.contains(key) || cfg[key].is_null()) return std::nullopt;
  const json& v = cfg[key];
  if (v.is_string()) return v.get<std::string>();
  if (v.is_object() && v.contains("content") && v["content"].is_string()) return v["content"].get<std::string>();
  throw Error(
      std::string("field '") + key + "' must be a string or an AddedToken object {\"content\": ...}, got " + v.dump(),
      where, "fix the field, or remove it");
}

std::optional<bool> bool_field(const json& cfg, const char* key, const std::string& where) {
  if (!cfg.contains(key) || cfg[key].is_null()) return std::nullopt;
  if (!cfg[key].is_boolean())
    throw Error(std::string("field '") + key + "' must be true or false, got " + cfg[key].dump(), where);
  return cfg[key].get<bool>();
}

// tokenizer_config.json's fields that we read or that transformers' tokenizer loading needs typed.
void check_tokenizer_config(const json& c, const std::string& where) {
  if (!c.is_object()) throw Error("tokenizer_config.json must be a JSON object", where);
  if (c.contains("chat_template") && !c["chat_template"].is_null() && !c["chat_template"].is_string()) {
    const json& ct = c["chat_template"];
    bool ok = ct.is_array();
    for (const auto& item : ct.is_array() ? ct : json::array())
      ok = ok && item.is_object() && item.contains("name") && item["name"].is_string() && item.contains("template") &&
           item["template"].is_string();
    if (!ok)
      throw Error("field 'chat_template' must be a string or a list of {\"name\": string, \"template\": string}",
                  where);
  }
  if (c.contains("added_tokens_decoder") && !c["added_tokens_decoder"].is_null()) {
    const json& d = c["added_tokens_decoder"];
    if (!d.is_object())
      throw Error("field 'added_tokens_decoder' must be an object {\"id\": {\"content\": ...}}", where);
    for (auto it = d.begin(); it != d.end(); ++it) {
      const std::string& key = it.key();
      bool numeric = !key.empty() && key.size() <= 10 && key.find_first_not_of("0123456789") == std::string::npos &&
                     std::stoull(key) <= UINT32_MAX;
      if (!numeric) throw Error("added_tokens_decoder key '" + key + "' is not a token id (0 to 4294967295)", where);
      if (!it.value().is_object() || !it.value().contains("content") || !it.value()["content"].is_string())
        throw Error("added_tokens_decoder['" + key + "'] must be an object with a string \"content\"", where);
    }
  }
  if (c.contains("model_max_length") && !c["model_max_length"].is_null() && !c["model_max_length"].is_number())
    throw Error("field 'model_max_length' must be a number, got " + c["model_max_length"].dump(), where);
}

}  // namespace

namespace {

// tokenizer.json's added_tokens as the tokenizers package loads them (AddedVocabulary::add_tokens): entries with
// empty or repeated content are skipped, and the ids in the file are checked but not used: a token in the model's
// vocabulary keeps its id there, the others are numbered on from the vocabulary size in file order.
std::vector<AddedToken> read_added_tokens(const json& list, const Bpe& model) {
  if (list.is_null()) return {};
  if (!list.is_array())
    throw Error("'added_tokens' must be a list, got " + std::string(list.type_name()), "added_tokens");
  std::vector<AddedToken> out;
  Vocab by_content;
  int64_t model_size = static_cast<int64_t>(model.vocab.size()), max_id = -1;
  for (size_t k = 0; k < list.size(); ++k) {
    const json& t = list[k];
    std::string at = "added_tokens[" + std::to_string(k) + "]";
    if (!t.is_object()) throw Error("an added token must be an object, got " + t.dump(), at);
    for (const char* key : {"id", "content", "single_word", "lstrip", "rstrip", "normalized", "special"})
      if (!t.contains(key))
        throw Error(std::string("added token has no '") + key + "' (the tokenizers package requires it)", at);
    AddedToken a;
    if (!t["content"].is_string()) throw Error("field 'content' must be a string, got " + t["content"].dump(), at);
    a.content = t["content"].get<std::string>();
    detail::json_token_id(t["id"], "added token '" + a.content + "'", at);
    a.single_word = detail::json_bool(t, "single_word", false, at);
    a.lstrip = detail::json_bool(t, "lstrip", false, at);
    a.rstrip = detail::json_bool(t, "rstrip", false, at);
    a.normalized = detail::json_bool(t, "normalized", false, at);
    a.special = detail::json_bool(t, "special", false, at);
    if (a.content.empty() || by_content.count(a.content)) continue;
    if (auto it = model.vocab.find(a.content); it != model.vocab.end())
      a.id = it->second;
    else
      a.id = max_id < 0 ? model_size : (max_id >= model_size || model_size == 0 ? max_id + 1 : model_size);
    max_id = std::max(max_id, a.id);
    by_content.emplace(a.content, a.id);
    out.push_back(std::move(a));
  }
  return out;
}

}  // namespace

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
    impl->added = read_added_tokens(j.value("added_tokens", json()), *impl->model);
  } catch (const json::exception& e) {
    throw Error(std::string("malformed tokenizer.json: ") + e.what(), where);
  } catch (const Error& e) {
    if (e.where() == where) throw;
    throw Error(
        e.what_part(), where + ": " + e.where(),
        e.hint().empty() ? "fix the file (the tokenizers package rejects it too, or we do not support it)" : e.hint());
  }
  for (size_t k = 0; k < impl->added.size(); ++k) {
    impl->added_by_id[impl->added[k].id] = k;
    impl->added_by_content[impl->added[k].content] = impl->added[k].id;
  }
  bool newline_in_added = false;
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
    for (const std::string* s : {&a.content, &a.token}) {
      newline_in_added = newline_in_added || s->find('\n') != std::string::npos;
      if (!s->empty()) impl->added_token_starts_with[static_cast<unsigned char>((*s)[0])] = true;
    }
  }
  // Where a cut is safe for each stage is argued at the stages' cuts_after_newline / keeps_newline_cut; an added token
  // holding a '\n' could match across the cut.
  impl->newline_cut = !newline_in_added && impl->pre_tokenizer && impl->pre_tokenizer->cuts_after_newline() &&
                      (!impl->normalizer || impl->normalizer->keeps_newline_cut());
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
    const std::string where = cj.string();
    check_tokenizer_config(c, where);
    t.bos_token_ = token_field(c, "bos_token", where);
    t.eos_token_ = token_field(c, "eos_token", where);
    t.pad_token_ = token_field(c, "pad_token", where);
    t.unk_token_ = token_field(c, "unk_token", where);
    t.add_bos_token_ = bool_field(c, "add_bos_token", where);
    t.add_eos_token_ = bool_field(c, "add_eos_token", where);
    if (c.contains("model_max_length") && c["model_max_length"].is_number()) {
      double v = c["model_max_length"].get<double>();
      t.model_max_length_ = v >= 9.2e18 ? INT64_MAX : static_cast<int64_t>(v);
    }
  }
  return t;
}

Tokenizer::Encoding Tokenizer::encode(std::string_view text, bool add_special_tokens) const {
  const Impl& m = *impl_;
  if (size_t bad = u::invalid_utf8_at(text); bad != std::string_view::npos)
    throw Error("text is not valid UTF-8 (at byte " + std::to_string(bad) + ")", "Tokenizer::encode",
                "convert the text to UTF-8");
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
  detail::split_added(std::move(whole), m.raw_matcher, raw);
  for (auto& p : raw) {
    if (p.token >= 0) {
      pieces.push_back(std::move(p));
      continue;
    }
    if (m.normalizer) m.normalizer->apply(p);
    detail::split_added(std::move(p), m.normalized_matcher, pieces);
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
    } else if (const std::string* t = m.model->token(id)) {
      tokens.push_back(*t);
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
