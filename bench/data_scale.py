"""Time to the first training step and peak RSS against dataset size: generated SQuAD records (the embedded
default's generator, scripts/make_default_assets.py) of 10k / 100k / 1M records, a one-step run of the default
recipe on each. With --baseline, an older automodel binary runs the same command beside it (alternating).

  .venv/bin/python bench/data_scale.py [--records 10000,100000,1000000] [--baseline OLD/automodel]
"""
import argparse
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
RECIPE = ROOT / "examples" / "llm_finetune" / "tiny_llama_squad.yaml"


GENERATE = """
import json, random, sys
sys.path.insert(0, sys.argv[3])
from make_default_assets import record
rng = random.Random(int(sys.argv[2]))
with open(sys.argv[1], "w") as f:
    for i in range(int(sys.argv[2])):
        f.write(json.dumps(record(rng, i)) + "\\n")
"""


def make_data(path, n):
    # In a child process: the generator imports torch, and a parent holding torch's memory would count in the
    # children's peak RSS (a forked child's high-water mark survives its exec).
    if not path.exists():
        tmp = path.with_suffix(".tmp")
        subprocess.run([sys.executable, "-c", GENERATE, str(tmp), str(n), str(ROOT / "scripts")], check=True,
                       stderr=subprocess.DEVNULL)
        tmp.rename(path)


def one_step(binary, data, threads):
    """(seconds, peak RSS in MB) of a one-step fine-tune on `data`: setup (reading and tokenizing what the
    dataset needs before step 1), the step, and exit."""
    with tempfile.TemporaryDirectory() as ck:
        args = [str(binary), "finetune", "llm", "-c", str(RECIPE), "--threads", str(threads),
                "--dataset.dataset_name", str(data), "--step_scheduler.max_steps", "1",
                "--lr_scheduler.lr_warmup_steps", "0", "--checkpoint.enabled", "false",
                "--checkpoint.checkpoint_dir", ck]
        start = time.perf_counter()
        proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=ROOT)
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - start
        err = proc.stderr.read().decode()
        if os.waitstatus_to_exitcode(status) != 0:
            raise SystemExit(f"{binary} failed on {data}:\n{err}")
        return seconds, usage.ru_maxrss / 1024.0


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--records", default="10000,100000,1000000")
    ap.add_argument("--binary", default=str(ROOT / "build" / "automodel"))
    ap.add_argument("--baseline", help="another automodel binary to run beside it")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--data-dir", default=str(ROOT / "out" / "data_scale"))
    args = ap.parse_args()
    data_dir = pathlib.Path(args.data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    binaries = [("automodel", args.binary)] + ([("baseline", args.baseline)] if args.baseline else [])
    print("| records | file MB | " + " | ".join(f"{n} s | {n} peak RSS MB" for n, _ in binaries) + " |")
    print("|---|---|" + "---|---|" * len(binaries))
    for n in [int(x) for x in args.records.split(",")]:
        data = data_dir / f"squad_{n}.jsonl"
        make_data(data, n)
        cells = []
        for _, binary in binaries:
            s, rss = one_step(binary, data, args.threads)
            cells += [f"{s:.2f}", f"{rss:.0f}"]
        print(f"| {n} | {data.stat().st_size / 1e6:.0f} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
