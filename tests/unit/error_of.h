#pragma once
// The message of the automodel::Error a call throws ("" when it throws none), for tests that
// check what an error says.
#include <string>

#include "core/error.h"

namespace automodel::testing {

template <class F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

}  // namespace automodel::testing
