#pragma once
// Ops the oracle runner can execute, registered by name from the oracle/runner/ops_*.cpp files.
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "core/tensor.h"

namespace automodel::oracle {

struct OpCall {
  std::map<std::string, Tensor> inputs;  // by name as pytest sent them
  nlohmann::json params;
  const Tensor& in(const std::string& name) const;
  Tensor maybe(const std::string& name) const;  // undefined when not sent
};

using OpFn = std::function<std::vector<Tensor>(const OpCall&)>;

std::map<std::string, OpFn>& op_registry();

struct RegisterOp {
  RegisterOp(const std::string& name, OpFn fn) { op_registry()[name] = std::move(fn); }
};

}  // namespace automodel::oracle

#define ORACLE_CAT2(a, b) a##b
#define ORACLE_CAT(a, b) ORACLE_CAT2(a, b)
// ORACLE_OP("name", [](const OpCall& c) -> std::vector<Tensor> { ... });
#define ORACLE_OP(name, ...) static ::automodel::oracle::RegisterOp ORACLE_CAT(oracle_op_, __LINE__)(name, __VA_ARGS__)
