#pragma once
// Reading typed fields out of dataset records with errors that name the record and the column
// (shared by the dataset builders; not part of the public API).
#include <nlohmann/json.hpp>
#include <string>

#include "core/error.h"

namespace automodel::data::detail {

// "<path> [record <index>]", the `where` of record errors.
std::string record_where(const std::string& path, size_t index);
// record[column]; Error naming the column and the columns the record has when it is missing.
const nlohmann::ordered_json& require_field(const nlohmann::ordered_json& record, const std::string& column,
                                            const std::string& where);
// Python str() of a scalar value (string, number, bool); Error for objects, arrays and null.
std::string text_of(const nlohmann::ordered_json& value, const std::string& column, const std::string& where);
// Python str.strip().
std::string strip(const std::string& s);

// f(), with the record named in the `where` of any Error it throws.
template <class F>
auto at_record(const std::string& where, F&& f) -> decltype(f()) {
  try {
    return f();
  } catch (const Error& e) {
    throw Error(e.what_part(), e.where().empty() ? where : where + ", " + e.where(), e.hint());
  }
}

}  // namespace automodel::data::detail
