// automodel_oracle CASE_DIR...: for each case directory written by tests/oracle/conftest.py,
// runs the op named in case.json on the .npy inputs, backpropagates the given output gradients,
// and writes out_<i>.npy, grad_<input>.npy and result.json (with the error text on failure).
#include <fstream>
#include <iostream>

#include "autograd/engine.h"
#include "core/threads.h"
#include "npy.h"
#include "registry.h"

using namespace automodel;
using nlohmann::json;

namespace automodel::oracle {

std::map<std::string, OpFn>& op_registry() {
  static std::map<std::string, OpFn> registry;
  return registry;
}

const Tensor& OpCall::in(const std::string& name) const {
  auto it = inputs.find(name);
  AM_CHECK(it != inputs.end(), "oracle case has no input '", name, "'");
  return it->second;
}

Tensor OpCall::maybe(const std::string& name) const {
  auto it = inputs.find(name);
  return it == inputs.end() ? Tensor() : it->second;
}

}  // namespace automodel::oracle

static void run_case(const std::string& dir) {
  std::ifstream f(dir + "/case.json");
  AM_CHECK(f, "no case.json in ", dir);
  json spec = json::parse(f);
  oracle::OpCall call;
  call.params = spec.value("params", json::object());
  for (auto& [name, info] : spec["inputs"].items()) {
    Tensor t = oracle::read_npy(dir + "/" + name + ".npy", info.value("dtype", ""));
    if (info.value("requires_grad", false)) t.set_requires_grad(true);
    call.inputs[name] = t;
  }
  std::string op = spec["op"];
  auto it = oracle::op_registry().find(op);
  AM_CHECK(it != oracle::op_registry().end(), "oracle runner has no op '", op, "'");
  std::vector<Tensor> outputs = it->second(call);
  for (size_t i = 0; i < outputs.size(); ++i) oracle::write_npy(dir + "/out_" + std::to_string(i) + ".npy", outputs[i]);
  if (spec.contains("grad_outputs")) {
    std::vector<Tensor> outs, grads;
    for (size_t i = 0; i < spec["grad_outputs"].size(); ++i) {
      if (spec["grad_outputs"][i].is_null()) continue;
      std::string dtype = spec.value("grad_dtype", std::string());
      outs.push_back(outputs[i]);
      grads.push_back(oracle::read_npy(dir + "/" + spec["grad_outputs"][i].get<std::string>(), dtype));
    }
    autograd::backward(outs, grads);
    for (auto& [name, t] : call.inputs)
      if (t.requires_grad() && t.grad().defined()) oracle::write_npy(dir + "/grad_" + name + ".npy", t.grad());
  }
  std::ofstream(dir + "/result.json") << json{{"ok", true}, {"num_outputs", outputs.size()}}.dump();
}

int main(int argc, char** argv) {
  set_num_threads(0);
  int failures = 0;
  for (int i = 1; i < argc; ++i) {
    try {
      run_case(argv[i]);
    } catch (const std::exception& e) {
      std::ofstream(std::string(argv[i]) + "/result.json") << json{{"ok", false}, {"error", e.what()}}.dump();
      ++failures;
    }
  }
  return failures ? 3 : 0;
}
