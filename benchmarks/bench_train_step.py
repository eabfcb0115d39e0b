#!/usr/bin/env python
"""Training-step throughput of a DePOTR config on this machine, against its matmul FLOP rate.

Builds the config's Trainer (model, optimizer, data loader, as ``train_net.py`` does), takes
``--iters`` batches from the data loader first (their loading time is reported apart), then
times ``--iters`` full training steps (forward, losses, backward, gradient clipping, AdamW) on
them after ``--warmup`` untimed ones, and reports:

* crops/s: person crops (the batches' ground-truth persons) per second of training step;
* GFLOP/iteration: floating-point operations of one step counted by
  ``torch.utils.flop_counter.FlopCounterMode`` (matmuls and convolutions, forward and
  backward, 2 FLOPs per multiply-add; elementwise ops, normalisation, MSDA sampling and the
  optimizer are not counted, so the share below is a lower bound);
* the achieved GFLOP/s and its share of a 2048^3 float32 matmul's GFLOP/s measured in the same
  process with the same threads (best of 5): how much of what this CPU can do the step uses.

    python benchmarks/bench_train_step.py --config-file configs/depotr_hm_r18_synthetic.yaml
    python benchmarks/bench_train_step.py --config-file configs/depotr_hm_r18_synthetic.yaml \
        --opts SOLVER.IMS_PER_BATCH 8 --threads 1

Speed only: the weights' values do not matter. Run it on an otherwise idle machine.
"""

import argparse
import platform
import statistics
import sys
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from depotr.config import load_depotr_config
from depotr.data import register_synthetic_datasets_from_cfg
from depotr.engine import Trainer


def matmul_gflops(size: int = 2048, repeats: int = 5) -> float:
    """Best GFLOP/s of a size^3 float32 matmul."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best / 1e9


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config-file", required=True)
    parser.add_argument("--opts", nargs=argparse.REMAINDER, default=[], help="config overrides (KEY VALUE ...)")
    parser.add_argument("--iters", type=int, default=20, help="timed training steps")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps before")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = load_depotr_config(args.config_file, list(args.opts))
    register_synthetic_datasets_from_cfg(cfg)
    cfg.freeze()
    trainer = Trainer(cfg)
    step_trainer = trainer.step_trainer
    model, optimizer, loader = step_trainer.model, step_trainer.optimizer, iter(step_trainer.data_loader)

    start = time.perf_counter()
    batches = [next(loader) for _ in range(args.warmup + args.iters)]
    data_ms = 1e3 * (time.perf_counter() - start) / len(batches)

    def step(batch) -> None:
        losses = model(batch)
        optimizer.zero_grad()
        sum(losses.values()).backward()
        optimizer.step()

    model.train()
    for batch in batches[: args.warmup]:
        step(batch)
    timed = batches[args.warmup :]
    times = []
    for batch in timed:
        begin = time.perf_counter()
        step(batch)
        times.append(time.perf_counter() - begin)
    with FlopCounterMode(display=False) as counter:
        step(timed[0])
    # FLOPs scale with the number of crops: count them on one batch, per crop.
    flops_per_crop = counter.get_total_flops() / max(sum(len(d["instances"]) for d in timed[0]), 1)
    total_crops = sum(len(d["instances"]) for batch in timed for d in batch)
    seconds = sum(times)
    achieved = flops_per_crop * total_crops / seconds / 1e9
    peak = matmul_gflops()
    print(
        f"config {args.config_file} {' '.join(args.opts)}; {platform.processor() or platform.machine()}, "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads"
    )
    print(
        "| config | crops / it | s / it (median) | crops/s | data ms / batch | GFLOP / crop | GFLOP/s | "
        "matmul GFLOP/s | share |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    print(
        f"| {args.config_file.split('/')[-1]} {' '.join(args.opts)} | {total_crops / len(timed):.1f} | "
        f"{statistics.median(times):.3f} | {total_crops / seconds:.1f} | {data_ms:.1f} | {flops_per_crop / 1e9:.2f} | "
        f"{achieved:.1f} | {peak:.0f} | {100 * achieved / peak:.0f} % |"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
