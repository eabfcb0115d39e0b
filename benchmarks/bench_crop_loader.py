#!/usr/bin/env python
"""Where to cut the person crops: in the model (as now) or in the data loader's workers (mmpose)?

Prints two rates to compare:

(a) supply: person crops per second ONE data-loader worker (one thread) could deliver if it cut
    the crops itself: decode a COCO-sized 640 x 480 JPEG (written by this script), then cut
    ``--persons`` rotated crops, once with OpenCV's ``cv2.warpAffine`` per person (mmpose's way)
    and once with DePOTR's batched ``crops.crop_images`` (normalised float32, adaptive RoIAlign
    sampling) — the decode alone is reported too;
(b) demand: person crops per second a training step consumes, for each ``--configs`` entry: its
    keypoint branch (built from the config, at its ``INPUT.CROP_SIZE``) runs forward, losses,
    backward and an SGD step on ``--batch-crops`` random crops with random targets. The step
    without data loading or cropping is the fastest a step can be, so this is an upper bound of
    the demand (``benchmarks/bench_train_step.py`` measures whole steps).

Workers needed to feed training = demand / supply per worker. Run it on an otherwise idle machine:

    python benchmarks/bench_crop_loader.py
    python benchmarks/bench_crop_loader.py --images 5 --steps 1 --batch-crops 2  # smoke run
"""

import argparse
import os
import tempfile
import time

import cv2
import numpy as np
import torch

from depotr.config import load_depotr_config
from depotr.modeling import build_keypoint_branch
from depotr.modeling.crops import box_crop_params, crop_affine, crop_images

MEAN = torch.tensor([123.675, 116.28, 103.53]).view(3, 1, 1)
STD = torch.tensor([58.395, 57.12, 57.375]).view(3, 1, 1)


def _write_jpeg(path: str, seed: int = 0) -> None:
    """A 640 x 480 JPEG with photo-like (smooth plus noisy) content."""
    rng = np.random.default_rng(seed)
    smooth = cv2.resize(rng.integers(0, 255, (30, 40, 3)).astype(np.uint8), (640, 480), interpolation=cv2.INTER_CUBIC)
    noise = rng.normal(0, 12, (480, 640, 3))
    cv2.imwrite(path, np.clip(smooth + noise, 0, 255).astype(np.uint8), [cv2.IMWRITE_JPEG_QUALITY, 90])


def _person_params(persons: int, crop_size, seed: int = 0) -> torch.Tensor:
    """(persons, 6) crop parameters of persons 60-300 px tall, rotated up to +-45 degrees."""
    g = torch.Generator().manual_seed(seed)
    h = torch.rand(persons, generator=g) * 240 + 60
    w = h * (torch.rand(persons, generator=g) * 0.4 + 0.3)
    x0 = torch.rand(persons, generator=g) * (640 - w)
    y0 = torch.rand(persons, generator=g) * (480 - h).clamp(min=1)
    params = box_crop_params(torch.stack([x0, y0, x0 + w, y0 + h], dim=1), crop_size, 1.25)
    params[:, 4] = torch.rand(persons, generator=g) * 90 - 45
    return params


def loader_rates(images: int, persons: int, crop_size) -> dict:
    """Single-threaded crops/s of decode + cut, per cutting method, and the decode-only rate."""
    torch.set_num_threads(1)
    cv2.setNumThreads(0)
    crop_h, crop_w = crop_size
    params = _person_params(persons, crop_size)
    to_image = crop_affine(params, crop_size).float().numpy()  # crop pixel -> image pixel
    # OpenCV's pixel centres are integers: shift by 0.5 on both sides of the affine.
    shifted = to_image.copy()
    shifted[:, :, 2] += to_image[:, :, :2].sum(axis=2) * 0.5 - 0.5
    rates = {}
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "coco_sized.jpg")
        _write_jpeg(path)

        def run(cut) -> float:
            start = time.perf_counter()
            for _ in range(images):
                cut(cv2.imread(path, cv2.IMREAD_COLOR))
            return time.perf_counter() - start

        decode = run(lambda image: None)
        rates["decode only (images/s)"] = images / decode

        def warp(image):
            for m in shifted:
                crop = cv2.warpAffine(image, m, (crop_w, crop_h), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP)
                ((torch.from_numpy(crop).permute(2, 0, 1).float() - MEAN) / STD).contiguous()

        def roi_align(image):
            chw = torch.from_numpy(image).permute(2, 0, 1)
            crop_images([chw], [params], crop_size, 0, MEAN, STD)

        rates["decode + cv2.warpAffine (crops/s)"] = images * persons / run(warp)
        rates["decode + crops.crop_images (crops/s)"] = images * persons / run(roi_align)
    return rates


def step_demand(config: str, batch_crops: int, steps: int, threads: int) -> float:
    """Crops/s of the config's keypoint branch training on random crops (forward, losses,
    backward, SGD step), after one untimed step."""
    if threads:
        torch.set_num_threads(threads)
    cfg = load_depotr_config(config, ["MODEL.DEVICE", "cpu"])
    branch = build_keypoint_branch(cfg).train()
    crop_h, crop_w = branch.crop_size
    optimizer = torch.optim.SGD([p for p in branch.parameters() if p.requires_grad], lr=1e-6)
    g = torch.Generator().manual_seed(0)
    crops = torch.randn((batch_crops, 3, crop_h, crop_w), generator=g)
    targets = torch.rand((batch_crops, cfg.MODEL.DEPOTR.NUM_KEYPOINTS, 3), generator=g)
    targets[..., 0] *= crop_w
    targets[..., 1] *= crop_h
    targets[..., 2] = 2.0

    def step():
        losses = branch.losses(branch(crops), targets)
        optimizer.zero_grad(set_to_none=True)
        sum(losses.values()).backward()
        optimizer.step()

    step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return batch_crops * steps / (time.perf_counter() - start)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=200, help="JPEGs decoded and cut per method")
    parser.add_argument("--persons", type=int, default=6, help="persons cut per image")
    parser.add_argument(
        "--configs", nargs="+", default=["configs/depotr_hm_r50.yaml", "configs/depotr_hm_r18_synthetic.yaml"]
    )
    parser.add_argument("--batch-crops", type=int, default=32, help="crops per timed training step")
    parser.add_argument("--steps", type=int, default=5, help="timed training steps per config")
    parser.add_argument("--threads", type=int, default=0, help="torch threads of the steps (0: default)")
    args = parser.parse_args(argv)

    threads = torch.get_num_threads()
    print(f"(a) one loader worker, 1 thread, 640x480 JPEG, {args.persons} rotated persons per image, 256x192:")
    supply = loader_rates(args.images, args.persons, (256, 192))
    for name, rate in supply.items():
        print(f"    {name:40s} {rate:9.1f}")
    best = max(v for k, v in supply.items() if "crops/s" in k)
    torch.set_num_threads(args.threads or threads)
    print(f"(b) training-step demand, {args.batch_crops} crops per step, {torch.get_num_threads()} threads:")
    for config in args.configs:
        demand = step_demand(config, args.batch_crops, args.steps, args.threads)
        print(f"    {config:40s} {demand:9.1f} crops/s = {demand / best:5.2f} workers at the faster cut")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
