// automodel: the one entry point. Subcommands are added here as the layers below grow.
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "cli/args.h"
#include "cli/commands.h"
#include "components/distributed/communicator.h"
#include "core/error.h"

namespace {

constexpr const char* kUsage =
    "usage: automodel <command> [options]\n"
    "\n"
    "commands:\n"
    "  finetune  fine-tune a Hugging Face model from a NeMo Automodel-style recipe YAML\n"
    "            finetune llm -c recipe.yaml [--threads N] [--section.key value ...]\n"
    "            finetune vlm -c recipe.yaml: an image-text model (NeMoAutoModelForImageTextToText)\n"
    "            (or: automodel recipe.yaml [...], the recipe named by its recipe: key)\n"
    "            --nproc-per-node N: N data-parallel ranks on this machine (mpirun); --threads is per rank\n"
    "            (default: the cores shared among the ranks); mpirun -np N / srun --mpi=pmix work the same\n"
    "\n"
    "  dataset   the samples a recipe trains on, one JSON line each (input_ids, labels; --text decodes them;\n"
    "            an image-text recipe's conversations collated: also token_type_ids and pixel_values_shape)\n"
    "            dataset -c recipe.yaml [--validation] [--limit N] [--text] [--section.key value ...]\n"
    "\n"
    "  merge-lora  merge a LoRA adapter (peft format) into its base model (causal LM or image-text): a plain\n"
    "              Hugging Face directory with the base's tokenizer and processor files\n"
    "              --base DIR --adapter DIR --out DIR [--dtype f32|bf16]\n"
    "\n"
    "  inspect   describe a Hugging Face model directory (architecture, parameters, dtype, layers)\n"
    "            DIR | --model DIR  [--json] [--dtype f32|bf16]\n"
    "\n"
    "  generate  continue a prompt: --prompt TEXT prints text (the model's tokenizer.json),\n"
    "            --prompt-ids 1,2,3 prints the new token ids as a JSON array\n"
    "            --model DIR (--prompt TEXT | --prompt-ids IDS) [--max-new-tokens N=32] [--dtype f32|bf16]\n"
    "            [--threads N]; greedy unless one of [--temperature T] [--top-k K] [--top-p P]; [--seed S=0]\n"
    "            image-text models: --model DIR --messages CHAT.json (image parts name files) [--max-new-tokens N]\n"
    "            prints {\"ids\", \"text\"}\n"
    "\n"
    "  logprobs  log p(token[i+1] | tokens[..i]) of a sequence under the model, as JSON\n"
    "            --model DIR --prompt-ids 1,2,3,... [--dtype f32|bf16] [--threads N]\n"
    "            image-text models: --model DIR --messages CHAT.json, the conversation as the processor tokenizes it\n"
    "\n"
    "  tokenize       text to token ids (JSON array) with a tokenizer.json\n"
    "                 --tokenizer DIR (--text T | --file F) [--no-special]\n"
    "\n"
    "  chat-template  render a conversation with the tokenizer's chat template\n"
    "                 --tokenizer DIR --messages FILE.json [--add-generation-prompt]\n"
    "\n"
    "  preprocess     a vision-language model's inputs as its processor makes them, as JSON (input_ids,\n"
    "                 token_type_ids, pixel_values shape and crops); --out writes pixel_values as .npy\n"
    "                 [IMAGE...] --model DIR (--messages FILE.json [--add-generation-prompt] | [--text T])\n"
    "                 [--do-pan-and-scan] [--pan-and-scan-min-crop-size N=256] [--pan-and-scan-max-num-crops N=4]\n"
    "                 [--pan-and-scan-min-ratio-to-activate R=1.2] [--no-special] [--out PIXELS.npy]\n"
    "\n"
    "  DIR may also be a hub id (org/name) found in the local Hugging Face cache.\n"
    "\n"
    "  --help    this text;  --version  the version\n";

// Prints the error; in a job of several ranks names the rank and ends every rank (the others would otherwise wait
// in their next collective until the timeout).
int fail(const char* kind, const char* what, int exit_code) {
  using namespace automodel;
  if (!distributed::launched_by_mpi() || distributed::world().size() == 1) {
    std::fprintf(stderr, "%s: %s\n", kind, what);
    return exit_code;
  }
  distributed::Communicator& world = distributed::world();
  std::fprintf(stderr, "%s (%s): %s\n", kind, world.describe().c_str(), what);
  std::fflush(stderr);
  world.abort(exit_code);
}

}  // namespace

int main(int argc, char** argv) {
  using namespace automodel;
  std::vector<std::string> args(argv + 1, argv + argc);
  if (args.empty() || args[0] == "--help" || args[0] == "-h" || args[0] == "help") {
    std::fputs(kUsage, args.empty() ? stderr : stdout);
    return args.empty() ? 2 : 0;
  }
  if (args[0] == "--version") {
    std::puts("automodel 0.1.0");
    return 0;
  }
  try {
    // Recipe commands take NeMo Automodel's `--a.b.c value` overrides, not subcommand options.
    if (args[0] == "finetune") return cli::run_finetune(std::vector<std::string>(args.begin() + 1, args.end()));
    if (args[0] == "dataset") return cli::run_dataset(std::vector<std::string>(args.begin() + 1, args.end()));
    if (args[0].ends_with(".yaml") || args[0].ends_with(".yml"))
      return cli::run_recipe_file(args[0], std::vector<std::string>(args.begin() + 1, args.end()));
    cli::Args parsed = cli::parse_args(std::vector<std::string>(args.begin() + 1, args.end()));
    if (args[0] == "inspect") return cli::run_inspect(parsed);
    if (args[0] == "generate") return cli::run_generate(parsed);
    if (args[0] == "logprobs") return cli::run_logprobs(parsed);
    if (args[0] == "tokenize") return cli::run_tokenize(parsed);
    if (args[0] == "merge-lora") return cli::run_merge_lora(parsed);
    if (args[0] == "chat-template") return cli::run_chat_template(parsed);
    if (args[0] == "preprocess") return cli::run_preprocess(parsed);
    throw Error("unknown command '" + args[0] + "'", "automodel", "run `automodel --help` for the commands");
  } catch (const Error& e) {
    return fail("error", e.what(), 1);
  } catch (const std::exception& e) {
    return fail("internal error", e.what(), 70);
  }
}
