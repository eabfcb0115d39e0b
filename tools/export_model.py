#!/usr/bin/env python
"""Exports a DePOTR model's pose branch, person crops in -> keypoints out, to TorchScript and ONNX.

    python tools/export_model.py --config-file configs/depotr_hm_r18_synthetic.yaml \
        --output output/depotr_hm_r18_synthetic/export \
        --opts MODEL.WEIGHTS output/depotr_hm_r18_synthetic/model_final.pth

Writes ``model.ts`` (TorchScript, ``torch.jit.trace``) and ``model.onnx`` (ONNX opset 17, the
TorchScript-based ``torch.onnx.export(dynamo=False)``) into ``--output``. Both map crops
(N, 3, H, W) float32 pixel values 0..255 in ``INPUT.FORMAT`` channel order, (H, W) =
``INPUT.CROP_SIZE``, N any batch size, to keypoints (N, K, 3): (x, y) in crop pixels and the
score, with the model's pixel normalisation, flip test (``TEST.FLIP``) and heatmap decoding
(``TEST.HEATMAP_REFINE``) inside; ONNX names them "crops" and "keypoints". Deformable attention
is exported through its PyTorch reference (grid_sample), so neither file needs ``depotr._C``.

Each file is traced on ``--batch`` random crops, then run on other batch sizes and compared with
the PyTorch model; the command prints the max abs errors and writes the file (to a temporary
name, then ``os.replace``) only if they are within ``--tolerance``; otherwise it exits with 1.
The model runs on the CPU. Details: ``depotr/export.py``.
"""

import argparse
import os
import sys
from typing import List, Optional

from detectron2.utils.logger import setup_logger

from depotr.config import load_depotr_config
from depotr.export import (
    EXPORT_FORMATS,
    MIN_OPSET,
    OUTPUT_FILES,
    ExportCheckError,
    build_crop_keypoint_predictor,
    export_predictor,
)


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config-file", required=True)
    parser.add_argument("--output", required=True, help="folder for model.ts / model.onnx")
    parser.add_argument("--format", nargs="+", choices=EXPORT_FORMATS, default=list(EXPORT_FORMATS))
    parser.add_argument("--batch", type=int, default=2, help="example crops the model is traced on")
    parser.add_argument("--opset", type=int, default=MIN_OPSET, help=f"ONNX opset (>= {MIN_OPSET})")
    parser.add_argument(
        "--tolerance", type=float, default=1e-3, help="max abs error allowed, crop pixels (x, y) and score"
    )
    parser.add_argument("--opts", nargs=argparse.REMAINDER, default=[], help="config overrides, KEY VALUE ...")
    args = parser.parse_args(argv)
    if args.batch < 1:
        parser.error(f"--batch must be >= 1, got {args.batch}")
    if args.opset < MIN_OPSET:
        parser.error(f"--opset must be >= {MIN_OPSET}, got {args.opset}")
    return args


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    setup_logger(name="depotr")
    cfg = load_depotr_config(args.config_file, args.opts)
    cfg.freeze()
    predictor = build_crop_keypoint_predictor(cfg)
    height, width = predictor.crop_size
    print(
        f"crops (N, 3, {height}, {width}) float32 0..255 {cfg.INPUT.FORMAT} -> keypoints "
        f"(N, {cfg.MODEL.DEPOTR.NUM_KEYPOINTS}, 3) (x, y, score) in crop pixels"
    )
    os.makedirs(args.output, exist_ok=True)
    failed = False
    for fmt in args.format:
        path = os.path.join(args.output, OUTPUT_FILES[fmt])
        try:
            report = export_predictor(predictor, fmt, path, args.batch, args.tolerance, args.opset)
        except ExportCheckError as e:
            print(f"{fmt}: {e}", file=sys.stderr)
            failed = True
            continue
        batches = ", ".join(str(n) for n in report.check_batches)
        print(
            f"{fmt}: {path}  max abs error vs PyTorch (N = {batches}): "
            f"{report.coord_error_px:.3g} px (x, y), {report.score_error:.3g} (score)"
        )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
