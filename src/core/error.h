#pragma once
// automodel::Error — the one exception type for anything a user can get wrong: it says what was
// wrong, where (file, key, tensor, op) and what to do about it.
#include <sstream>
#include <stdexcept>
#include <string>

namespace automodel {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& what, const std::string& where = "", const std::string& hint = "");
  const std::string& what_part() const { return what_; }
  const std::string& where() const { return where_; }
  const std::string& hint() const { return hint_; }

 private:
  std::string what_, where_, hint_;
};

namespace detail {
template <class... Args>
std::string str(const Args&... args) {
  std::ostringstream os;
  (os << ... << args);
  return os.str();
}
}  // namespace detail

}  // namespace automodel

// AM_CHECK(cond, message parts...): throws automodel::Error naming the enclosing function.
#define AM_CHECK(cond, ...)                                                                 \
  do {                                                                                      \
    if (!(cond)) throw ::automodel::Error(::automodel::detail::str(__VA_ARGS__), __func__); \
  } while (0)
