#!/usr/bin/env python
"""Time and peak memory of one large photo through the demo against the Predictor alone (issue 23
item 8: the demo is to stay within 2x the Predictor's time and memory).

    python benchmarks/bench_demo_large_image.py --size 6000 4000 \
        --config-file configs/depotr_hm_r18_synthetic.yaml [--random-weights] [KEY VALUE ...]

Writes a (H, W) = (4000, 6000) JPEG (the astronaut photo resized), then runs each side in a fresh
process: ``Predictor(image_path)`` and the demo's ``Demo.run_images([image_path], out, image_ids)`` (read,
predict, draw at <= 1920 px, write). Each child times its call (after one warm-up call on a small
image) and the parent reads the child's peak resident set (``os.wait4``'s ``ru_maxrss``, the whole
process: model included).
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "demo"))


def child(side: str, image_path: str, small_path: str, config: str, random_weights: bool, opts) -> None:
    from depotr import Predictor
    from depotr.config import load_depotr_config

    predictor = Predictor(load_depotr_config(config, opts), random_weights)
    if side == "predictor":
        run = predictor
    else:
        import demo

        runner = demo.Demo(predictor, None)  # the demo's default: every person
        out = tempfile.mkdtemp()

        def run(path):
            return runner.run_images([path], out, {path: demo.image_id_from_path(path)})

    run(small_path)  # warm-up
    start = time.perf_counter()
    run(image_path)
    print(json.dumps({"seconds": time.perf_counter() - start}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, nargs=2, default=(6000, 4000), metavar=("W", "H"))
    parser.add_argument("--config-file", required=True)
    parser.add_argument("--random-weights", action="store_true")
    parser.add_argument("--child", choices=("predictor", "demo"), help=argparse.SUPPRESS)
    parser.add_argument("--images", nargs=2, help=argparse.SUPPRESS)
    parser.add_argument("opts", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    if args.child:
        child(args.child, *args.images, args.config_file, args.random_weights, args.opts)
        return

    import cv2
    from skimage import data as skimage_data

    folder = tempfile.mkdtemp()
    photo = skimage_data.astronaut()[:, :, ::-1]
    paths = [os.path.join(folder, "large.jpg"), os.path.join(folder, "small.jpg")]
    cv2.imwrite(paths[0], cv2.resize(photo, tuple(args.size), interpolation=cv2.INTER_CUBIC))
    cv2.imwrite(paths[1], photo)
    results = {}
    for side in ("predictor", "demo"):
        command = [sys.executable, __file__, "--child", side, "--images", *paths, "--config-file", args.config_file]
        command += ["--random-weights"] * args.random_weights + list(args.opts)
        process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
        output = process.stdout.read()
        _, status, usage = os.wait4(process.pid, 0)
        if status != 0:
            sys.exit(f"{side} child failed (status {status})")
        seconds = json.loads(output.strip().splitlines()[-1])["seconds"]
        results[side] = (seconds, usage.ru_maxrss / 2**20)  # ru_maxrss: KiB on Linux
        print(f"{side}: {seconds:.2f} s, peak RSS {results[side][1]:.2f} GiB")
    ratio_time = results["demo"][0] / results["predictor"][0]
    ratio_memory = results["demo"][1] / results["predictor"][1]
    print(f"demo / predictor: {ratio_time:.2f}x time, {ratio_memory:.2f}x memory ({args.size[0]}x{args.size[1]})")


if __name__ == "__main__":
    main()
