// Parquet -> JSON lines through Apache Arrow's C++ reader (the libraries the pyarrow wheel ships; Debian 12 packages
// no Arrow). Built only when CMake finds them (AUTOMODEL_HAVE_PARQUET); otherwise a Parquet file is a clear error.
#include <cmath>
#include <cstdio>
#include <nlohmann/json.hpp>

#include "components/data/file_formats.h"
#include "core/error.h"

#if AUTOMODEL_HAVE_PARQUET
#include <arrow/api.h>
#include <arrow/io/file.h>
#include <parquet/arrow/reader.h>
#include <parquet/exception.h>
#endif

namespace automodel::data {

#if AUTOMODEL_HAVE_PARQUET

namespace {

using ojson = nlohmann::ordered_json;

template <class T>
T value_or_throw(arrow::Result<T> r, const std::string& path) {
  if (!r.ok())
    throw Error("cannot read the Parquet file: " + r.status().ToString(), path, "check that it is a Parquet file");
  return std::move(r).ValueUnsafe();
}

ojson number(double v) { return std::isfinite(v) ? ojson(v) : ojson(nullptr); }

template <class ListArray>
ojson list_value(const ListArray& a, int64_t i);

// The JSON value of row i of an Arrow array: null, bool, numbers (non-finite floats as null, as JSON has no NaN),
// strings, lists, structs and maps; other types (dates, timestamps, decimals, binary) as Arrow's text for them.
ojson json_value(const arrow::Array& a, int64_t i) {
  if (a.IsNull(i)) return nullptr;
  using arrow::Type;
  switch (a.type_id()) {
    case Type::NA: return nullptr;
    case Type::BOOL: return static_cast<const arrow::BooleanArray&>(a).Value(i);
    case Type::INT8: return static_cast<const arrow::Int8Array&>(a).Value(i);
    case Type::INT16: return static_cast<const arrow::Int16Array&>(a).Value(i);
    case Type::INT32: return static_cast<const arrow::Int32Array&>(a).Value(i);
    case Type::INT64: return static_cast<const arrow::Int64Array&>(a).Value(i);
    case Type::UINT8: return static_cast<const arrow::UInt8Array&>(a).Value(i);
    case Type::UINT16: return static_cast<const arrow::UInt16Array&>(a).Value(i);
    case Type::UINT32: return static_cast<const arrow::UInt32Array&>(a).Value(i);
    case Type::UINT64: return static_cast<const arrow::UInt64Array&>(a).Value(i);
    case Type::FLOAT: return number(static_cast<const arrow::FloatArray&>(a).Value(i));
    case Type::DOUBLE: return number(static_cast<const arrow::DoubleArray&>(a).Value(i));
    case Type::STRING: return std::string(static_cast<const arrow::StringArray&>(a).GetView(i));
    case Type::LARGE_STRING: return std::string(static_cast<const arrow::LargeStringArray&>(a).GetView(i));
    case Type::STRING_VIEW: return std::string(static_cast<const arrow::StringViewArray&>(a).GetView(i));
    case Type::LIST: return list_value(static_cast<const arrow::ListArray&>(a), i);
    case Type::LARGE_LIST: return list_value(static_cast<const arrow::LargeListArray&>(a), i);
    case Type::FIXED_SIZE_LIST: return list_value(static_cast<const arrow::FixedSizeListArray&>(a), i);
    case Type::STRUCT: {
      const auto& s = static_cast<const arrow::StructArray&>(a);
      ojson out = ojson::object();
      for (int f = 0; f < s.num_fields(); ++f) out[s.type()->field(f)->name()] = json_value(*s.field(f), i);
      return out;
    }
    case Type::MAP: {
      const auto& m = static_cast<const arrow::MapArray&>(a);
      const bool string_keys = m.keys()->type_id() == Type::STRING || m.keys()->type_id() == Type::LARGE_STRING;
      ojson out = string_keys ? ojson::object() : ojson::array();
      for (int64_t j = m.value_offset(i); j < m.value_offset(i) + m.value_length(i); ++j) {
        ojson key = json_value(*m.keys(), j), value = json_value(*m.items(), j);
        if (string_keys)
          out[key.get<std::string>()] = std::move(value);
        else
          out.push_back(ojson::array({std::move(key), std::move(value)}));
      }
      return out;
    }
    case Type::DICTIONARY: {
      const auto& d = static_cast<const arrow::DictionaryArray&>(a);
      return json_value(*d.dictionary(), d.GetValueIndex(i));
    }
    default: {
      auto scalar = a.GetScalar(i);
      return scalar.ok() ? ojson((*scalar)->ToString()) : ojson(nullptr);
    }
  }
}

template <class ListArray>
ojson list_value(const ListArray& a, int64_t i) {
  ojson out = ojson::array();
  const auto begin = a.value_offset(i), end = begin + a.value_length(i);
  for (auto j = begin; j < end; ++j) out.push_back(json_value(*a.values(), j));
  return out;
}

}  // namespace

void parquet_to_json_lines(const std::string& parquet_path, const std::string& out_path) {
  try {
    auto file = value_or_throw(arrow::io::ReadableFile::Open(parquet_path), parquet_path);
    auto reader = value_or_throw(parquet::arrow::OpenFile(file, arrow::default_memory_pool()), parquet_path);
    auto batches = value_or_throw(reader->GetRecordBatchReader(), parquet_path);
    std::unique_ptr<std::FILE, int (*)(std::FILE*)> out(std::fopen(out_path.c_str(), "wb"), std::fclose);
    if (!out)
      throw Error("cannot write the dataset cache", out_path, "set AUTOMODEL_CACHE_DIR to a writable directory");
    std::string line;
    while (true) {
      std::shared_ptr<arrow::RecordBatch> batch = value_or_throw(batches->Next(), parquet_path);
      if (!batch) break;
      const auto& schema = *batch->schema();
      for (int64_t r = 0; r < batch->num_rows(); ++r) {
        ojson row = ojson::object();
        for (int c = 0; c < batch->num_columns(); ++c) row[schema.field(c)->name()] = json_value(*batch->column(c), r);
        line = row.dump(-1, ' ', false, ojson::error_handler_t::replace);
        line += '\n';
        if (std::fwrite(line.data(), 1, line.size(), out.get()) != line.size())
          throw Error("cannot write the dataset cache", out_path, "free disk space or set AUTOMODEL_CACHE_DIR");
      }
    }
    if (std::fflush(out.get()) != 0)
      throw Error("cannot write the dataset cache", out_path, "free disk space or set AUTOMODEL_CACHE_DIR");
  } catch (const parquet::ParquetException& e) {
    throw Error(std::string("cannot read the Parquet file: ") + e.what(), parquet_path,
                "check that it is a complete Parquet file");
  }
}

#else

void parquet_to_json_lines(const std::string& parquet_path, const std::string&) {
  throw Error("this automodel build reads no Parquet files", parquet_path,
              "convert the file to JSON lines, or rebuild with Apache Arrow: `.venv/bin/pip install pyarrow` "
              "(scripts/setup.sh --oracle does) and re-run CMake, which finds Arrow inside the pyarrow wheel");
}

#endif

}  // namespace automodel::data
