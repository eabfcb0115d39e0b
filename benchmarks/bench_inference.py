#!/usr/bin/env python
# Inference benchmark of DePOTR's top-down pipeline (SimpleBaseline's recipe, Xiao et al., ECCV 2018):
# the pose branch on given person boxes, and end to end with a Faster R-CNN person detector next to
# Detectron2's Keypoint R-CNN (He et al., ICCV 2017).
"""Times DePOTR's inference per config and prints markdown tables.

Pose branch: ``TopDownPoseEstimator.inference`` on one image with N given person boxes
(``MODEL.DEPOTR.TEST_BOX_SOURCE "precomputed"``): RoIAlign crops, the keypoint branch (twice with the
flip test when the config's ``TEST.FLIP`` is on), decoding, mapping back to the image. Boxes are
random (seeded), 30-90 % of the image height. Per-person latency = median call time / N.

End to end: images/s of the whole pipeline on photos (skimage's astronaut, coffee, chelsea, rocket
resized to ``--image-size``; random pixels when skimage is missing), one image per call, input
uint8 on the CPU, both detectors resizing the shortest edge to ``--detector-size`` (default 800, the
model zoo's; longest edge at most 1333) as ``DefaultPredictor`` does:
  * ``depotr+det``: ``TEST_BOX_SOURCE "detector"`` with Detectron2's model-zoo
    ``COCO-Detection/faster_rcnn_R_50_FPN_3x.yaml`` (``MODEL.DEPOTR.DETECTOR.WEIGHTS ""``);
  * ``keypoint_rcnn``: Detectron2's ``COCO-Keypoints/keypoint_rcnn_R_50_FPN_3x.yaml`` through
    ``DefaultPredictor`` (``MODEL.WEIGHTS ""``).
All weights are random (no checkpoint is loaded): speed and memory only, no accuracy. A random
ResNet-50 with FrozenBN (identity statistics) gives FPN features of ~1e4, on which random output
layers produce degenerate boxes (the RPN keeps 1-2 proposals) and overflowing keypoint heatmaps
(``heatmaps_to_keypoints`` fails its assertion). So for both R-CNNs the benchmark zeroes the last
layer of each head - RPN box deltas, box deltas, class logits (person logit bias 10), keypoint
heatmap logits - and caps the detections at ``--persons`` per image: proposals are the RPN's
anchors (1000 per image after NMS, as with a trained RPN), every box is a person, and exactly
``--persons`` persons per image reach the pose stage. Every layer's compute is unchanged. RoIAlign
and NMS of Detectron2 v0.6 without its compiled ops run on torchvision's and need no fix.

Timing: ``model.eval()``, ``torch.inference_mode()``, one warm-up call (pose) or pass over the
images (end to end), then the median of ``--repeats`` timed ones (at least 3 when
``--max-seconds`` is exceeded). The end-to-end pipelines are timed in turns, one pass of each per
round (``--max-seconds`` per pipeline), so that a shared machine's drift reaches them alike; the
line after their table gives the median over rounds of each DePOTR pass / the Keypoint R-CNN pass
of its round.

Peak memory: memory added by one call on top of the built model and its inputs (weights are not
counted). CUDA: ``torch.cuda.max_memory_allocated`` during a call (end to end: a pass over the
images) after the timed ones, minus the memory allocated before it. CPU: the first call (end to
end: on the first image) in a fresh subprocess (Linux), its peak resident set (VmHWM, reset
through /proc/self/clear_refs) minus its resident set just before the call, as in
``bench_msda.py``; this counts every page the call touches, allocator caches included.

    python benchmarks/bench_inference.py --quick                 # smoke run, < 1 min
    python benchmarks/bench_inference.py --configs depotr_r50.yaml --batches 1 32 --no-e2e
    python benchmarks/bench_inference.py --opts TEST.FLIP False   # overrides for every config
    python benchmarks/bench_inference.py --markdown               # + section in benchmarks/README.md
"""

import argparse
import json
import os
import platform
import shlex
import statistics
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable, List, Optional, Sequence

import cv2
import numpy as np
import torch
from bench_msda import fmt, parse_crop, synchronize  # benchmarks/ is sys.path[0]
from peak_memory import cuda_peak_mib, report_resident_peak, subprocess_peak_mib
from torch import Tensor

from detectron2.config import CfgNode, get_cfg
from detectron2.engine import DefaultPredictor
from detectron2.modeling import build_model
from detectron2.modeling.meta_arch import GeneralizedRCNN
from detectron2.structures import Boxes, Instances

from depotr.config import load_depotr_config
from depotr.engine.detector import build_person_detector
from depotr.modeling.person_detector import PoseWithDetector, resolve_model_zoo_path

REPO = Path(__file__).resolve().parent.parent
README = REPO / "benchmarks" / "README.md"
CONFIGS = (
    "depotr_r50.yaml",
    "depotr_hm_r50.yaml",
    "depotr_hm_r152_384x288.yaml",
    "simple_baseline_r50.yaml",
    "transpose_r50.yaml",
    "depotr_hm_r18_synthetic.yaml",
)
QUICK_CONFIG = "depotr_hm_r18_synthetic.yaml"
DETECTOR_CONFIG = "model_zoo:COCO-Detection/faster_rcnn_R_50_FPN_3x.yaml"
KEYPOINT_RCNN_CONFIG = "model_zoo:COCO-Keypoints/keypoint_rcnn_R_50_FPN_3x.yaml"
PHOTOS = ("astronaut", "coffee", "chelsea", "rocket")
PERSON_LOGIT = 10.0  # softmax person score 0.996 of 81 classes: above every score threshold
MARKERS = ("<!-- bench_inference:start -->", "<!-- bench_inference:end -->")


@dataclass(frozen=True)
class Case:
    kind: str  # "pose" (given boxes), "depotr+det" or "keypoint_rcnn" (end to end)
    config: str  # DePOTR yaml path ("" for keypoint_rcnn)
    device: str
    persons: int  # N: persons per call (pose) or per image (end to end)
    image_size: tuple[int, int]  # (height, width) of the images
    num_images: int  # images per end-to-end pass (pose: 1)
    detector_size: int  # shortest image edge the detectors resize to (end to end)
    opts: tuple[str, ...]  # KEY VALUE overrides of the DePOTR config


def resolve_config(name: str) -> str:
    """A config path as given, else the file of that name in the repository's configs/."""
    return name if os.path.isfile(name) else str(REPO / "configs" / name)


def load_photos(image_size: tuple[int, int], count: int) -> tuple[list[np.ndarray], str]:
    """``count`` RGB uint8 (H, W, 3) images of ``image_size`` and a description of their source:
    skimage's photos (cycled, resized) when skimage is installed, else random pixels (seed 0)."""
    height, width = image_size
    try:
        from skimage import data
    except ImportError:
        rng = np.random.default_rng(0)
        return [rng.integers(0, 256, (height, width, 3), dtype=np.uint8) for _ in range(count)], "random pixels"
    names = [PHOTOS[i % len(PHOTOS)] for i in range(count)]
    photos = [cv2.resize(getattr(data, n)(), (width, height), interpolation=cv2.INTER_AREA) for n in names]
    return photos, "skimage " + ", ".join(names)


def random_person_boxes(count: int, image_size: tuple[int, int], generator: torch.Generator) -> Tensor:
    """(N, 4) XYXY boxes inside the image: height 30-90 % of the image's, width 30-80 % of the box
    height (clipped to the image)."""
    height, width = image_size
    h = (0.3 + 0.6 * torch.rand(count, generator=generator)) * height
    w = torch.minimum((0.3 + 0.5 * torch.rand(count, generator=generator)) * h, torch.tensor(float(width)))
    x0 = torch.rand(count, generator=generator) * (width - w)
    y0 = torch.rand(count, generator=generator) * (height - h)
    return torch.stack([x0, y0, x0 + w, y0 + h], dim=1)


def depotr_cfg(case: Case) -> CfgNode:
    """The DePOTR config of a pose or ``depotr+det`` case: boxes given, or from the random
    model-zoo Faster R-CNN."""
    cfg = load_depotr_config(case.config, case.opts)
    cfg.MODEL.DEVICE = case.device
    cfg.MODEL.WEIGHTS = ""
    if case.kind == "pose":
        cfg.MODEL.DEPOTR.TEST_BOX_SOURCE = "precomputed"
        cfg.MODEL.DEPOTR.BOX_TOPK = 0  # keep every given box
    else:
        cfg.MODEL.DEPOTR.TEST_BOX_SOURCE = "detector"
        cfg.MODEL.DEPOTR.DETECTOR.CONFIG_FILE = DETECTOR_CONFIG
        cfg.MODEL.DEPOTR.DETECTOR.WEIGHTS = ""
    return cfg


def fix_rcnn_outputs(rcnn: GeneralizedRCNN, persons: int) -> None:
    """Zeroes the last layer of each head of a random R-CNN, with a person logit bias, and caps
    its detections at ``persons`` per image (why: module docstring)."""
    head_outputs = [rcnn.proposal_generator.rpn_head.anchor_deltas, rcnn.roi_heads.box_predictor.bbox_pred]
    head_outputs.append(rcnn.roi_heads.box_predictor.cls_score)
    if getattr(rcnn.roi_heads, "keypoint_on", False):
        head_outputs.append(rcnn.roi_heads.keypoint_head.score_lowres)
    with torch.no_grad():
        for layer in head_outputs:
            layer.weight.zero_()
            layer.bias.zero_()
        rcnn.roi_heads.box_predictor.cls_score.bias[0] = PERSON_LOGIT  # class 0: person
    rcnn.roi_heads.box_predictor.test_topk_per_image = persons


def prepare_pose(case: Case) -> Callable[[], int]:
    """Builds the model and an image with N random person boxes; returns a function running
    one inference and returning the number of persons predicted."""
    model = build_model(depotr_cfg(case)).eval()
    photos, _ = load_photos(case.image_size, 1)
    image = torch.from_numpy(photos[0]).permute(2, 0, 1).contiguous().to(case.device)
    proposals = Instances(case.image_size)
    boxes = random_person_boxes(case.persons, case.image_size, torch.Generator().manual_seed(0))
    proposals.proposal_boxes = Boxes(boxes)
    proposals.scores = torch.ones(case.persons)
    inputs = [{"image": image, "height": case.image_size[0], "width": case.image_size[1], "proposals": proposals}]

    def run_once() -> int:
        with torch.inference_mode():
            return len(model(inputs)[0]["instances"])

    return run_once


def prepare_depotr_e2e(case: Case) -> Callable[[], int]:
    """Builds DePOTR with the detector box source; returns a function running a pass over the
    images (one per call) and returning the number of persons predicted."""
    cfg = depotr_cfg(case)
    detector = build_person_detector(cfg, random_weights=True)  # speed only: a random detector, asked for
    model = PoseWithDetector(detector, build_model(cfg), cfg.INPUT.FORMAT).eval()
    fix_rcnn_outputs(detector.detector, case.persons)
    detector.min_size_test = case.detector_size
    photos, _ = load_photos(case.image_size, case.num_images)
    if cfg.INPUT.FORMAT == "BGR":
        photos = [p[:, :, ::-1] for p in photos]
    inputs = [
        {"image": torch.from_numpy(p.transpose(2, 0, 1).copy()), "height": p.shape[0], "width": p.shape[1]}
        for p in photos
    ]

    def run_once() -> int:
        with torch.inference_mode():
            return sum(len(model([x])[0]["instances"]) for x in inputs)

    return run_once


def prepare_keypoint_rcnn(case: Case) -> Callable[[], int]:
    """Builds Detectron2's Keypoint R-CNN in a ``DefaultPredictor``; returns a function running
    a pass over the images and returning the number of persons predicted."""
    cfg = get_cfg()
    cfg.merge_from_file(resolve_model_zoo_path(KEYPOINT_RCNN_CONFIG))
    cfg.MODEL.DEVICE = case.device
    cfg.MODEL.WEIGHTS = ""
    cfg.INPUT.MIN_SIZE_TEST = case.detector_size
    predictor = DefaultPredictor(cfg)
    fix_rcnn_outputs(predictor.model, case.persons)
    photos, _ = load_photos(case.image_size, case.num_images)
    bgr_images = [np.ascontiguousarray(p[:, :, ::-1]) for p in photos]  # DefaultPredictor takes BGR

    def run_once() -> int:
        with torch.inference_mode():
            return sum(len(predictor(image)["instances"]) for image in bgr_images)

    return run_once


def prepare(case: Case) -> Callable[[], int]:
    """Builds the case's model and inputs (random weights, seed 0); returns its one-call function."""
    torch.manual_seed(0)
    builders = {"pose": prepare_pose, "depotr+det": prepare_depotr_e2e, "keypoint_rcnn": prepare_keypoint_rcnn}
    return builders[case.kind](case)


def timed_call(run_once: Callable[[], int], device: str) -> tuple[float, int]:
    """Seconds of one call of ``run_once`` (device synchronised) and the persons it returned."""
    synchronize(device)
    t0 = time.perf_counter()
    persons = run_once()
    synchronize(device)
    return time.perf_counter() - t0, persons


def time_calls(run_once: Callable[[], int], device: str, repeats: int, max_seconds: float) -> tuple[list[float], int]:
    """Times ``run_once`` after one warm-up call; returns the call times in seconds and the
    persons of the last call. Stops early, after at least 3 timed calls, past ``max_seconds``."""
    run_once()
    times, persons = [], 0
    start = time.perf_counter()
    for _ in range(repeats):
        seconds, persons = timed_call(run_once, device)
        times.append(seconds)
        if len(times) >= 3 and time.perf_counter() - start > max_seconds:
            break
    return times, persons


@dataclass(frozen=True)
class Result:
    seconds: float  # median call time
    persons: int  # persons predicted by the last call
    runs: int  # timed calls
    peak_mib: Optional[float]  # None: not measured


def cpu_peak_mib(case: Case) -> Optional[float]:
    """Extra resident memory of the first call (end to end: on one image) in a fresh subprocess
    (module docstring); None where /proc/self/clear_refs is missing."""
    return subprocess_peak_mib(__file__, json.dumps(asdict(replace(case, num_images=1))))


def memory_probe(payload: str) -> None:
    """Subprocess side of :func:`cpu_peak_mib`: prints {"peak_mib": ...} as JSON."""
    spec = json.loads(payload)
    case = Case(**{**spec, "image_size": tuple(spec["image_size"]), "opts": tuple(spec["opts"])})
    report_resident_peak(prepare(case))


def peak_mib(case: Case, run_once: Callable[[], int], args: argparse.Namespace) -> Optional[float]:
    """The case's peak memory (module docstring), None with ``--no-memory``."""
    if args.no_memory:
        return None
    return cuda_peak_mib(run_once) if case.device == "cuda" else cpu_peak_mib(case)


def measure(case: Case, args: argparse.Namespace) -> Result:
    """Times a case and measures its peak memory (unless ``--no-memory``)."""
    run_once = prepare(case)
    times, persons = time_calls(run_once, case.device, args.repeats, args.max_seconds)
    return Result(statistics.median(times), persons, len(times), peak_mib(case, run_once, args))


def config_name(path: str) -> str:
    """ "configs/depotr_r50.yaml" -> "depotr_r50"."""
    return Path(path).stem


def pose_row(case: Case, result: Result) -> str:
    """A markdown row of the pose-branch table."""
    cfg = depotr_cfg(case)
    crop = "x".join(str(s) for s in cfg.INPUT.CROP_SIZE)
    seconds = result.seconds
    return (
        f"| {case.device} | {config_name(case.config)} | {cfg.MODEL.DEPOTR.HEAD} | R{cfg.MODEL.RESNETS.DEPTH} | {crop} "
        f"| {'on' if cfg.TEST.FLIP else 'off'} | {cfg.TEST.PRECISION} | {case.persons} | {result.runs} "
        f"| {fmt(1e3 * seconds)} "
        f"| {fmt(1e3 * seconds / case.persons, 2)} | {fmt(case.persons / seconds)} | {fmt(result.peak_mib)} |"
    )


def e2e_row(case: Case, result: Result) -> str:
    """A markdown row of the end-to-end table."""
    if case.kind == "keypoint_rcnn":
        pipeline, flip, precision = "Keypoint R-CNN R50-FPN 3x (Detectron2)", "off", "float32"
    else:
        cfg = depotr_cfg(case)
        pipeline, flip = f"Faster R-CNN R50-FPN 3x + {config_name(case.config)}", "on" if cfg.TEST.FLIP else "off"
        precision = f"float32 + {cfg.TEST.PRECISION}"  # the detector's, the pose branch's
    seconds = result.seconds
    return (
        f"| {case.device} | {pipeline} | {flip} | {precision} | {case.image_size[0]}x{case.image_size[1]} "
        f"| {fmt(result.persons / case.num_images)} | {result.runs} | {fmt(1e3 * seconds / case.num_images)} "
        f"| {fmt(case.num_images / seconds, 2)} | {fmt(result.peak_mib)} |"
    )


POSE_HEADER = (
    "| device | config | head | backbone | crop | flip | precision | N persons | runs | ms / call | ms / person "
    "| persons/s | peak MiB |\n|---|---|---|---|---|---|---|---:|---:|---:|---:|---:|---:|"
)
E2E_HEADER = (
    "| device | pipeline | flip | precision | image | persons / image | runs | ms / image | images/s | peak MiB |\n"
    "|---|---|---|---|---|---:|---:|---:|---:|---:|"
)


def run_table(cases: Sequence[Case], header: str, row: Callable[[Case, Result], str], args: argparse.Namespace) -> str:
    """Measures the cases, printing each row as it is ready; returns the markdown table."""
    rows = [header]
    print(header, flush=True)
    for case in cases:
        rows.append(row(case, measure(case, args)))
        print(rows[-1], flush=True)
    return "\n".join(rows)


def run_table_in_turns(cases: Sequence[Case], header: str, row: Callable[[Case, Result], str], args) -> str:
    """Like :func:`run_table`, the cases timed in turns (module docstring); then, per device, the
    median per-round ratio of each DePOTR case to the Keypoint R-CNN case."""
    runners = [prepare(case) for case in cases]
    for run_once in runners:
        run_once()  # warm-up
    times: List[List[float]] = [[] for _ in cases]
    persons = [0] * len(cases)
    start = time.perf_counter()
    for _ in range(args.repeats):
        for i, (case, run_once) in enumerate(zip(cases, runners)):
            seconds, persons[i] = timed_call(run_once, case.device)
            times[i].append(seconds)
        if len(times[0]) >= 3 and time.perf_counter() - start > args.max_seconds * len(cases):
            break
    rows = [header]
    for i, case in enumerate(cases):
        result = Result(statistics.median(times[i]), persons[i], len(times[i]), peak_mib(case, runners[i], args))
        rows.append(row(case, result))
    for i, case in enumerate(cases):
        base = next((j for j, c in enumerate(cases) if c.kind == "keypoint_rcnn" and c.device == case.device), None)
        if case.kind != "keypoint_rcnn" and base is not None:
            ratios = [t / b for t, b in zip(times[i], times[base])]
            rows.append(
                f"\n{case.device}: {config_name(case.config)} / Keypoint R-CNN, median of {len(ratios)} rounds: "
                f"{statistics.median(ratios):.2f}x (rounds {', '.join(f'{r:.2f}' for r in ratios)})"
            )
    print("\n".join(rows), flush=True)
    return "\n".join(rows)


def cases(args: argparse.Namespace) -> tuple[list[Case], list[Case]]:
    """The pose-branch cases and the end-to-end cases (empty with ``--no-e2e``) of the arguments."""
    configs, opts, size, det_size = args.configs, tuple(args.opts), args.image_size, args.detector_size
    pose = [
        Case("pose", config, device, batch, size, 1, det_size, opts)
        for device in args.device
        for config in configs
        for batch in args.batches
    ]
    e2e = []
    if not args.no_e2e:
        for device in args.device:
            e2e += [Case("depotr+det", c, device, args.persons, size, args.images, det_size, opts) for c in configs]
            e2e.append(Case("keypoint_rcnn", "", device, args.persons, size, args.images, det_size, opts))
    return pose, e2e


def machine(devices: Sequence[str]) -> str:
    """CPU model (and GPU name), torch version and CPU threads."""
    cpu = platform.processor() or platform.machine()
    if os.path.exists("/proc/cpuinfo"):
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    gpu = f", GPU {torch.cuda.get_device_name()}" if "cuda" in devices else ""
    threads = torch.get_num_threads()
    return f"CPU {cpu} ({os.cpu_count()} cores, torch threads: {threads}){gpu}, torch {torch.__version__}"


def markdown_section(pose_table: str, e2e_table: str, args: argparse.Namespace) -> str:
    """The README section between the markers: command, machine, what was counted, tables."""
    command = shlex.join(["python", "benchmarks/bench_inference.py", *sys.argv[1:]])
    _, photos = load_photos(args.image_size, args.images)
    text = (
        f"{MARKERS[0]}\n## Inference speed (`benchmarks/bench_inference.py`), {time.strftime('%Y-%m-%d')}\n\n"
        f"`{command}`: {machine(args.device)}. Random weights (speed and memory only), `model.eval()`, "
        "`torch.inference_mode()`, median of the timed runs after one warm-up. Peak MiB: memory one call "
        "adds to the built model (CUDA: max_memory_allocated; CPU: peak RSS of a fresh process's first call "
        "minus its RSS before it). Details, and why the R-CNNs' last head layers are zeroed: the script's "
        "docstring.\n\n"
        "Pose branch: one image, N given person boxes; crop + keypoint branch (x2 with the flip test) + "
        "decoding.\n\n" + pose_table + "\n"
    )
    if e2e_table:
        text += (
            f"\nEnd to end, one image per call ({photos}; detectors resize to {args.detector_size} px shortest edge), "
            f"{args.persons} persons per image by construction:\n\n" + e2e_table + "\n"
        )
    return text + MARKERS[1]


def write_markdown(path: Path, section: str) -> None:
    """Replaces the text between the markers in ``path`` by ``section``, or appends it."""
    text = path.read_text() if path.exists() else ""
    start, end = text.find(MARKERS[0]), text.find(MARKERS[1])
    if start >= 0 and end > start:
        text = text[:start] + section + text[end + len(MARKERS[1]) :]
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    path.write_text(text)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--configs", nargs="+", default=list(CONFIGS), help="DePOTR yaml files (names in configs/ or paths)"
    )
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8, 32], help="persons per pose-branch call")
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    parser.add_argument("--device", nargs="+", choices=["cpu", "cuda"], default=devices, help="default: cpu (+ cuda)")
    parser.add_argument("--repeats", type=int, default=10, help="timed calls per case (after a warm-up)")
    parser.add_argument("--max-seconds", type=float, default=30.0, help="stop repeating after this (min. 3 calls)")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's, one per core)")
    parser.add_argument("--image-size", type=parse_crop, default=(480, 640), help="HxW of the images")
    parser.add_argument("--images", type=int, default=4, help="images per end-to-end pass")
    parser.add_argument("--persons", type=int, default=5, help="detections per image (end to end)")
    parser.add_argument(
        "--detector-size", type=int, default=800, help="shortest edge the detectors resize images to (model zoo: 800)"
    )
    parser.add_argument("--no-e2e", action="store_true", help="skip the end-to-end table")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory measurement")
    parser.add_argument(
        "--quick", action="store_true", help=f"smoke run: {QUICK_CONFIG}, batch 1, 2 repeats, 1 image, detector 320 px"
    )
    parser.add_argument(
        "--markdown",
        nargs="?",
        const=str(README),
        metavar="PATH",
        help=f"write the tables between {MARKERS[0]} and its end marker in PATH (default {README.relative_to(REPO)})",
    )
    parser.add_argument("--opts", nargs=argparse.REMAINDER, default=[], help="DePOTR config overrides, KEY VALUE ...")
    parser.add_argument("--memory-probe", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.quick:
        args.configs, args.batches, args.repeats, args.images, args.detector_size = [QUICK_CONFIG], [1], 2, 1, 320
    args.configs = [resolve_config(c) for c in args.configs]
    if args.threads:
        torch.set_num_threads(args.threads)
    return args


def main() -> None:
    args = parse_args()
    if args.memory_probe:
        memory_probe(args.memory_probe)
        return
    pose_cases, e2e_cases = cases(args)
    pose_table = run_table(pose_cases, POSE_HEADER, pose_row, args)
    e2e_table = run_table_in_turns(e2e_cases, E2E_HEADER, e2e_row, args) if e2e_cases else ""
    if args.markdown:
        write_markdown(Path(args.markdown), markdown_section(pose_table, e2e_table, args))
        print(f"wrote the section to {args.markdown}")


if __name__ == "__main__":
    main()
