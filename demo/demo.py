#!/usr/bin/env python
r"""Draws DePOTR's predicted skeletons on images, a video or the webcam (Detectron2 demo conventions).

    python demo/demo.py --config-file configs/depotr_hm_r18_synthetic.yaml \
        --input photos/*.jpg --output out/ --save-json out/keypoints.json \
        --opts MODEL.WEIGHTS output/depotr_hm_r18_synthetic/model_final.pth
    python demo/demo.py --config-file ... --video-input walk.mp4 --output out/ --opts MODEL.WEIGHTS ...
    python demo/demo.py --config-file ... --webcam --opts MODEL.WEIGHTS ...

Person boxes (``depotr.Predictor``): from a box file, --boxes detections.json, COCO detection
results ({image_id, category_id 1 or --image-ids' category, bbox XYWH, score}), image_id = the
image's id (below) or, for a video, the frame index (0-based), an image or frame without an entry
having no person; else the Detectron2 person detector of MODEL.DEPOTR.DETECTOR when it is configured, e.g.
    --opts MODEL.DEPOTR.DETECTOR.CONFIG_FILE model_zoo:COCO-Detection/faster_rcnn_R_50_FPN_3x.yaml \
           MODEL.DEPOTR.DETECTOR.WEIGHTS model_zoo:COCO-Detection/faster_rcnn_R_50_FPN_3x.yaml
otherwise the whole image is one person (the single-person mode of a top-down model).

Video: --track gives each person a persistent id (depotr.tracking, TEST.TRACK), drawn in its own
colour and saved as "track_id"; --smooth (implies --track) also smooths the keypoints with a
One-Euro filter per track (TEST.SMOOTH) at the video's frame rate (30 fps for images, and for a
video or webcam that has none).
    python demo/demo.py --config-file ... --video-input walk.mp4 --output out/walk_tracked.mp4 \
        --smooth --boxes walk_boxes.json --save-json out/walk.json --opts MODEL.WEIGHTS ...

Outputs: <output>/<file stem>.png per image (an image with no person is written unchanged), or for
one input image --output itself when it ends in an image extension (photo_drawn.jpg: a JPEG); for a
video, --output ending in .mp4, .avi, .mov, .mkv or .m4v is the output file, otherwise
<output>/<video stem>.mp4 (mp4v, the input's frame rate, 30 when it has none, and size); another
video extension (.webm, .mpg, .wmv, .ts, ...) is an error naming these five. The webcam is shown
in a window (Esc or Ctrl-C quits, "stopped (Ctrl-C) after N frames"; --save-json is then written
as at any end); it needs an OpenCV with a GUI (pip install opencv-python: the
opencv-python-headless that DePOTR installs has none), checked before the model loads. Images and
frames whose long side exceeds 1920 px are downscaled to 1920 px for drawing (the skeletons scaled
with them; the Visualizer's time and memory grow with the image); keypoints are predicted, and
written to --save-json, at full resolution.
--save-json writes COCO keypoint results, one per person: image_id = the file name
stem (an int when it is all digits, as in COCO's 000000397133.jpg), or with --image-ids gt.json
the id of the image of the same file name in that COCO file (so that the results can be
evaluated against it, e.g. by tools/analyze_results.py), or the frame index for a video / the
webcam; category_id 1, or with --image-ids the id of that file's one category (your own
keypoints' category, e.g. 3; --boxes then keeps the boxes of that category); keypoints
[x, y, score] x K in COCO's pixel-index convention (Detectron2's instances_to_coco_json,
x - 0.5); bbox XYWH; score; with --track, track_id.

Folders are read one level deep (their subfolders are skipped) and only their image files
(by extension; the number left out is printed); files named explicitly are always read. The files
of a folder or of a quoted glob ("frames/*.png", which the shell would sort as text) are read in
the order of their numbers (frame2.png before frame10.png: with --track they are a video's
frames); files named one by one in the order given (with --track, a warning when that is not
the order of their numbers). Before
the model is loaded, the demo checks that every input exists, that there is at least one image,
that no two inputs share a file name stem (which would give them one output file and one
image_id), the box and image-id files, that a video can be opened and has a frame, and the
config (with --track, TEST.TRACK and TEST.SMOOTH too; a mistake there: one line, status 2), then
(only when all these are fine, so that a mistyped input leaves no new folder) that every output
can be written, making its missing folders; otherwise it stops with an error naming them (status 1). An image file that
cannot be read, or a JPEG that ends early, is skipped with a message naming it, and the demo then
exits with status 1; so are video frames whose size differs from the first frame's (with --track,
images whose size differs from the first image's: they are a video's frames), and a video
that ends before the number of frames its file announces (a file cut short, a frame that cannot be
decoded) gives a warning naming it, "read N of the M frames it announces", and status 1; the frames
read are written. A box file naming frames the video does not have (neither read nor announced)
is an error (status 1).
Outputs are written whole or not at all (depotr.file_io).
Ctrl-C during a video stops it as the webcam's: "stopped (Ctrl-C) after N of the M frames", the
frames done are written (the video of those frames, --save-json of the same frames) and the
status is 130 (the shell's status of a Ctrl-C: the video is not done); so do images ("after N of
the M images": their drawings and --save-json). SIGTERM (kill) stops the
demo with status 143, the output being written removed (no .tmp-* file is left behind).

Config overrides: --opts KEY VALUE ... or bare KEY VALUE ... after the options (every DePOTR
command accepts both). An empty MODEL.WEIGHTS is an error unless --random-weights is given. A
config mistake (an unknown key, a missing file) is one line "error: ..." and status 2.
"""

import argparse
import contextlib
import glob
import itertools
import json
import math
import os
import re
import signal
import sys
import threading
from typing import TYPE_CHECKING, Dict, Iterator, List, Optional, Tuple, Union

import cv2
import numpy as np
from tqdm import tqdm

from depotr.cli import add_config_arguments, config_overrides, parse_command_line, run_main
from depotr.file_io import atomic_output_path, atomic_write, output_problem, write_image

if TYPE_CHECKING:  # torch and Detectron2 are imported after the arguments are parsed (fast --help)
    from detectron2.config import CfgNode
    from detectron2.structures import Instances

    from depotr import Predictor
    from depotr.tracking import PoseTracker

COCO_PERSON_CATEGORY_ID = 1
# Long side, in pixels, of the drawn images and video frames: larger inputs are downscaled for
# drawing (the keypoints are predicted, and written to --save-json, at full resolution).
MAX_DRAW_SIZE = 1920
WINDOW_NAME = "DePOTR"
# Files of a folder or glob that are read as images (OpenCV's imread formats), lower case.
IMAGE_EXTENSIONS = (".bmp", ".jpg", ".jpeg", ".jpe", ".jp2", ".png", ".webp", ".tif", ".tiff", ".pbm", ".pgm", ".ppm")
# An --output ending in one of these is the output file of a video, not a folder.
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".m4v")
# Other video extensions: an --output ending in one is an error, not a folder (the demo's mp4v
# video is not written to them: WebM, FLV, Ogg and GIF refuse it, MPEG-TS is not read back).
OTHER_VIDEO_EXTENSIONS = tuple(
    ".webm .mpg .mpeg .m2v .wmv .asf .flv .f4v .ts .mts .m2ts .vob .ogv .3gp .3g2 .gif .divx .mxf .rm .rmvb".split()
)
# Frame rate of an output video whose input has none (a webcam, a container without one).
DEFAULT_FPS = 30.0
ImageId = Union[int, str]
PersonBoxes = Dict[int, Tuple[np.ndarray, np.ndarray]]  # image id -> (boxes (N, 4) XYXY, scores (N,))


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--input", nargs="+", help="image files, globs or folders")
    source.add_argument("--video-input", help="a video file")
    source.add_argument(
        "--webcam", action="store_true", help="the first webcam, shown in a window (needs an OpenCV with a GUI)"
    )
    parser.add_argument(
        "--output",
        help="folder for the drawn images / video, or the file of one image (.png, .jpg, ...) or of the video "
        "(.mp4, .avi, .mov, .mkv, .m4v; other video extensions are an error); required unless --webcam",
    )
    parser.add_argument(
        "--confidence-threshold",
        type=float,
        help="drop persons whose score (box score x mean confident keypoint score) is below this; "
        "default: keep every person (a heatmap model's scores can be below 0)",
    )
    parser.add_argument("--save-json", metavar="PATH", help="also write the persons as COCO keypoint results")
    parser.add_argument(
        "--boxes",
        metavar="JSON",
        help="person boxes: COCO detection results, image_id = the image id (--input) or frame index (video)",
    )
    parser.add_argument(
        "--image-ids",
        metavar="COCO_JSON",
        help="take each image's id from the image of its file name in this COCO file",
    )
    parser.add_argument("--track", action="store_true", help="persistent person ids across frames (TEST.TRACK)")
    parser.add_argument(
        "--smooth", action="store_true", help="--track and One-Euro smoothing of the keypoints (TEST.SMOOTH)"
    )
    add_config_arguments(parser)
    return parser


def natural_key(path: str) -> List[Union[str, int]]:
    """Sort key of ``path`` that orders its numbers by value: frame2.png before frame10.png (the
    frames of a video written as ffmpeg's frame%d.png are tracked in their order)."""
    return [int(part) if part.isdecimal() else part for part in re.split(r"(\d+)", path)]


def expand_inputs(patterns: List[str]) -> Tuple[List[str], int, List[str]]:
    """Files, globs and folders (their files, in :func:`natural_key` order; not their subfolders)
    -> file paths, each file once. Files of a folder or glob are kept only with an ``IMAGE_EXTENSIONS`` extension;
    files named explicitly always.

    Returns:
        the paths, the number of files of folders / globs left out (not images), and the
        patterns that match nothing.
    """
    paths, seen, left_out, missing = [], set(), 0, []
    for pattern in patterns:
        pattern = os.path.expanduser(pattern)
        if os.path.isdir(pattern):
            found = sorted((os.path.join(pattern, f) for f in os.listdir(pattern)), key=natural_key)
        elif glob.has_magic(pattern):
            found = sorted(glob.glob(pattern), key=natural_key)
        else:
            found = [pattern] if os.path.exists(pattern) else []
        if not found and not os.path.isdir(pattern):
            missing.append(pattern)
        for path in found:
            if os.path.isdir(path) or os.path.realpath(path) in seen:
                continue
            if path != pattern and not path.lower().endswith(IMAGE_EXTENSIONS):
                left_out += 1
                continue
            seen.add(os.path.realpath(path))
            paths.append(path)
    return paths, left_out, missing


def image_ids_from_coco(coco_file: str, paths: List[str]) -> Tuple[Dict[str, int], int]:
    """path -> the id of the image of the same file name (base name) in the COCO file
    ``coco_file``, and the id of its category when it has exactly one (a keypoint file's, e.g. 3
    for a dataset of ``register_keypoint_dataset``), else COCO's person (1); a ValueError naming
    the paths it does not have."""
    with open(coco_file) as f:
        try:
            coco = json.load(f)
            by_name = {os.path.basename(image["file_name"]): int(image["id"]) for image in coco["images"]}
            categories = coco.get("categories") or []
            category_id = int(categories[0]["id"]) if len(categories) == 1 else COCO_PERSON_CATEGORY_ID
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise ValueError(f"--image-ids {coco_file}: not a COCO file with images {{id, file_name}} ({e})") from e
    unknown = [path for path in paths if os.path.basename(path) not in by_name]
    if unknown:
        raise ValueError(
            f"--image-ids {coco_file} has no image named like {len(unknown)} input(s): {', '.join(unknown[:5])}"
            + (" ..." if len(unknown) > 5 else "")
        )
    return {path: by_name[os.path.basename(path)] for path in paths}, category_id


def load_boxes(box_file: str, category_id: int = COCO_PERSON_CATEGORY_ID) -> PersonBoxes:
    """The person boxes of a COCO detection results file (``load_precomputed_boxes``: category
    ``category_id``, non-empty boxes), per image id; prints what was dropped."""
    from depotr.data.datasets import load_precomputed_boxes

    boxes, stats = load_precomputed_boxes(box_file, category_id)
    print(
        f"--boxes {box_file}: {stats['kept']} person boxes of {stats['total']} detections "
        f"({stats['dropped_category']} not of category {category_id}, {stats['dropped_empty']} empty, left out)"
    )
    return boxes


def video_output_path(video: str, output: str) -> str:
    """``output`` itself when it ends in a ``VIDEO_EXTENSIONS`` extension, else
    <output>/<video stem>.mp4 (an ``OTHER_VIDEO_EXTENSIONS`` one is refused by :func:`check_inputs`)."""
    if output.lower().endswith(VIDEO_EXTENSIONS):
        return output
    return os.path.join(output, os.path.splitext(os.path.basename(video))[0] + ".mp4")


def video_fps(capture: Optional[cv2.VideoCapture]) -> float:
    """The frame rate of ``capture`` when it has one (finite and > 0), else ``DEFAULT_FPS``."""
    fps = capture.get(cv2.CAP_PROP_FPS) if capture is not None else 0.0
    return fps if math.isfinite(fps) and fps > 0 else DEFAULT_FPS


def gui_problem() -> Optional[str]:
    """Why OpenCV cannot show the webcam's window (None: it can): opencv-python-headless, which
    DePOTR installs, has no GUI. Opens and closes the window."""
    try:
        cv2.namedWindow(WINDOW_NAME)
        cv2.destroyWindow(WINDOW_NAME)
    except cv2.error as e:
        reason = str(e).strip().split("error: ", 1)[-1] or type(e).__name__  # without OpenCV's source line
        return (
            "--webcam needs an OpenCV with a GUI (pip install opencv-python, after pip uninstall "
            f"opencv-python-headless): this one cannot open a window ({reason})"
        )
    return None


def announced_frames(capture: cv2.VideoCapture) -> Optional[int]:
    """The number of frames the video of ``capture`` announces (its container's frame count); None
    when it does not say (a webcam, a stream)."""
    count = capture.get(cv2.CAP_PROP_FRAME_COUNT)
    return int(count) if math.isfinite(count) and count >= 1 else None


def read_frames(capture: cv2.VideoCapture) -> Iterator[np.ndarray]:
    """The (H, W, 3) uint8 BGR frames of ``capture`` until it ends (its first failed read)."""
    while True:
        ok, frame = capture.read()
        if not ok:
            return
        yield frame


def is_image_file(output: str) -> bool:
    """Whether ``--output`` of ``--input`` is the file of one image (it ends in an
    ``IMAGE_EXTENSIONS`` extension), not a folder."""
    return output.lower().endswith(IMAGE_EXTENSIONS)


def output_path(path: str, output: str) -> str:
    """Where the drawing of image ``path`` goes: ``output`` itself when :func:`is_image_file`,
    else <output>/<file name stem>.png."""
    if is_image_file(output):
        return output
    return os.path.join(output, os.path.splitext(os.path.basename(path))[0] + ".png")


def shared_outputs(paths: List[str], output: str, image_ids: Dict[str, ImageId]) -> List[str]:
    """Messages for the inputs that would share an output file or a json image_id (empty: none)."""
    problems = []
    for what, key in (("the output", lambda p: output_path(p, output)), ("the image_id", image_ids.get)):
        groups: Dict[object, List[str]] = {}
        for path in paths:
            groups.setdefault(key(path), []).append(path)
        problems += [
            f"inputs {', '.join(group)} would share {what} {value!r}"
            for value, group in groups.items()
            if len(group) > 1
        ]
    return problems


def image_id_from_path(path: str) -> Union[int, str]:
    """The file name stem, as an int when it is all digits (COCO's 000000397133.jpg -> 397133)."""
    stem = os.path.splitext(os.path.basename(path))[0]
    return int(stem) if stem.isdecimal() else stem


def size_change(size: Tuple[int, int], first: Tuple[int, int], what: str = "frame") -> Optional[str]:
    """Why an image of (H, W) ``size`` is skipped in a sequence whose first ``what`` is ``first``
    (None: the same size)."""
    if size == first:
        return None
    return f"its size {size[1]}x{size[0]} differs from the first {what}'s {first[1]}x{first[0]}"


def drawn_size(height: int, width: int) -> tuple:
    """(H', W') a (height, width) image is drawn at: its long side at most MAX_DRAW_SIZE."""
    scale = min(1.0, MAX_DRAW_SIZE / max(height, width))
    return max(1, round(height * scale)), max(1, round(width * scale))


def draw(image: np.ndarray, instances: "Instances", metadata) -> np.ndarray:
    """The (H, W, 3) uint8 BGR ``image`` with the persons' boxes and skeletons drawn by
    Detectron2's ``Visualizer``, at :func:`drawn_size`: an image whose long side exceeds
    ``MAX_DRAW_SIZE`` is downscaled first (``cv2.INTER_AREA``) and the boxes and keypoints
    scaled with it (the Visualizer's time and memory grow with the image; the Predictor and the
    json work at full resolution). Tracked persons: box and label "id <track_id>" in
    the id's colour of Detectron2's colormap. With no person the (downscaled) image itself."""
    from detectron2.structures import Boxes, Instances
    from detectron2.utils.colormap import colormap
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
    visualizer = Visualizer(image[:, :, ::-1], metadata)
    if instances.has("track_id"):
        ids = instances.track_id.tolist()
        palette = colormap(rgb=True, maximum=1)
        drawn = visualizer.overlay_instances(
            boxes=instances.pred_boxes,
            labels=[f"id {i}" for i in ids],
            keypoints=instances.pred_keypoints,
            assigned_colors=[palette[i % len(palette)] for i in ids],
        )
    else:
        drawn = visualizer.draw_instance_predictions(instances)
    return np.ascontiguousarray(drawn.get_image()[:, :, ::-1])


def coco_results(instances: "Instances", image_id: ImageId, category_id: int = COCO_PERSON_CATEGORY_ID) -> List[Dict]:
    """COCO keypoint results of one image (Detectron2's ``instances_to_coco_json``, category
    ``category_id``, keypoints x - 0.5; ``track_id`` when the persons are tracked). ``instances``
    are not modified (instances_to_coco_json shifts the keypoints in place: it gets a copy)."""
    from detectron2.evaluation.coco_evaluation import instances_to_coco_json
    from detectron2.structures import Instances

    copy = Instances(instances.image_size, **instances.get_fields())
    if copy.has("pred_keypoints"):
        copy.pred_keypoints = instances.pred_keypoints.clone()
    results = instances_to_coco_json(copy, image_id)
    track_ids = instances.track_id.tolist() if instances.has("track_id") else [None] * len(results)
    for result, track_id in zip(results, track_ids):
        result["category_id"] = category_id
        if track_id is not None:
            result["track_id"] = track_id
    return results


class Demo:
    """Predicts the persons of an image (in the boxes of ``boxes`` when given), keeps those
    scoring >= ``threshold`` (None: all), tracks them when a ``tracker`` is given, draws them and collects
    their COCO results."""

    def __init__(
        self,
        predictor: "Predictor",
        threshold: Optional[float],
        tracker: Optional["PoseTracker"] = None,
        boxes: Optional[PersonBoxes] = None,
        box_file: Optional[str] = None,
        category_id: int = COCO_PERSON_CATEGORY_ID,
    ):
        """``box_file``: the file ``boxes`` were read from, named in errors; ``category_id``: that
        of the results."""
        from detectron2.data import Metadata

        from depotr.data import drawing_metadata

        self.predictor = predictor
        self.threshold = threshold
        self.tracker = tracker
        self.boxes = boxes
        self.box_file = box_file
        self.category_id = category_id
        self.metadata = Metadata(name="depotr_demo").set(**drawing_metadata(predictor.cfg))
        self.results: List[Dict] = []
        self.stopped = False  # a video or image sequence stopped with Ctrl-C

    def __call__(self, image: np.ndarray, image_id: ImageId) -> "Instances":
        """Returns the kept persons (Instances) of a (H, W, 3) uint8 BGR image."""
        boxes, scores = (None, None) if self.boxes is None else self.boxes.get(image_id, (np.zeros((0, 4)), None))
        instances = self.predictor(image, boxes, scores, image_id=image_id)  # named in the Predictor's messages
        if self.threshold is not None:
            instances = instances[instances.scores >= self.threshold]
        if self.tracker is not None:
            instances = self.tracker.update(instances)
        self.results += coco_results(instances, image_id, self.category_id)
        return instances

    def run_images(self, paths: List[str], output: str, image_ids: Dict[str, ImageId]) -> int:
        """Writes each image's drawing to :func:`output_path` (whole or not at all); returns the
        number of images skipped: unreadable files and, when tracking, images whose size differs
        from the first image's (as a video's frames; each one ages the tracker's tracks,
        ``PoseTracker.skip_frame``). Ctrl-C (KeyboardInterrupt) stops as in :meth:`run_video`:
        the images done are kept in ``results`` (those of an image cut short are dropped), and
        ``stopped`` is set."""
        from depotr.data.image_io import read_image_bgr

        os.makedirs(os.path.dirname(os.path.abspath(output)) if is_image_file(output) else output, exist_ok=True)
        failures, size, done, kept = 0, None, 0, len(self.results)
        try:
            for index, path in enumerate(tqdm(paths, desc="images")):
                try:
                    image = read_image_bgr(path)
                    problem = None
                except (OSError, ValueError) as e:
                    problem = f"cannot read image ({e})"
                if problem is None and self.tracker is not None:
                    size = size or image.shape[:2]
                    problem = size_change(image.shape[:2], size, "image")
                if problem is not None:
                    tqdm.write(f"skipping {path}: {problem}", file=sys.stderr)
                    if self.tracker is not None:
                        self.tracker.skip_frame()  # the images are a video's frames: as run_video's skipped ones
                else:
                    instances = self(image, image_ids[path])
                    out_path = output_path(path, output)
                    write_image(out_path, draw(image, instances, self.metadata))
                    tqdm.write(f"{path} -> {out_path}: {len(instances)} persons")
                # image done (one assignment: a Ctrl-C leaves the three counts consistent)
                done, failures, kept = index + 1, failures + (problem is not None), len(self.results)
        except KeyboardInterrupt:
            self.stopped = True
            del self.results[kept:]  # an image predicted but not written
            tqdm.write(f"stopped (Ctrl-C) after {done} of the {len(paths)} images")
        return failures

    def run_video(
        self,
        frames: Iterator[np.ndarray],
        out_path: str,
        fps: float,
        total: Optional[int] = None,
        name: str = "the video",
    ) -> int:
        """Writes the drawn ``frames`` to the mp4 ``out_path`` (whole or not at all), at ``fps``
        and the first frame's size; image_id = the frame index. A frame skipped for its size still
        ages the tracker's tracks (``PoseTracker.skip_frame``). ``total``: the number of frames
        the video ``name`` announces (None: unknown); fewer frames read is a warning naming it.
        Ctrl-C (KeyboardInterrupt) stops the video as the webcam's: the frames done (drawn and
        written) make the output and ``results`` (those of a frame cut short are dropped), and
        ``stopped`` is set.

        Returns:
            the number of frames missing from the output: those skipped because their size
            differs from the first frame's, and those ``total`` announces beyond the frames read
            (not counted when stopped).
        Raises:
            ValueError: no frames (none done when stopped), or box file entries for frames the
                video does not have (beyond those read and those ``total`` announces; not
                checked when stopped; nothing is written).
        """
        size, skipped, count, kept = None, 0, 0, len(self.results)
        with atomic_output_path(out_path) as tmp_path:
            writer = None
            try:
                try:
                    for index, frame in enumerate(tqdm(frames, total=total, desc="frames")):
                        if size is None:
                            size = frame.shape[:2]
                            writer = cv2.VideoWriter(
                                tmp_path, cv2.VideoWriter_fourcc(*"mp4v"), fps, drawn_size(*size)[::-1]
                            )
                            if not writer.isOpened():
                                raise OSError(f"cannot write the video {out_path}")
                        problem = size_change(frame.shape[:2], size)
                        if problem is not None:
                            tqdm.write(f"skipping frame {index}: {problem}", file=sys.stderr)
                            if self.tracker is not None:
                                self.tracker.skip_frame()  # MAX_LOST_FRAMES and the smoothing count video frames
                        else:
                            writer.write(draw(frame, self(frame, index), self.metadata))
                        # frame done (one assignment: a Ctrl-C leaves the three counts consistent)
                        count, skipped, kept = index + 1, skipped + (problem is not None), len(self.results)
                except KeyboardInterrupt:
                    self.stopped = True
                    del self.results[kept:]  # a frame predicted but not written
                    of_total = f" of the {total}" if total is not None else ""
                    tqdm.write(f"stopped (Ctrl-C) after {count}{of_total} frames of {name}")
                if count == 0:
                    raise ValueError(
                        "stopped (Ctrl-C) before the first frame was done"
                        if self.stopped
                        else "the video has no frames"
                    )
                unread = total - count if total is not None and total > count and not self.stopped else 0
                if unread:
                    tqdm.write(
                        f"warning: {name}: read {count} of the {total} frames it announces (the file ends early "
                        "or a frame cannot be decoded)",
                        file=sys.stderr,
                    )
                frames_had = count + unread  # a frame announced but not read is the video's, too
                # stopped: the frames not reached are unknown (the video may have them)
                beyond = [] if self.stopped else sorted(i for i in self.boxes or {} if not 0 <= i < frames_had)
                if beyond:
                    box_file = f"--boxes {self.box_file}" if self.box_file else "the box file"
                    raise ValueError(
                        f"{box_file} has boxes for frame(s) {beyond[:10]}{' ...' if len(beyond) > 10 else ''} "
                        f"but the video has frames 0-{frames_had - 1}"
                    )
            finally:
                if writer is not None:
                    writer.release()
        print(f"{count - skipped} frames -> {out_path}")
        return skipped + unread

    def run_webcam(self, frames: Iterator[np.ndarray], capture: Optional[cv2.VideoCapture] = None) -> None:
        """Shows the drawn ``frames`` in a window until Esc, Ctrl-C (KeyboardInterrupt) or the end
        of the stream; then closes the window and releases ``capture`` (whatever ends the loop)."""
        shown = 0
        try:
            for index, frame in enumerate(frames):
                cv2.imshow(WINDOW_NAME, draw(frame, self(frame, index), self.metadata))
                shown += 1
                if cv2.waitKey(1) == 27:
                    break
        except KeyboardInterrupt:
            print(f"stopped (Ctrl-C) after {shown} frames")
        finally:
            if capture is not None:
                capture.release()
            cv2.destroyAllWindows()


class Terminated(BaseException):
    """SIGTERM, raised by :func:`sigterm_raises` (a BaseException, as KeyboardInterrupt: no
    ``except Exception`` catches it)."""


@contextlib.contextmanager
def sigterm_raises() -> Iterator[None]:
    """While the block runs, SIGTERM (``kill``, a job scheduler's stop) raises :class:`Terminated`
    in the main thread instead of ending the process at once, so that the ``finally`` blocks run:
    the temporary file of the output being written (``.tmp-<random>-<name>``, see
    ``depotr.file_io``) is removed by the process that owns it, and the capture released. The
    previous handler is restored after. Outside the main thread (Python sets handlers only there)
    it does nothing.

    Why not have the next run delete such leftovers (``depotr.file_io.remove_temporary_files``):
    that is safe only where no other process can be writing into the folder, and the demo holds
    no lock on its output folder: a second demo writing there at the same time would lose its
    temporary file. A SIGKILL or a crash still leaves one behind; delete it once no demo writes
    into that folder."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def terminate(signum, frame):
        raise Terminated()

    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def check_inputs(
    args: argparse.Namespace,
) -> Tuple[List[str], List[str], Dict[str, ImageId], Optional[PersonBoxes], int]:
    """Everything about the inputs and arguments that can be checked before the model loads
    (nothing is created: the outputs are :func:`check_outputs`').

    Returns:
        the problems (error messages; empty: none), the image paths, their image ids, the
        person boxes of --boxes (None without it) and the category id of boxes and results
        (:func:`image_ids_from_coco`'s with --image-ids, else 1).
    """
    paths, image_ids, problems, boxes, category_id = [], {}, [], None, COCO_PERSON_CATEGORY_ID
    if args.video_input and not os.path.isfile(args.video_input):
        what = "is a folder, not a video file" if os.path.isdir(args.video_input) else "does not exist"
        problems.append(f"--video-input {args.video_input} {what}")
    if args.input:
        paths, left_out, missing = expand_inputs(args.input)
        problems += [f"input {pattern} does not exist (no file matches it)" for pattern in missing]
        if left_out:
            print(
                f"left out {left_out} file(s) of the input folders that are not images ({', '.join(IMAGE_EXTENSIONS)})"
            )
        if not paths and not missing:
            problems.append(f"no images found in {' '.join(args.input)}")
        in_order = sorted(paths, key=natural_key)
        if (args.track or args.smooth) and paths != in_order:
            first = next(i for i, (path, other) in enumerate(zip(paths, in_order)) if path != other)
            print(
                f"warning: the images are tracked in the order given, {paths[first]} before {in_order[first]}, not "
                "in the order of their numbers (the shell sorts a glob as text: quote it, or give the folder)"
            )
        try:
            if args.image_ids:
                image_ids, category_id = image_ids_from_coco(args.image_ids, paths)
        except OSError as e:
            problems.append(f"cannot read --image-ids: {e}")
        except ValueError as e:
            problems.append(str(e))
        image_ids = image_ids or {path: image_id_from_path(path) for path in paths}
        if is_image_file(args.output) and len(paths) > 1:
            problems.append(
                f"--output {args.output} is the file of one input image, but there are {len(paths)}: give a folder"
            )
        else:
            problems += shared_outputs(paths, args.output, image_ids)
    if args.boxes:
        try:
            boxes = load_boxes(args.boxes, category_id)
        except (OSError, ValueError) as e:
            problems.append(f"--boxes: {e}")
        unknown = set(boxes or {}) - set(image_ids.values())
        if paths and unknown:
            print(f"--boxes: left out the boxes of {len(unknown)} image id(s) that are not among the inputs")
        named = [path for path, image_id in image_ids.items() if not isinstance(image_id, int)]
        if named:
            problems.append(
                f"--boxes needs numeric image ids, but {', '.join(named[:5])} have none: name the images by number "
                "(000123.jpg) or pass --image-ids"
            )
    if args.video_input and args.output.lower().endswith(OTHER_VIDEO_EXTENSIONS):
        problems.append(
            f"--output {args.output}: the demo writes a video (mp4v) only as {', '.join(VIDEO_EXTENSIONS)}, not "
            f"{os.path.splitext(args.output)[1]}; or give a folder"
        )
    return problems, paths, image_ids, boxes, category_id


def check_outputs(args: argparse.Namespace) -> List[str]:
    """The problems (error messages; empty: none) of --output and --save-json; makes their
    missing folders, so call it once the inputs are checked (a mistyped input leaves no folder)."""
    problems = []
    # --output is a file (else a folder): of the video, or of one image
    output_file = bool(args.output) and args.output.lower().endswith(
        VIDEO_EXTENSIONS if args.video_input else IMAGE_EXTENSIONS
    )
    outputs = [("--save-json", args.save_json, False)]
    if not (args.video_input and args.output.lower().endswith(OTHER_VIDEO_EXTENSIONS)):  # refused, not a folder
        outputs.insert(0, ("--output", args.output, not output_file))
    for flag, path, folder in outputs:
        reason = output_problem(path, folder, create=True) if path else None  # makes the folders
        if reason is not None:
            problems.append(f"cannot write {flag} {path}: {reason}")
    return problems


def main(argv: Optional[List[str]] = None) -> int:
    parser = get_parser()
    args = parse_command_line(parser, argv)
    if not args.webcam and not args.output:
        parser.error("--output is required with --input and --video-input")
    if args.image_ids and not args.input:
        parser.error("--image-ids goes with --input (video frames are numbered)")
    from detectron2.utils.logger import setup_logger

    setup_logger(name="depotr")
    problems, paths, image_ids, boxes, category_id = check_inputs(args)
    if args.webcam and not problems:
        problem = gui_problem()
        problems += [problem] if problem else []
    capture, frames = None, None
    if not problems and (args.video_input or args.webcam):  # a bad video fails before the model loads
        name = "the webcam" if args.webcam else args.video_input
        capture = cv2.VideoCapture(0 if args.webcam else args.video_input)
        ok, first = capture.read() if capture.isOpened() else (False, None)
        if not capture.isOpened():
            why = ""
            if args.video_input:
                empty = os.path.getsize(args.video_input) == 0
                why = ": the file is empty" if empty else ": not a video, or one this OpenCV cannot read"
            problems.append(f"cannot open {name}{why}")
        elif not ok:
            problems.append(f"{name} has no frames (or its first frame cannot be decoded)")
        frames = itertools.chain([first], read_frames(capture))
    cfg, tracker = None, None
    if not problems:
        try:  # a config mistake (ConfigError: one line, status 2) leaves no new folder either
            cfg, tracker = demo_config(args, capture)
        except BaseException:
            if capture is not None:
                capture.release()
            raise
        problems += check_outputs(args)  # makes the output folders: the inputs are fine
    if problems:
        if capture is not None:
            capture.release()
        for problem in problems:
            print(f"error: {problem}", file=sys.stderr)
        return 1
    try:
        with sigterm_raises():
            return run_demo(args, cfg, tracker, capture, frames, paths, image_ids, boxes, category_id)
    except Terminated:
        print("error: terminated (SIGTERM); the output being written was removed", file=sys.stderr)
        return 128 + signal.SIGTERM
    finally:
        if capture is not None:
            capture.release()


def demo_config(
    args: argparse.Namespace, capture: Optional[cv2.VideoCapture]
) -> Tuple["CfgNode", Optional["PoseTracker"]]:
    """The config of the options (with --track or --smooth, :func:`tracking_config`'s) and the
    tracker (None without them), at the video's frame rate. Raises ConfigError."""
    from depotr.config import load_depotr_config
    from depotr.tracking import PoseTracker, tracking_config

    cfg = load_depotr_config(args.config_file, config_overrides(args))
    if not (args.track or args.smooth):
        return cfg, None
    cfg = tracking_config(cfg)  # OKS-NMS as TEST.TRACK.OKS_NMS_THRESH says (off by default)
    return cfg, PoseTracker.from_config(cfg, fps=video_fps(capture), smooth=args.smooth)


def run_demo(
    args: argparse.Namespace,
    cfg: "CfgNode",
    tracker: Optional["PoseTracker"],
    capture: Optional[cv2.VideoCapture],
    frames: Optional[Iterator[np.ndarray]],
    paths: List[str],
    image_ids: Dict[str, ImageId],
    boxes: Optional[PersonBoxes],
    category_id: int = COCO_PERSON_CATEGORY_ID,
) -> int:
    """Loads the model and runs the inputs :func:`main` checked with ``cfg`` and ``tracker`` of
    :func:`demo_config` (``category_id``: that of the boxes and results); returns the exit status."""
    from depotr import Predictor

    fps = video_fps(capture)
    demo = Demo(Predictor(cfg, args.random_weights), args.confidence_threshold, tracker, boxes, args.boxes, category_id)
    failures = 0
    if args.input:
        failures = demo.run_images(paths, args.output, image_ids)
    elif args.video_input:
        out_path = video_output_path(args.video_input, args.output)
        os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
        try:
            failures = demo.run_video(frames, out_path, fps, announced_frames(capture), args.video_input)
        except ValueError as e:
            print(f"error: {args.video_input}: {e}; nothing written", file=sys.stderr)
            return 128 + signal.SIGINT if demo.stopped else 1  # Ctrl-C before the first frame: still 130
    else:
        demo.run_webcam(frames, capture)

    if args.save_json:
        atomic_write(args.save_json, lambda f: f.write(json.dumps(demo.results).encode()))
        print(f"{len(demo.results)} persons -> {args.save_json}")
    if failures:
        print(f"{failures} {'image' if args.input else 'frame'}(s) were skipped or could not be read", file=sys.stderr)
    if demo.stopped:
        return 128 + signal.SIGINT  # a video or images stopped with Ctrl-C: the shell's status of Ctrl-C
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(run_main(main))
