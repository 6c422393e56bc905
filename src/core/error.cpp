#include "core/error.h"

namespace automodel {

static std::string format_error(const std::string& what, const std::string& where, const std::string& hint) {
  std::string msg = what;
  if (!where.empty()) msg += "\n  where: " + where;
  if (!hint.empty()) msg += "\n  what to do: " + hint;
  return msg;
}

Error::Error(const std::string& what, const std::string& where, const std::string& hint)
    : std::runtime_error(format_error(what, where, hint)), what_(what), where_(where), hint_(hint) {}

}  // namespace automodel
