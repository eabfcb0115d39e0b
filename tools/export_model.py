#!/usr/bin/env python
r"""Exports a DePOTR model to TorchScript and ONNX: person crops in -> keypoints out (--inputs crops,
the default), or an image and its person boxes in -> keypoints in image pixels (--inputs image).

    python tools/export_model.py --config-file configs/depotr_hm_r18_synthetic.yaml \
        --output output/depotr_hm_r18_synthetic/export [--inputs image] \
        --opts MODEL.WEIGHTS output/depotr_hm_r18_synthetic/model_final.pth

--inputs image writes ``image_model.ts`` and ``image_model.onnx``: inputs "image" (H, W, 3) uint8
BGR (as cv2.imread gives) and "boxes" (N, 4) float32 XYXY in image pixels, output "keypoints"
(N, K, 3), (x, y) in image pixels and the score; the box -> crop rule (INPUT.CROP_PADDING) and the
crop (RoIAlign, ONNX RoiAlign "half_pixel", the Predictor's sampling ratio capped at 16) are inside,
H, W and N (0 too) are free. Each file is compared with ``depotr.Predictor`` on the same images and
boxes, one of them over the cap. ``image_model.ts`` calls torchvision's RoIAlign op: load it after
``import torchvision`` (``torch.jit.load`` alone fails with "Unknown builtin op:
torchvision::roi_align"). The rest of this text is about the crops form.

Writes ``model.ts`` (TorchScript, ``torch.jit.trace``) and ``model.onnx`` (ONNX opset 17, the
TorchScript-based ``torch.onnx.export(dynamo=False)``) into ``--output``. Both map crops
(N, 3, H, W) float32 pixel values 0..255 in ``INPUT.FORMAT`` channel order, (H, W) =
``INPUT.CROP_SIZE``, N any batch size, to keypoints (N, K, 3): (x, y) in crop pixels and the
score, with the model's pixel normalisation, flip test (``TEST.FLIP``) and heatmap decoding
(``TEST.HEATMAP_REFINE``) inside; ONNX names them "crops" and "keypoints". Deformable attention
is exported through its PyTorch reference (grid_sample), so neither file needs ``depotr._C``.

Each file is traced on ``--batch`` random crops (parameters not requiring grad: the TorchScript
file needs no torch.no_grad()), then run twice on other batch sizes (TorchScript with grad mode on)
and compared with the PyTorch model; the command prints the max abs errors and writes the file (to
a temporary name, then ``os.replace``) only if they are within ``--tolerance``; otherwise it exits
with 1.
The model runs on the CPU; an empty MODEL.WEIGHTS is an error unless --random-weights is given.
Config overrides: --opts KEY VALUE ... or bare KEY VALUE ... after the options. Details:
``depotr/export.py``.
"""

import argparse
import os
import sys
from typing import Dict, List, Optional

from depotr.cli import add_config_arguments, config_overrides, parse_command_line, run_main
from depotr.file_io import output_problem

# The defaults and file names of depotr.export (not imported before the arguments are parsed and
# --output is checked: fast --help and errors).
EXPORT_FORMATS = ("torchscript", "onnx")
EXPORT_INPUTS = ("crops", "image")
MIN_OPSET = 17
OUTPUT_FILES = {"torchscript": "model.ts", "onnx": "model.onnx"}
IMAGE_OUTPUT_FILES = {"torchscript": "image_model.ts", "onnx": "image_model.onnx"}
# Printed after an image_model.ts is written: without torchvision's ops registered, loading it fails.
TORCHSCRIPT_IMAGE_NOTE = (
    "image_model.ts calls torchvision's RoIAlign: run `import torchvision` before torch.jit.load "
    "(else: Unknown builtin op: torchvision::roi_align)"
)


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", required=True, help="folder for the exported files")
    parser.add_argument(
        "--inputs",
        choices=EXPORT_INPUTS,
        default="crops",
        help="crops: person crops in -> keypoints in crop pixels (model.ts / model.onnx); image: an image and "
        "its XYXY person boxes in -> keypoints in image pixels (image_model.ts / image_model.onnx)",
    )
    parser.add_argument("--format", nargs="+", choices=EXPORT_FORMATS, default=list(EXPORT_FORMATS))
    parser.add_argument("--batch", type=int, default=2, help="example crops the crops model is traced on")
    parser.add_argument("--opset", type=int, default=MIN_OPSET, help=f"ONNX opset (>= {MIN_OPSET})")
    parser.add_argument("--tolerance", type=float, default=1e-3, help="max abs error allowed, pixels (x, y) and score")
    add_config_arguments(parser)
    args = parse_command_line(parser, argv)
    if args.batch < 1:
        parser.error(f"--batch must be >= 1, got {args.batch}")
    if args.opset < MIN_OPSET:
        parser.error(f"--opset must be >= {MIN_OPSET}, got {args.opset}")
    problem = output_folder_problem(args.output, list(output_paths(args).values()))
    if problem:
        parser.error(f"--output {args.output}: {problem}")
    return args


def output_paths(args: argparse.Namespace) -> Dict[str, str]:
    """Format -> the file it is exported to, in the folder --output."""
    files = OUTPUT_FILES if args.inputs == "crops" else IMAGE_OUTPUT_FILES
    return {fmt: os.path.join(args.output, files[fmt]) for fmt in args.format}


def output_folder_problem(folder: str, paths: List[str]) -> Optional[str]:
    """Makes ``folder`` when missing; why ``paths``, files in it, cannot be written (``folder`` is
    not a folder, cannot be made or is read-only; one of them is a folder), or None."""
    problem = output_problem(folder, folder=True, create=True)
    if problem:
        return problem
    problems = [f"{os.path.basename(path)}: {problem}" for path in paths if (problem := output_problem(path))]
    return "; ".join(problems) or None


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    from detectron2.utils.logger import setup_logger

    from depotr.config import load_depotr_config
    from depotr.export import (
        ExportCheckError,
        build_crop_keypoint_predictor,
        export_image_predictor,
        export_predictor,
        reference_predictor,
    )

    setup_logger(name="depotr")
    cfg = load_depotr_config(args.config_file, config_overrides(args))
    cfg.freeze()
    keypoints = f"(N, {cfg.MODEL.DEPOTR.NUM_KEYPOINTS}, 3) (x, y, score)"
    if args.inputs == "crops":
        predictor = build_crop_keypoint_predictor(cfg, args.random_weights)
        height, width = predictor.crop_size
        print(
            f"crops (N, 3, {height}, {width}) float32 0..255 {cfg.INPUT.FORMAT} -> keypoints {keypoints} in crop pixels"
        )
        reference = "PyTorch"
    else:
        predictor = reference_predictor(cfg, args.random_weights)
        print(f"image (H, W, 3) uint8 BGR, boxes (N, 4) float32 XYXY -> keypoints {keypoints} in image pixels")
        reference = "Predictor"
    failed = False
    for fmt, path in output_paths(args).items():
        try:
            if args.inputs == "crops":
                report = export_predictor(predictor, fmt, path, args.batch, args.tolerance, args.opset)
            else:
                report = export_image_predictor(predictor, fmt, path, args.tolerance, args.opset)
        except ExportCheckError as e:
            print(f"{fmt}: {e}", file=sys.stderr)
            failed = True
            continue
        batches = ", ".join(str(n) for n in report.check_batches)
        print(
            f"{fmt}: {path}  max abs error vs {reference} (N = {batches}): "
            f"{report.coord_error_px:.3g} px (x, y), {report.score_error:.3g} (score)"
        )
        if fmt == "torchscript" and args.inputs == "image":
            print(f"{fmt}: {TORCHSCRIPT_IMAGE_NOTE}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(run_main(main))
