#!/usr/bin/env python
"""Draws DePOTR's predicted skeletons on images, a video or the webcam (Detectron2 demo conventions).

    python demo/demo.py --config-file configs/depotr_hm_r18_synthetic.yaml \
        --input photos/*.jpg --output out/ --save-json out/keypoints.json \
        --opts MODEL.WEIGHTS output/depotr_hm_r18_synthetic/model_final.pth
    python demo/demo.py --config-file ... --video-input walk.mp4 --output out/ --opts MODEL.WEIGHTS ...
    python demo/demo.py --config-file ... --webcam --opts MODEL.WEIGHTS ...

Person boxes (``depotr.Predictor``): the Detectron2 person detector of MODEL.DEPOTR.DETECTOR when
it is configured, e.g.
    --opts MODEL.DEPOTR.DETECTOR.CONFIG_FILE model_zoo:COCO-Detection/faster_rcnn_R_50_FPN_3x.yaml \
           MODEL.DEPOTR.DETECTOR.WEIGHTS model_zoo:COCO-Detection/faster_rcnn_R_50_FPN_3x.yaml
otherwise the whole image is one person (the single-person mode of a top-down model).

Outputs: <output>/<file stem>.png per image (an image with no person is written unchanged),
<output>/<video stem>.mp4 (mp4v, the input's frame rate) for a video; the webcam is shown in a
window (Esc quits). Images and frames whose long side exceeds 1920 px are downscaled to 1920 px
for drawing (the skeletons scaled with them; the Visualizer's time and memory grow with the
image); keypoints are predicted, and written to --save-json, at full resolution.
--save-json writes COCO keypoint results, one per person: image_id = the file name stem (an int
when it is all digits, as in COCO's 000000397133.jpg) or the frame index for a video / the
webcam; category_id 1; keypoints [x, y, score] x 17 in COCO's pixel-index convention
(Detectron2's instances_to_coco_json, x - 0.5); bbox XYWH; score.

Folders are read one level deep (their subfolders are skipped). Before the model is loaded, the
demo checks that every output can be written and that no two inputs share a file name stem (which
would give them one output file and one image_id); otherwise it stops with an error naming them
(status 1). An image file that cannot be read, or a JPEG that ends early, is skipped with a
message naming it, and the demo then exits with status 1; a video that cannot be opened is an error
naming it (status 1).

Config overrides: --opts KEY VALUE ... or bare KEY VALUE ... after the options (every DePOTR
command accepts both). An empty MODEL.WEIGHTS is an error unless --random-weights is given. A
config mistake (an unknown key, a missing file) is one line "error: ..." and status 2.
"""

import argparse
import glob
import json
import os
import sys
from typing import TYPE_CHECKING, Dict, List, Optional, Union

import cv2
import numpy as np
from tqdm import tqdm

from depotr.cli import add_config_arguments, config_overrides, parse_command_line, run_main
from depotr.file_io import atomic_write, temporary_path

if TYPE_CHECKING:  # torch and Detectron2 are imported after the arguments are parsed (fast --help)
    from detectron2.structures import Instances

    from depotr import Predictor

COCO_PERSON_CATEGORY_ID = 1
# Long side, in pixels, of the drawn images and video frames: larger inputs are downscaled for
# drawing (the keypoints are predicted, and written to --save-json, at full resolution).
MAX_DRAW_SIZE = 1920
WINDOW_NAME = "DePOTR"


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--input", nargs="+", help="image files, globs or folders")
    source.add_argument("--video-input", help="a video file")
    source.add_argument("--webcam", action="store_true", help="the first webcam, shown in a window")
    parser.add_argument("--output", help="folder for the drawn images / video (required unless --webcam)")
    parser.add_argument(
        "--confidence-threshold",
        type=float,
        default=0.0,
        help="drop persons whose score (box score x mean confident keypoint score) is below this; "
        "default 0 keeps every person",
    )
    parser.add_argument("--save-json", metavar="PATH", help="also write the persons as COCO keypoint results")
    add_config_arguments(parser)
    return parser


def expand_inputs(patterns: List[str]) -> List[str]:
    """Files, globs and folders (their files, sorted; not their subfolders) -> file paths, each
    file once. A pattern that matches nothing is kept, for the reader to report."""
    paths, seen = [], set()
    for pattern in patterns:
        if os.path.isdir(pattern):
            found = sorted(os.path.join(pattern, f) for f in os.listdir(pattern))
        else:
            found = sorted(glob.glob(os.path.expanduser(pattern))) or [pattern]
        for path in found:
            if not os.path.isdir(path) and os.path.realpath(path) not in seen:
                seen.add(os.path.realpath(path))
                paths.append(path)
    return paths


def output_path(path: str, output: str) -> str:
    """<output>/<file name stem>.png, where the drawing of image ``path`` goes."""
    return os.path.join(output, os.path.splitext(os.path.basename(path))[0] + ".png")


def shared_outputs(paths: List[str], output: str) -> List[str]:
    """Messages for the inputs that would share an output file or a json image_id (empty: none)."""
    problems = []
    for what, key in (("the output", lambda p: output_path(p, output)), ("the image_id", image_id_from_path)):
        groups: Dict[object, List[str]] = {}
        for path in paths:
            groups.setdefault(key(path), []).append(path)
        problems += [
            f"inputs {', '.join(group)} would share {what} {value!r}"
            for value, group in groups.items()
            if len(group) > 1
        ]
    return problems


def check_writable(path: str, folder: bool) -> Optional[str]:
    """Why ``path`` (a folder to write into, or a file to create) cannot be written; None if it
    can. Creates the folder (or the file's folder) and a probe file that is removed at once."""
    directory = path if folder else os.path.dirname(os.path.abspath(path))
    try:
        if not folder and os.path.isdir(path):
            raise IsADirectoryError(f"{path} is a folder")
        os.makedirs(directory, exist_ok=True)
        probe = temporary_path(os.path.join(directory, "probe"))
        with open(probe, "x"):
            pass
        os.remove(probe)
    except OSError as e:
        return str(e)
    return None


def image_id_from_path(path: str) -> Union[int, str]:
    """The file name stem, as an int when it is all digits (COCO's 000000397133.jpg -> 397133)."""
    stem = os.path.splitext(os.path.basename(path))[0]
    return int(stem) if stem.isdigit() else stem


def drawn_size(height: int, width: int) -> tuple:
    """(H', W') a (height, width) image is drawn at: its long side at most MAX_DRAW_SIZE."""
    scale = min(1.0, MAX_DRAW_SIZE / max(height, width))
    return max(1, round(height * scale)), max(1, round(width * scale))


def draw(image: np.ndarray, instances: "Instances", metadata) -> np.ndarray:
    """The (H, W, 3) uint8 BGR ``image`` with the persons' boxes and skeletons drawn by
    Detectron2's ``Visualizer``, at :func:`drawn_size`: an image whose long side exceeds
    ``MAX_DRAW_SIZE`` is downscaled first (``cv2.INTER_AREA``) and the boxes and keypoints
    scaled with it (the Visualizer's time and memory grow with the image; the Predictor and the
    json work at full resolution). With no person the (downscaled) image itself."""
    from detectron2.structures import Boxes, Instances
    from detectron2.utils.visualizer import Visualizer

    height, width = image.shape[:2]
    new_height, new_width = drawn_size(height, width)
    if (new_height, new_width) != (height, width):
        image = cv2.resize(image, (new_width, new_height), interpolation=cv2.INTER_AREA)
        scale = instances.pred_boxes.tensor.new_tensor([new_width / width, new_height / height])
        fields = dict(instances.get_fields())  # a copy: the caller's Instances stay as they are
        fields["pred_boxes"] = Boxes(instances.pred_boxes.tensor * scale.repeat(2))
        keypoints = instances.pred_keypoints.clone()
        keypoints[..., :2] *= scale
        fields["pred_keypoints"] = keypoints
        instances = Instances((new_height, new_width), **fields)
    if len(instances) == 0:
        return image
    drawn = Visualizer(image[:, :, ::-1], metadata).draw_instance_predictions(instances)
    return np.ascontiguousarray(drawn.get_image()[:, :, ::-1])


def coco_results(instances: "Instances", image_id: Union[int, str]) -> List[Dict]:
    """COCO keypoint results of one image (Detectron2's ``instances_to_coco_json``, person
    category id 1)."""
    from detectron2.evaluation.coco_evaluation import instances_to_coco_json

    results = instances_to_coco_json(instances, image_id)
    for result in results:
        result["category_id"] = COCO_PERSON_CATEGORY_ID
    return results


class Demo:
    """Predicts the persons of an image, keeps those scoring >= ``threshold``, draws them and
    collects their COCO results."""

    def __init__(self, predictor: "Predictor", threshold: float):
        from detectron2.data import Metadata

        from depotr.data import drawing_metadata

        self.predictor = predictor
        self.threshold = threshold
        self.metadata = Metadata(name="depotr_demo").set(**drawing_metadata(predictor.cfg))
        self.results: List[Dict] = []

    def __call__(self, image: np.ndarray, image_id: Union[int, str]) -> "Instances":
        """Returns the kept persons (Instances) of a (H, W, 3) uint8 BGR image."""
        instances = self.predictor(image)
        instances = instances[instances.scores >= self.threshold]
        self.results += coco_results(instances, image_id)
        return instances

    def run_images(self, paths: List[str], output: str) -> int:
        """Writes <output>/<stem>.png per image; returns the number of unreadable files."""
        from depotr.data.image_io import read_image_bgr

        os.makedirs(output, exist_ok=True)
        failures = 0
        for path in tqdm(paths, desc="images"):
            try:
                image = read_image_bgr(path)
            except (OSError, ValueError) as e:
                failures += 1
                tqdm.write(f"skipping {path}: cannot read image ({e})", file=sys.stderr)
                continue
            instances = self(image, image_id_from_path(path))
            out_path = output_path(path, output)
            if not cv2.imwrite(out_path, draw(image, instances, self.metadata)):
                raise OSError(f"cannot write {out_path}")
            tqdm.write(f"{path} -> {out_path}: {len(instances)} persons")
        return failures

    def run_video(self, capture: cv2.VideoCapture, out_path: str) -> None:
        """Writes every frame of ``capture``, drawn, to the mp4 ``out_path``."""
        fps = capture.get(cv2.CAP_PROP_FPS) or 30.0
        height, width = drawn_size(
            int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT)), int(capture.get(cv2.CAP_PROP_FRAME_WIDTH))
        )
        size = (width, height)
        writer = cv2.VideoWriter(out_path, cv2.VideoWriter_fourcc(*"mp4v"), fps, size)
        if not writer.isOpened():
            raise OSError(f"cannot write the video {out_path}")
        with tqdm(total=max(int(capture.get(cv2.CAP_PROP_FRAME_COUNT)), 0) or None, desc="frames") as progress:
            index = 0
            while True:
                ok, frame = capture.read()
                if not ok:
                    break
                writer.write(draw(frame, self(frame, index), self.metadata))
                index += 1
                progress.update()
        writer.release()
        print(f"{index} frames -> {out_path}")

    def run_webcam(self, capture: cv2.VideoCapture) -> None:
        """Shows the drawn frames of ``capture`` in a window until Esc or the end of the stream."""
        index = 0
        while cv2.waitKey(1) != 27:
            ok, frame = capture.read()
            if not ok:
                break
            cv2.imshow(WINDOW_NAME, draw(frame, self(frame, index), self.metadata))
            index += 1
        cv2.destroyAllWindows()


def main(argv: Optional[List[str]] = None) -> int:
    parser = get_parser()
    args = parse_command_line(parser, argv)
    if not args.webcam and not args.output:
        parser.error("--output is required with --input and --video-input")
    from detectron2.utils.logger import setup_logger

    from depotr import Predictor
    from depotr.config import load_depotr_config

    setup_logger(name="depotr")
    paths = expand_inputs(args.input) if args.input else []
    problems = shared_outputs(paths, args.output)
    for flag, path, folder in (("--output", args.output, True), ("--save-json", args.save_json, False)):
        reason = check_writable(path, folder) if path else None
        if reason is not None:
            problems.append(f"cannot write {flag} {path}: {reason}")
    if problems:
        for problem in problems:
            print(f"error: {problem}", file=sys.stderr)
        return 1
    capture = None
    if args.video_input or args.webcam:  # opened first: a bad video fails before the model loads
        capture = cv2.VideoCapture(0 if args.webcam else args.video_input)
        if not capture.isOpened():
            print(f"error: cannot open {'the webcam' if args.webcam else args.video_input}", file=sys.stderr)
            return 1

    predictor = Predictor(load_depotr_config(args.config_file, config_overrides(args)), args.random_weights)
    demo = Demo(predictor, args.confidence_threshold)
    failures = 0
    if args.input:
        failures = demo.run_images(paths, args.output)
    elif args.video_input:
        os.makedirs(args.output, exist_ok=True)
        stem = os.path.splitext(os.path.basename(args.video_input))[0]
        demo.run_video(capture, os.path.join(args.output, stem + ".mp4"))
    else:
        demo.run_webcam(capture)
    if capture is not None:
        capture.release()

    if args.save_json:
        atomic_write(args.save_json, lambda f: f.write(json.dumps(demo.results).encode()))
        print(f"{len(demo.results)} persons -> {args.save_json}")
    if failures:
        print(f"{failures} image(s) could not be read", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(run_main(main))
