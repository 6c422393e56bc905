#pragma once
// Reading typed fields out of dataset records with errors that name the record and the column
// (shared by the dataset builders; not part of the public API).
#include <memory>
#include <nlohmann/json.hpp>
#include <string>

#include "components/data/formatting.h"
#include "components/data/records.h"
#include "components/data/sample.h"
#include "core/error.h"

namespace automodel::data::detail {

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
    if (e.where().rfind(where, 0) == 0) throw;  // already names the record
    throw Error(e.what_part(), e.where().empty() ? where : where + ", " + e.where(), e.hint());
  }
}

// A dataset whose samples are format(record, where) of the records of `source`, each read when its sample is asked
// for; errors name the record.
template <class Format>
Dataset lazy_dataset(std::shared_ptr<const RecordSource> source, Format format) {
  const size_t n = source->size();
  return {n, [source = std::move(source), format = std::move(format)](size_t i) {
            const std::string where = source->where(i);
            return at_record(where, [&] { return format(source->at(i), where); });
          }};
}

// data, warning once about samples longer than fmt.seq_length when truncation is off (NeMo keeps them whole, and
// HF tokenizers only warn).
Dataset warn_beyond_seq_length(Dataset data, const FormatOptions& fmt, const std::string& path);

}  // namespace automodel::data::detail
