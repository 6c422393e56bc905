"""The data-parallel PyTorch side of bench/dp_compare.py: one rank of a torchrun job on CPU (gloo), training the
model of bench/train_torch.py `train` under torch DDP or FSDP2 (torch.distributed.fsdp.fully_shard).

  python -m torch.distributed.run --standalone --nproc-per-node 2 bench/train_torch_dp.py --strategy ddp \\
      --batch 1 ... --result R.json

--batch is the local batch: step s of rank r trains sample s * world + r of the data file, so that the ranks
together take the global batches a single process with batch world * --batch takes (bench/train_torch.py
`train`). The loss of each step is the mean over the ranks (all ranks count the same number of labels). Rank 0
writes --result (per-step loss and seconds, as `train` does); every rank writes its own ru_maxrss beside it."""
import argparse
import json
import os
import pathlib
import resource
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import train_torch  # noqa: E402


def wrap(model, strategy, world):
    """DDP: the gradients of every step all-reduced in buckets during backward (torch's default 25 MB buckets).
    FSDP2: each decoder layer and then the root sharded across the ranks (parameters all-gathered for forward and
    again for backward, gradients reduce-scattered), as NeMo Automodel applies fully_shard."""
    import torch
    if strategy == "ddp":
        return torch.nn.parallel.DistributedDataParallel(model)
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard
    mesh = init_device_mesh("cpu", (world,))
    layers = [m for m in model.modules() if type(m).__name__.endswith("DecoderLayer")]
    for layer in layers:
        fully_shard(layer, mesh=mesh)
    fully_shard(model, mesh=mesh)
    return model


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    train_torch.add_train_args(p)
    p.add_argument("--strategy", choices=["ddp", "fsdp2"], required=True)
    p.add_argument("--result", required=True)
    args = p.parse_args()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    import torch
    import torch.distributed as dist
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    steps = args.warmup_steps + args.steps
    global_batches = train_torch.load_batches(args.model_dir, args.data, args.seq, args.batch * world, steps)
    batches = [(x[rank * args.batch:(rank + 1) * args.batch], y[rank * args.batch:(rank + 1) * args.batch])
               for x, y in global_batches]

    model = train_torch.build_model(args)
    summary = train_torch.dtype_summary(model)
    model = wrap(model, args.strategy, world)
    optimizer = train_torch.adamw(args, [p for p in model.parameters() if p.requires_grad])
    autocast = args.dtype == "bf16" and args.bf16 == "autocast"

    records, losses = [], []
    for step, (x, y) in enumerate(batches):
        loss, seconds = train_torch.timed_step(model, optimizer, x, y, autocast)
        losses.append(loss)
        records.append({"step": step, "seconds": seconds, "tokens": int(y.numel()) * world})
        if rank == 0:
            print(f"step {step} local loss {losses[-1]:.5f} {seconds * 1e3:.0f} ms", flush=True)
    # The mean over the ranks, outside the timed steps: one all-reduce for the whole run.
    mean_losses = torch.tensor(losses, dtype=torch.float64)
    dist.all_reduce(mean_losses)
    for r, loss in zip(records, (mean_losses / world).tolist()):
        r["loss"] = loss

    result = pathlib.Path(args.result)
    rss = {"rank": rank, "maxrss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}
    result.with_name(f"{result.stem}.rank{rank}.json").write_text(json.dumps(rss))
    if rank == 0:
        train_torch.emit({"steps": records, "threads": torch.get_num_threads(), "world": world, **summary},
                         args.result)
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
