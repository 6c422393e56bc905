// Tokenizer::encode_stream: a long text encoded chunk by chunk with bounded memory and the ids of encoding it whole.
//
// A chunk ends right after a '\n' that has a printable ASCII character on each side ("x\ny", x and y in 0x21..0x7E)
// and where no added token starts at y. Such a cut leaves every stage's output unchanged:
// - added tokens: none contains a '\n' (else the tokenizer never cuts), so no match crosses the cut, none starts at
//   y, and lstrip / rstrip / single_word look at the '\n' or at y, which are on the same side of the cut as before;
// - the normalizer keeps the cut (Normalizer::keeps_newline_cut: per-character mappings and Unicode normalization,
//   where ASCII starts a segment);
// - the first pre-tokenizer ends a piece after the '\n' and splits the two sides apart as together
//   (PreTokenizer::cuts_after_newline, proven per regex in pre_tokenizers.cpp); the later ones and the BPE model
//   work piece by piece;
// - the post-processor only adds ids before and after (PostProcessor::ids_around), written once around all chunks.
// Any other pipeline is encoded whole, as is a text without such a place.
#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstring>

#include "components/tokenizer/tokenizer_pipeline.h"
#include "core/error.h"

namespace automodel::tokenizer {

namespace {

constexpr size_t kChunkBytes = size_t{256} << 10;  // encode about this much text at a time
constexpr size_t kReadBytes = size_t{64} << 10;

bool printable_ascii(unsigned char c) { return c > 0x20 && c < 0x7F; }

// The last safe cut k (text[k - 1] == '\n', text[k] present) with k >= lowest, or 0 if there is none.
size_t last_cut(const std::string& text, size_t lowest, const Tokenizer::Impl& m) {
  size_t lo = std::max<size_t>(lowest, 2);
  size_t end = text.size() - 1;  // newlines at [lo - 1, end), so that y = text[k] exists
  while (text.size() > 2 && end > lo - 1) {
    const void* nl = memrchr(text.data() + lo - 1, '\n', end - (lo - 1));
    if (!nl) return 0;
    size_t k = static_cast<size_t>(static_cast<const char*>(nl) - text.data()) + 1;
    auto x = static_cast<unsigned char>(text[k - 2]), y = static_cast<unsigned char>(text[k]);
    if (printable_ascii(x) && printable_ascii(y) && !m.added_token_starts_with[y] &&
        !m.added_token_starts_with[static_cast<unsigned char>(std::tolower(y))])
      return k;
    end = k - 1;
  }
  return 0;
}

}  // namespace

bool Tokenizer::streams_in_chunks() const { return impl_->newline_cut; }

void Tokenizer::encode_stream(std::istream& in, bool add_special_tokens,
                              const std::function<void(const std::vector<int64_t>&)>& sink,
                              const std::string& where) const {
  const Impl& m = *impl_;
  std::vector<int64_t> before, after;
  bool chunked =
      m.newline_cut && (!m.post_processor || m.post_processor->ids_around(add_special_tokens, before, after));
  std::string text;
  size_t text_offset = 0;  // of text[0] in the input
  auto encode_part = [&](std::string_view part) {
    if (size_t bad = unicode::invalid_utf8_at(part); bad != std::string_view::npos)
      throw Error("the text is not valid UTF-8 (at byte " + std::to_string(text_offset + bad) + ")", where,
                  "convert it to UTF-8");
    sink(encode(part, chunked ? false : add_special_tokens).ids);
  };
  if (chunked && !before.empty()) sink(before);
  size_t scanned = 0;  // no cut k < scanned (a text without any grows, and is encoded whole in the end)
  while (in) {
    size_t old = text.size();
    text.resize(old + kReadBytes);
    in.read(text.data() + old, static_cast<std::streamsize>(kReadBytes));
    text.resize(old + static_cast<size_t>(in.gcount()));
    if (in.bad()) throw Error(std::string("cannot read: ") + std::strerror(errno), where);
    if (!chunked || text.size() < kChunkBytes) continue;
    size_t k = last_cut(text, scanned, m);
    if (k == 0) {
      scanned = text.size();
      continue;
    }
    encode_part(std::string_view(text).substr(0, k));
    text.erase(0, k);
    text_offset += k;
    scanned = text.size();
  }
  if (!chunked || !text.empty()) encode_part(text);
  if (chunked && !after.empty()) sink(after);
}

}  // namespace automodel::tokenizer
