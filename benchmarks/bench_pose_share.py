#!/usr/bin/env python
"""How much of this CPU's matmul rate the pose branch uses at inference, and what each speed lever
gives (issue 19: the R50 pose branch with the flip test at 8 persons, >= 60 % of the matmul rate).

For a config's keypoint branch on N random crops with the flip test (``TEST.FLIP``), in one process
and with the same threads: the floating-point operations of one call (``torch.utils.flop_counter``:
matmuls and convolutions, 2 per multiply-add; deformable sampling, normalisation and elementwise ops
not counted, so the share is a lower bound), the best of ``--repeats`` timed calls, and a 2048^3
float32 matmul's rate (best of 5). Variants, each timed in the same process:

* ``one batch``: crops and their mirrors in one forward of 2N (``modeling/tta.py``, what DePOTR does);
* ``two passes``: a forward of N, then one of the N mirrors (what it did before);
* ``bfloat16``: one batch with the body under bfloat16 autocast (``TEST.PRECISION bfloat16``);
  its FLOP rate is against the float32 matmul's, so it can pass 100 %;
* ``channels-last``: one batch with the branch and crops in ``torch.channels_last``.

    python benchmarks/bench_pose_share.py                               # depotr_hm_r50, 8 persons
    python benchmarks/bench_pose_share.py --config-file configs/depotr_r50.yaml --persons 8

Random weights (speed only). Run it on an otherwise idle machine.
"""

import argparse
import time
from typing import Callable

import torch
from torch.utils.flop_counter import FlopCounterMode

from detectron2.modeling import build_model

from depotr.config import load_depotr_config
from depotr.modeling.tta import predict_crop_keypoints


def best_seconds(fn: Callable[[], object], repeats: int) -> float:
    """Best of ``repeats`` timed calls of ``fn`` after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def matmul_gflops() -> float:
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    return 2 * 2048**3 / best_seconds(lambda: a @ b, 5) / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config-file", default="configs/depotr_hm_r50.yaml")
    parser.add_argument("--persons", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cfg = load_depotr_config(args.config_file, ["MODEL.DEVICE", "cpu", "TEST.FLIP", "True"])
    model = build_model(cfg).eval()
    branch, flip = model.keypoint_branch, model.flip_indices
    crops = torch.randn(args.persons, 3, *cfg.INPUT.CROP_SIZE)

    with FlopCounterMode(display=False) as counter:  # grad mode: the counter's module hooks need it
        predict_crop_keypoints(branch, crops, flip)
    gflop = counter.get_total_flops() / 1e9

    def two_passes():
        outputs = branch(crops)
        return branch.decode(outputs.average(branch.flip_back(branch(crops.flip(-1)), flip)))

    variants = {
        "one batch (DePOTR)": lambda: predict_crop_keypoints(branch, crops, flip),
        "two passes (before)": two_passes,
    }
    with torch.inference_mode():
        variants["bfloat16"] = lambda: predict_crop_keypoints(branch, crops, flip, torch.bfloat16)
        seconds = {name: best_seconds(fn, args.repeats) for name, fn in variants.items()}
        branch.to(memory_format=torch.channels_last)
        crops_cl = crops.contiguous(memory_format=torch.channels_last)
        seconds["channels-last"] = best_seconds(lambda: predict_crop_keypoints(branch, crops_cl, flip), args.repeats)
    peak = matmul_gflops()
    print(f"{args.config_file}, {args.persons} persons, flip test, {torch.get_num_threads()} threads")
    print(f"{gflop:.1f} GFLOP per call; 2048^3 float32 matmul {peak:.0f} GFLOP/s in this process")
    print("| variant | ms / call | GFLOP/s | share of matmul |")
    print("|---|---:|---:|---:|")
    for name, s in seconds.items():
        print(f"| {name} | {s * 1000:.0f} | {gflop / s:.0f} | {gflop / s / peak:.0%} |")


if __name__ == "__main__":
    main()
