// The distributed: and dist_env: sections: which data-parallel strategy, over how many ranks.
#include <cmath>

#include "components/config/targets.h"
#include "components/training/nonfinite.h"
#include "recipes/build.h"
#include "recipes/recipe_sections.h"

namespace automodel::recipes {

namespace {

constexpr const char* kFsdp2 = "automodel.distributed.FSDP2Manager";
constexpr const char* kDdp = "automodel.distributed.DDPManager";

// A mesh size: an integer >= 1, or null / "none" (nullopt: as many as there are ranks).
std::optional<int64_t> mesh_size(const ConfigNode& s, const char* key) {
  const ConfigNode* n = s.find(key);
  if (n == nullptr || n->is_null() || (n->kind() == ConfigNode::Kind::String && n->as_string() == "none"))
    return std::nullopt;
  const int64_t v = n->as_int();
  if (v < 1)
    throw Error(std::string("distributed.") + key + " must be >= 1 (or none), got " + std::to_string(v), n->where(),
                "e.g. 1");
  return v;
}

DistributedStrategy strategy_of(const ConfigNode& s) {
  std::optional<DistributedStrategy> by_name, by_target;
  if (const ConfigNode* n = s.find("strategy"); n && !n->is_null()) {
    const std::string name = n->as_string();
    if (name == "fsdp2")
      by_name = DistributedStrategy::fsdp2;
    else if (name == "ddp")
      by_name = DistributedStrategy::ddp;
    else
      throw Error("distributed.strategy '" + name + "' is not available", n->where(),
                  "use fsdp2 (sharded data parallel) or ddp (replicated data parallel)");
  }
  if (const ConfigNode* n = s.find("_target_"); n && !n->is_null())
    by_target = config::resolve_target(s) == kDdp ? DistributedStrategy::ddp : DistributedStrategy::fsdp2;
  if (by_name && by_target && *by_name != *by_target)
    throw Error("distributed.strategy and distributed._target_ name different strategies", s.at("strategy").where(),
                "keep one of them");
  // NeMo Automodel's default.
  return by_name.value_or(by_target.value_or(DistributedStrategy::fsdp2));
}

}  // namespace

void register_distributed_targets() {
  config::register_target(kFsdp2, {"nemo_automodel.components.distributed.fsdp2.FSDP2Manager"});
  config::register_target(kDdp, {"nemo_automodel.components.distributed.ddp.DDPManager"});
}

const char* strategy_name(DistributedStrategy s) { return s == DistributedStrategy::ddp ? "ddp" : "fsdp2"; }

DistributedOptions build_distributed_options(const ConfigNode* section, const ConfigNode* dist_env, int world_size) {
  DistributedOptions o;
  o.dp_size = world_size;
  if (dist_env != nullptr && !dist_env->is_null()) {
    check_section_keys(*dist_env, "dist_env");
    // NeMo's backend names torch's process-group engine (nccl, gloo); on the CPU every collective runs on MPI.
    if (const ConfigNode* t = dist_env->find("timeout_minutes"); t && !t->is_null()) {
      const double minutes = t->as<double>();
      if (!(minutes > 0 && std::isfinite(minutes)))
        throw Error("dist_env.timeout_minutes must be a positive number, got " + training::number_text(minutes),
                    t->where(), "e.g. 10");
      o.timeout_minutes = minutes;
    }
  }
  if (section == nullptr || section->is_null()) return o;
  check_section_keys(*section, "distributed",
                     section->contains("_target_") ? config::resolve_target(*section) : std::string());
  o.strategy = strategy_of(*section);
  o.activation_checkpointing = section->get<bool>("activation_checkpointing", false);
  o.overlap_grad_reduce = section->get<bool>("overlap_grad_reduce", true);
  for (const char* key : {"tp_size", "cp_size", "pp_size", "ep_size"}) {
    const std::optional<int64_t> v = mesh_size(*section, key);
    if (v && *v != 1)
      throw Error(std::string("distributed.") + key + " = " + std::to_string(*v) +
                      ": only data parallelism is built (tensor, context, pipeline and expert parallelism are later "
                      "steps of issue 23's roadmap)",
                  section->at(key).where(), "set it to 1 and scale out with dp_size");
  }
  if (section->get<bool>("sequence_parallel", false))
    throw Error("distributed.sequence_parallel needs tensor parallelism, which is not built",
                section->at("sequence_parallel").where(), "set it to false");
  if (const std::optional<int64_t> dp = mesh_size(*section, "dp_size"); dp && *dp != world_size)
    throw Error(
        "distributed.dp_size = " + std::to_string(*dp) + " but the job has " + std::to_string(world_size) +
            " rank(s) (with tp, cp and pp 1, dp_size is the number of ranks)",
        section->at("dp_size").where(),
        "set dp_size: none, or start " + std::to_string(*dp) + " ranks (--nproc-per-node " + std::to_string(*dp) + ")");
  if (const std::optional<int64_t> r = mesh_size(*section, "dp_replicate_size")) {
    if (world_size % *r != 0)
      throw Error("distributed.dp_replicate_size = " + std::to_string(*r) + " does not divide the " +
                      std::to_string(world_size) + " data-parallel rank(s)",
                  section->at("dp_replicate_size").where(), "choose a divisor of dp_size (replicas x shards)");
    o.dp_replicate_size = *r;
  }
  if (const ConfigNode* b = section->find("bucket_cap_mb"); b && !b->is_null()) {
    const double mb = b->as<double>();
    if (!(mb > 0 && mb <= 1 << 20))
      throw Error("distributed.bucket_cap_mb must be a positive number of MB, got " + training::number_text(mb),
                  b->where(), "torch's default is 25");
    o.bucket_bytes = std::max<int64_t>(1, int64_t(mb * (1 << 20)));
  }
  return o;
}

}  // namespace automodel::recipes
