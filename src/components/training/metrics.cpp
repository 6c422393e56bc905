#include "components/training/metrics.h"

#include <errno.h>
#include <string.h>

#include <cmath>
#include <ctime>
#include <filesystem>

#include "core/error.h"

namespace automodel::training {

namespace fs = std::filesystem;

std::string iso_timestamp_utc(std::chrono::system_clock::time_point t) {
  const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(t.time_since_epoch()).count();
  std::time_t seconds = std::time_t(ms / 1000);
  std::tm utc{};
  ::gmtime_r(&seconds, &utc);
  char buf[96];
  std::snprintf(buf, sizeof(buf), "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", utc.tm_year + 1900, utc.tm_mon + 1,
                utc.tm_mday, utc.tm_hour, utc.tm_min, utc.tm_sec, int(ms % 1000));
  return buf;
}

nlohmann::ordered_json metrics_record(int64_t step, int64_t epoch, const nlohmann::ordered_json& metrics,
                                      const std::string& timestamp) {
  nlohmann::ordered_json record = {{"step", step}, {"epoch", epoch}, {"timestamp", timestamp}};
  for (const auto& [key, value] : metrics.items()) record[key] = value;
  return record;
}

JsonlWriter::JsonlWriter(const std::string& path, bool append) : path_(path) {
  const fs::path parent = fs::path(path).parent_path();
  std::error_code ec;
  if (!parent.empty()) fs::create_directories(parent, ec);
  file_ = std::fopen(path.c_str(), append ? "a" : "w");
  if (!file_)
    throw Error(std::string("cannot open the metrics log: ") + ::strerror(errno), path,
                "check that the checkpoint directory is writable");
}

JsonlWriter::~JsonlWriter() {
  if (file_) std::fclose(file_);
}

void JsonlWriter::write(const nlohmann::ordered_json& record) {
  // Replace is for invalid UTF-8 in free-text fields; dump() writes NaN / inf as null.
  const std::string line = record.dump(-1, ' ', false, nlohmann::ordered_json::error_handler_t::replace) + "\n";
  if (std::fwrite(line.data(), 1, line.size(), file_) != line.size() || std::fflush(file_) != 0)
    throw Error(std::string("cannot write the metrics log: ") + ::strerror(errno), path_, "check free disk space");
}

namespace {

std::string fmt(const char* format, double v) {
  char buf[64];
  std::snprintf(buf, sizeof(buf), format, v);
  return buf;
}

double number(const nlohmann::ordered_json& v) { return v.is_number() ? v.get<double>() : std::nan(""); }

// Appends " | <label> <value>" when the record has the metric.
void part(std::string& out, const nlohmann::ordered_json& r, const char* key, const char* label, const char* format,
          const char* suffix = "") {
  if (!r.contains(key) || r[key].is_null()) return;
  out += std::string(" | ") + label + " ";
  if (std::string(format) == "%d")
    out += r[key].is_number_integer() ? std::to_string(r[key].get<int64_t>()) : fmt("%.0f", number(r[key]));
  else
    out += fmt(format, number(r[key]));
  out += suffix;
}

std::string head(const nlohmann::ordered_json& r) {
  return "step " + (r.contains("step") ? r["step"].dump() : "?") + " | epoch " +
         (r.contains("epoch") ? r["epoch"].dump() : "?");
}

}  // namespace

std::string format_train_line(const nlohmann::ordered_json& r) {
  std::string out = head(r);
  part(out, r, metric::kLoss, "loss", "%.4f");
  part(out, r, metric::kGradNorm, "grad_norm", "%.4f");
  part(out, r, metric::kLr, "lr", "%.2e");
  part(out, r, metric::kMem, "mem", "%.2f", " GiB");
  if (r.contains(metric::kTps) && r[metric::kTps].is_number()) {
    out += " | tps " + fmt("%.2f", number(r[metric::kTps]));
    if (r.contains(metric::kTpsPerGpu) && r[metric::kTpsPerGpu].is_number())
      out += "(" + fmt("%.2f", number(r[metric::kTpsPerGpu])) + "/gpu)";
  }
  part(out, r, metric::kNumLabelTokens, "num_label_tokens", "%d");
  return out;
}

std::string format_val_line(const nlohmann::ordered_json& r, const std::string& val_name) {
  std::string out = "[val] name \"" + val_name + "\" | " + head(r);
  part(out, r, metric::kValLoss, "loss", "%.4f");
  part(out, r, metric::kLr, "lr", "%.2e");
  part(out, r, metric::kNumLabelTokens, "num_label_tokens", "%d");
  return out;
}

}  // namespace automodel::training
