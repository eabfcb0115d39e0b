#!/usr/bin/env python
r"""Draws a trained model's predicted skeletons on photos that ship in Python packages, for a look
at how the model does on real people (no training, tuning or evaluation on them).

    python tools/draw_photos.py --config-file configs/depotr_hm_r18_synthetic_v4.yaml \
        --output docs/images/photos_v4.png \
        MODEL.WEIGHTS output/depotr_hm_r18_synthetic_v4/model_final.pth

Photos (``--photos``, default all): ``astronaut`` (scikit-image: an upper-body portrait),
``camera`` (scikit-image: the cameraman, grey), ``grace_hopper`` (matplotlib's sample data:
head and shoulders). Each person box is the whole photo (the predictor's single-person mode)
unless ``--box NAME X0 Y0 X1 Y1`` gives one (XYXY pixels; repeatable). The photos are drawn side
by side at a common height with Detectron2's ``Visualizer`` into one PNG (written atomically; its
folder is made when missing, as the demo does).
"""

import argparse
import math
import sys
from typing import TYPE_CHECKING, Callable, Dict, List, Optional

import cv2
import numpy as np

# torch and Detectron2 are imported once the arguments are parsed (a fast --help)
from depotr.cli import add_config_arguments, config_overrides, parse_command_line, run_main
from depotr.file_io import output_problem, write_image

if TYPE_CHECKING:
    from depotr.predictor import Predictor


def _astronaut() -> np.ndarray:
    from skimage import data

    return data.astronaut()


def _camera() -> np.ndarray:
    from skimage import data

    return np.repeat(data.camera()[..., None], 3, axis=2)


def _grace_hopper() -> np.ndarray:
    from matplotlib import cbook
    from matplotlib.image import imread

    with cbook.get_sample_data("grace_hopper.jpg") as f:
        return np.asarray(imread(f, format="jpg"))[..., :3]


# Photo name -> loader of the (H, W, 3) uint8 RGB image.
PHOTOS: Dict[str, Callable[[], np.ndarray]] = {
    "astronaut": _astronaut,
    "camera": _camera,
    "grace_hopper": _grace_hopper,
}


def draw_photo(predictor: "Predictor", image_rgb: np.ndarray, box: Optional[List[float]], height: int) -> np.ndarray:
    """(height, W', 3) uint8 RGB: ``image_rgb`` with the predicted skeletons, scaled to ``height``
    by ``predictor`` (a ``depotr.Predictor``)."""
    from detectron2.data import Metadata
    from detectron2.utils.visualizer import Visualizer

    from depotr.data import drawing_metadata

    instances = predictor(image_rgb[:, :, ::-1].copy(), None if box is None else [box])
    metadata = Metadata(name="depotr_photos").set(**drawing_metadata(predictor.cfg))
    drawn = Visualizer(image_rgb, metadata, scale=1.0).draw_instance_predictions(instances).get_image()
    width = int(round(drawn.shape[1] * height / drawn.shape[0]))
    return cv2.resize(drawn, (width, height), interpolation=cv2.INTER_AREA)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", required=True, help="the PNG to write")
    parser.add_argument("--photos", nargs="+", default=list(PHOTOS), choices=sorted(PHOTOS))
    parser.add_argument(
        "--box", nargs=5, action="append", default=[], metavar=("NAME", "X0", "Y0", "X1", "Y1"), help="a person box"
    )
    parser.add_argument("--height", type=int, default=384, help="height of each photo in the PNG")
    add_config_arguments(parser)
    args = parse_command_line(parser, argv)
    boxes = {}
    for name, *coords in args.box:
        if name not in args.photos:
            parser.error(f"--box names {name!r}, which is not among the photos {args.photos}")
        try:
            boxes[name] = [float(c) for c in coords]
        except ValueError:
            parser.error(f"--box {name}: {coords} are not four numbers X0 Y0 X1 Y1")
        x0, y0, x1, y1 = boxes[name]
        if not (math.isfinite(x0 + y0 + x1 + y1) and x1 > x0 and y1 > y0):
            parser.error(f"--box {name}: {boxes[name]} is not a box X0 Y0 X1 Y1 (finite, X1 > X0, Y1 > Y0)")
    if not args.output.lower().endswith(".png"):
        parser.error(f"--output {args.output} must be a .png file")
    if args.height < 1:
        parser.error(f"--height must be >= 1, got {args.height}")
    problem = output_problem(args.output, create=True)  # once the arguments are checked, before the model runs
    if problem:
        parser.error(f"--output {args.output}: {problem}")
    from depotr.config import load_depotr_config
    from depotr.predictor import Predictor

    predictor = Predictor(load_depotr_config(args.config_file, config_overrides(args)), args.random_weights)
    panels = [draw_photo(predictor, PHOTOS[name](), boxes.get(name), args.height) for name in args.photos]
    write_image(args.output, np.ascontiguousarray(np.concatenate(panels, axis=1)[:, :, ::-1]))
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
