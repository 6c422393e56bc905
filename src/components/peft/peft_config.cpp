#include "components/peft/peft_config.h"

#include <algorithm>
#include <cmath>
#include <regex>

#include "core/error.h"

namespace automodel::peft {

double PeftConfig::scale() const { return use_rslora ? alpha / std::sqrt(double(dim)) : alpha / double(dim); }

void validate(const PeftConfig& c) {
  const std::string where = "peft config";
  if (c.dim <= 0)
    throw Error("peft.dim (the LoRA rank) must be >= 1, got " + std::to_string(c.dim), where,
                "set peft.dim to a positive rank, e.g. 8");
  if (!(c.alpha >= 0))
    throw Error("peft.alpha must be >= 0, got " + std::to_string(c.alpha), where,
                "the adapter's scale is alpha / dim; e.g. alpha: 32");
  if (!(c.dropout >= 0 && c.dropout < 1))
    throw Error("peft.dropout must be in [0, 1), got " + std::to_string(c.dropout), where, "e.g. dropout: 0.05");
  if (c.dropout_position != "pre" && c.dropout_position != "post")
    throw Error("peft.dropout_position must be 'pre' or 'post', got '" + c.dropout_position + "'", where);
  if (c.lora_A_init != "xavier" && c.lora_A_init != "kaiming" && c.lora_A_init != "uniform")
    throw Error("peft.lora_A_init must be xavier, kaiming or uniform, got '" + c.lora_A_init + "'", where);
  if (!c.target_modules.empty() && !c.exclude_modules.empty())
    throw Error("peft.target_modules and peft.exclude_modules are mutually exclusive", where,
                "give only one of them: targets select layers, excludes select every linear layer but those");
  if (c.match_all_linear && (!c.target_modules.empty() || !c.exclude_modules.empty()))
    throw Error("peft.match_all_linear cannot be combined with target_modules or exclude_modules", where,
                "drop match_all_linear, or the module lists");
  for (const std::string& t : c.target_parameters)
    if (t != "gate_up_proj" && t != "down_proj")
      throw Error("peft.target_parameters: '" + t + "' is not a grouped expert tensor", where,
                  "name gate_up_proj and / or down_proj (the MoE experts' tensors)");
  if (!c.target_parameters.empty() && c.dropout != 0)
    throw Error("peft.dropout must be 0 with target_parameters (got " + std::to_string(c.dropout) + ")", where,
                "peft has no dropout on the experts' grouped tensors either; set dropout: 0.0");
  if (c.lora_dtype && !is_floating(*c.lora_dtype))
    throw Error("peft.lora_dtype must be a floating dtype, got " + std::string(dtype_name(*c.lora_dtype)), where);
}

std::vector<std::string> effective_target_modules(const PeftConfig& c) {
  if (!c.match_all_linear && c.target_modules.empty() && c.exclude_modules.empty() && c.target_parameters.empty())
    return {"*_proj"};
  return c.target_modules;
}

bool wildcard_match(const std::string& pattern, const std::string& name) {
  // As NeMo: a `*` not already preceded by `.` becomes `.*`; the rest is a regular expression.
  std::string re;
  for (size_t i = 0; i < pattern.size(); ++i) {
    if (pattern[i] == '*' && (i == 0 || pattern[i - 1] != '.'))
      re += ".*";
    else
      re += pattern[i];
  }
  try {
    return std::regex_match(name, std::regex(re));
  } catch (const std::regex_error& e) {
    throw Error("peft: module pattern '" + pattern + "' is not a valid pattern (" + e.what() + ")", "peft config",
                "use `*` for any run of characters, e.g. '*.self_attn.*_proj'");
  }
}

bool selects(const PeftConfig& c, const std::string& name, const std::string& module_path) {
  if (c.match_all_linear) return true;
  auto matches = [&](const std::string& p) {
    return name == p || wildcard_match(p, name) ||
           (module_path != name && (module_path == p || wildcard_match(p, module_path)));
  };
  const std::vector<std::string> targets = effective_target_modules(c);
  if (!targets.empty()) return std::any_of(targets.begin(), targets.end(), matches);
  if (c.exclude_modules.empty()) return false;  // target_parameters alone
  return std::none_of(c.exclude_modules.begin(), c.exclude_modules.end(), matches);
}

bool selects_parameter(const PeftConfig& c, const std::string& parameter) {
  return std::find(c.target_parameters.begin(), c.target_parameters.end(), parameter) != c.target_parameters.end();
}

DType parse_lora_dtype(const std::string& s0) {
  std::string s = s0.rfind("torch.", 0) == 0 ? s0.substr(6) : s0;
  if (s == "float32" || s == "fp32" || s == "f32" || s == "float") return DType::f32;
  if (s == "bfloat16" || s == "bf16") return DType::bf16;
  if (s == "float64" || s == "fp64" || s == "f64" || s == "double") return DType::f64;
  throw Error("peft.lora_dtype: unknown dtype '" + s0 + "'", "peft config", "use float32 or bfloat16");
}

}  // namespace automodel::peft
