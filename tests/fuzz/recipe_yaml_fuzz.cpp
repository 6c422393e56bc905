// components/config: the bytes as a recipe YAML (config::parse_yaml: yaml-cpp, scalar typing, ${ENV}, anchors and
// merges, duplicate keys, the expansion bounds), its block YAML written and read back (which must give the same
// text), an override applied, and the recipe builders that need no model: dataloader, peft and loss_fn sections and
// the _target_ of every top-level section; and the early check of a whole recipe (recipes::validate_recipe).
#include <cstdio>
#include <cstdlib>

#include "components/config/config.h"
#include "components/config/targets.h"
#include "fuzz_util.h"
#include "recipes/build.h"
#include "recipes/recipe_sections.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace automodel;
  static const bool registered = [] {
    recipes::register_recipe_targets();
    return true;
  }();
  (void)registered;
  fuzz::accept_errors([&] {
    config::ConfigNode cfg = config::parse_yaml(std::string(fuzz::as_text(data, size)), "fuzz.yaml");
    const std::string text = cfg.to_yaml();
    const std::string again = config::parse_yaml(text, "written.yaml").to_yaml();
    if (again != text) {
      std::fprintf(stderr, "to_yaml does not read back the same:\n--- written\n%s\n--- read back\n%s\n", text.c_str(),
                   again.c_str());
      std::abort();
    }
    fuzz::accept_errors([&] { config::apply_overrides(cfg, config::parse_overrides({"--optimizer.lr", "1e-4"})); });
    fuzz::accept_errors([&] { (void)recipes::build_loader_options(cfg.find("dataloader"), true); });
    fuzz::accept_errors([&] { (void)recipes::build_peft_config(cfg.find("peft")); });
    fuzz::accept_errors([&] { (void)recipes::build_loss(cfg.find("loss_fn")); });
    fuzz::accept_errors([&] { recipes::validate_recipe(cfg); });
    if (cfg.is_map())
      for (size_t i = 0; i < cfg.size(); ++i)
        if (cfg[i].is_map() && cfg[i].contains("_target_"))
          fuzz::accept_errors([&] { (void)config::resolve_target(cfg[i]); });
  });
  return 0;
}
