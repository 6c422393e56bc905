#pragma once
// Jinja2 lexer with the whitespace rules transformers configures: trim_blocks=True, lstrip_blocks=True,
// `-` / `+` modifiers on tags, comments and raw blocks.
#include <cstdint>
#include <string>
#include <vector>

namespace automodel::tokenizer::jinja {

enum class Tok { Text, VarBegin, VarEnd, BlockBegin, BlockEnd, Name, String, Int, Float, Op, Eof };

struct Token {
  Tok type;
  std::string text;  // Text/Name/String (unescaped)/Op spelling
  int line = 1;
  int64_t i = 0;
  double f = 0;
};

std::vector<Token> lex(const std::string& source);

}  // namespace automodel::tokenizer::jinja
