"""Every configuration key DePOTR adds to Detectron2's defaults, in one function.

Call :func:`add_depotr_config` in every entry point (training, demo, tools, tests) before
merging a yaml file. Unknown keys still fail loudly: nothing here enables ``set_new_allowed``.
"""

import difflib
import logging
import os
from typing import List, Sequence

import torch
import yaml

from detectron2.config import CfgNode as CN
from detectron2.config import get_cfg

from .cli import ConfigError

logger = logging.getLogger(__name__)


def add_depotr_config(cfg: CN) -> None:
    """Adds DePOTR's keys (``MODEL.DEPOTR``, ``INPUT``, ``DATASETS``, ``SOLVER``, ``TEST``) to
    ``cfg`` in place, with the defaults of the thesis' DePOTR R50 256×192 model."""
    _add_model_config(cfg)
    _add_input_config(cfg)
    _add_dataset_config(cfg)
    _add_solver_config(cfg)
    _add_test_config(cfg)


def load_depotr_config(config_file: str, opts: Sequence[str] = ()) -> CN:
    """Detectron2's defaults + :func:`add_depotr_config`, then ``config_file``, then ``opts``
    (KEY VALUE ...). Without CUDA a "cuda" ``MODEL.DEVICE`` becomes "cpu" and
    ``SOLVER.AMP.ENABLED`` is switched off (Detectron2's AMPTrainer autocasts with CUDA only), so
    that GPU configs run unchanged on a CPU machine (not logged here: where a model runs,
    :func:`log_device` says so once). Returns the unfrozen config.

    Raises:
        ConfigError: (one line) ``config_file`` does not exist (naming the ``.yaml`` / ``.yml``
            twin that does), is not valid YAML (file and line) or sets an unknown key; ``opts``
            has an odd length, an unknown key or a value of the wrong type. Unknown keys come
            with the nearest valid key (``difflib.get_close_matches``).
    """
    cfg = get_cfg()
    add_depotr_config(cfg)
    _check_config_file(config_file)
    try:
        cfg.merge_from_file(config_file)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{mark.name}:{mark.line + 1}" if mark is not None else config_file
        raise ConfigError(f"{where}: invalid YAML: {getattr(e, 'problem', None) or e}") from e
    except KeyError as e:  # yacs: "Non-existent config key: X"
        key = str(e.args[0]).rpartition(": ")[2]
        message = f"{config_file} (or a _BASE_ file) sets the unknown config key {key}{_nearest(cfg, key)}"
        raise ConfigError(message) from None
    except (AssertionError, ValueError) as e:  # a _BASE_ file that does not exist, a value of the wrong type
        raise ConfigError(f"{config_file}: {e}") from e
    opts = [str(o) for o in opts]
    if len(opts) % 2:
        raise ConfigError(f"config overrides must be KEY VALUE pairs; got {len(opts)} values: {' '.join(opts)}")
    keys = _full_keys(cfg)
    for key in opts[0::2]:
        if key not in keys and not cfg.key_is_deprecated(key) and not cfg.key_is_renamed(key):
            raise ConfigError(f"unknown config key {key} in the overrides{_nearest(cfg, key)}")
    try:
        cfg.merge_from_list(opts)
    except (ValueError, AssertionError) as e:  # yacs: a value of the wrong type
        raise ConfigError(f"config overrides: {e}") from e
    if cfg.MODEL.DEVICE.startswith("cuda") and not torch.cuda.is_available():
        cfg.MODEL.DEVICE = "cpu"
    if cfg.SOLVER.AMP.ENABLED and cfg.MODEL.DEVICE == "cpu":
        logger.warning("SOLVER.AMP.ENABLED needs a CUDA MODEL.DEVICE; training in float32 on cpu")
        cfg.SOLVER.AMP.ENABLED = False
    return cfg


_device_logged = False


def log_device(device: str) -> None:
    """Logs "running on CPU" the first time a model is set up on the CPU in this process (the
    config's cuda -> cpu fallback is silent, as commands that load no model need not hear it)."""
    global _device_logged
    if device == "cpu" and not _device_logged:
        _device_logged = True
        logger.info("running on CPU%s", "" if torch.cuda.is_available() else " (CUDA is not available)")


def _check_config_file(config_file: str) -> None:
    """ConfigError when ``config_file`` is not a file, naming its .yaml / .yml twin if that is."""
    if os.path.isfile(config_file):
        return
    stem, ext = os.path.splitext(config_file)
    twin = stem + {".yml": ".yaml", ".yaml": ".yml"}.get(ext, ".yaml")
    if twin != config_file and os.path.isfile(twin):
        raise ConfigError(f"config file {config_file} does not exist, but {twin} does ({ext} for {twin[len(stem) :]}?)")
    raise ConfigError(f"config file {config_file} does not exist")


def _full_keys(node: CN, prefix: str = "") -> List[str]:
    """Every leaf key of ``node`` as a dotted name ("MODEL.DEPOTR.HEAD", ...)."""
    keys = []
    for name, value in node.items():
        keys += _full_keys(value, f"{prefix}{name}.") if isinstance(value, CN) else [prefix + name]
    return keys


def _nearest(cfg: CN, key: str) -> str:
    """ "; did you mean X?" with the valid key nearest to ``key``, or "" when none is near."""
    match = difflib.get_close_matches(key, _full_keys(cfg), n=1)
    return f"; did you mean {match[0]}?" if match else ""


def _add_model_config(cfg: CN) -> None:
    cfg.MODEL.DEPOTR = CN()
    # Which keypoint branch runs on the crops: "regression" (DePOTR), "heatmap" (DePOTR-HM),
    # "simple_baseline" (Xiao et al. 2018) or "transpose" (TransPose-R, Yang et al. 2021).
    cfg.MODEL.DEPOTR.HEAD = "regression"
    # K: number of keypoints, one decoder query each.
    cfg.MODEL.DEPOTR.NUM_KEYPOINTS = 17
    # The K keypoint names, in output order, and the [left, right] name pairs a horizontal flip
    # swaps; both empty: COCO's 17 and 8 (depotr/data/keypoint_metadata.py). Datasets are checked
    # against them (keypoint_metadata_from_config), never read for them.
    cfg.MODEL.DEPOTR.KEYPOINT_NAMES = []
    cfg.MODEL.DEPOTR.KEYPOINT_FLIP_MAP = []
    # Backbone feature maps fed to the transformer (res3/res4/res5 = strides 8/16/32).
    cfg.MODEL.DEPOTR.IN_FEATURES = ["res3", "res4", "res5"]
    # L: feature levels; levels beyond IN_FEATURES come from stride-2 3x3 convs (stride 64).
    cfg.MODEL.DEPOTR.NUM_FEATURE_LEVELS = 4
    # d: transformer width.
    cfg.MODEL.DEPOTR.HIDDEN_DIM = 256
    # M: attention heads.
    cfg.MODEL.DEPOTR.NHEADS = 8
    cfg.MODEL.DEPOTR.ENC_LAYERS = 6
    cfg.MODEL.DEPOTR.DEC_LAYERS = 6
    cfg.MODEL.DEPOTR.DIM_FEEDFORWARD = 1024
    cfg.MODEL.DEPOTR.DROPOUT = 0.1
    # P: sampling points per head and level in encoder / decoder deformable attention.
    cfg.MODEL.DEPOTR.ENC_N_POINTS = 4
    cfg.MODEL.DEPOTR.DEC_N_POINTS = 4
    # Iterative reference-point refinement across decoder layers (off in DePOTR).
    cfg.MODEL.DEPOTR.ITER_REFINE = False
    # Deep supervision: the loss on every decoder layer's output, not only the last (DETR and
    # Deformable DETR train so; the thesis supervised the last layer only). DePOTR heads only.
    cfg.MODEL.DEPOTR.AUX_LOSS = False

    # Person boxes in training: "gt" (the annotated boxes, the only training source; see
    # depotr/modeling/box_sources.py for the one policy every box source follows).
    cfg.MODEL.DEPOTR.BOX_SOURCE = "gt"
    # Person boxes at inference: "gt", "precomputed" (the dataset dicts' person detections of
    # DATASETS.PRECOMPUTED_BOXES), "detector" (MODEL.DEPOTR.DETECTOR, run beside the pose model
    # by Trainer.test; its boxes reach the model as proposals) or "whole_image" (one
    # person per image). The Predictor ignores it (caller's boxes, else detector, else whole image).
    cfg.MODEL.DEPOTR.TEST_BOX_SOURCE = "precomputed"
    # Inference boxes of "precomputed" / "detector": drop those scoring below this, keep the TOPK
    # best per image (<= 0: all).
    cfg.MODEL.DEPOTR.BOX_SCORE_THRESH = 0.0
    cfg.MODEL.DEPOTR.BOX_TOPK = 100
    # Instance score = box score x mean of keypoint scores above this (SimpleBaseline).
    cfg.MODEL.DEPOTR.KEYPOINT_SCORE_THRESH = 0.2

    cfg.MODEL.DEPOTR.REGRESSION = CN()
    # Layers of the MLP mapping a decoder output to (x, y).
    cfg.MODEL.DEPOTR.REGRESSION.MLP_LAYERS = 3
    # beta of the smooth-L1 loss, in crop-normalised units ([0, 1] of crop width/height).
    cfg.MODEL.DEPOTR.REGRESSION.SMOOTH_L1_BETA = 0.01
    cfg.MODEL.DEPOTR.REGRESSION.LOSS_WEIGHT = 1.0
    # Coordinate loss: "smooth_l1" (thesis), "l1", or "rle" (Li et al. 2021: the head also predicts
    # a scale sigma per keypoint, the loss is the likelihood under a learned flow density, and the
    # keypoint confidence is 1 - mean sigma; see depotr/modeling/heads/rle_loss.py).
    cfg.MODEL.DEPOTR.REGRESSION.LOSS = "smooth_l1"
    # Weight of the BCE loss of the per-keypoint confidence (labelled and inside the crop); not
    # with LOSS "rle", whose confidence comes from sigma.
    cfg.MODEL.DEPOTR.REGRESSION.SCORE_LOSS_WEIGHT = 0.1

    cfg.MODEL.DEPOTR.HEATMAP = CN()
    # Gaussian sigma of the heatmap target at a 64x48 heatmap; scaled with the heatmap size.
    cfg.MODEL.DEPOTR.HEATMAP.SIGMA = 2.0
    # How DePOTR-HM turns each keypoint query into a heatmap: "deconv" (the thesis: an MLP makes
    # a coarse H/16 x W/16 map, two deconvolutions bring it to H/4) or "dot_product" (the query
    # embedding's dot product with stride-4 pixel features: res2 plus the upsampled finest
    # encoder level, as mask heads such as MaskFormer's do with mask embeddings).
    cfg.MODEL.DEPOTR.HEATMAP.DECODER = "deconv"
    cfg.MODEL.DEPOTR.HEATMAP.LOSS_WEIGHT = 1.0
    # C0: channels per keypoint of the (H/16)x(W/16) map the DePOTR-HM MLP produces.
    cfg.MODEL.DEPOTR.HEATMAP.INITIAL_CHANNELS = 1
    # Layers of DePOTR-HM's per-keypoint MLP to that map (1: the thesis' single Linear).
    cfg.MODEL.DEPOTR.HEATMAP.MLP_LAYERS = 1

    cfg.MODEL.DEPOTR.SIMPLE_BASELINE = CN()
    # SimpleBaseline deconvolution stack on res5: layers, channels, kernel size.
    cfg.MODEL.DEPOTR.SIMPLE_BASELINE.NUM_DECONV_LAYERS = 3
    cfg.MODEL.DEPOTR.SIMPLE_BASELINE.DECONV_CHANNELS = 256
    cfg.MODEL.DEPOTR.SIMPLE_BASELINE.DECONV_KERNEL = 4

    cfg.MODEL.DEPOTR.TRANSPOSE = CN()
    # TransPose-R: standard transformer encoder on the stride-8 res3 map.
    cfg.MODEL.DEPOTR.TRANSPOSE.IN_FEATURE = "res3"
    cfg.MODEL.DEPOTR.TRANSPOSE.ENC_LAYERS = 4
    cfg.MODEL.DEPOTR.TRANSPOSE.NHEADS = 8
    cfg.MODEL.DEPOTR.TRANSPOSE.HIDDEN_DIM = 256
    cfg.MODEL.DEPOTR.TRANSPOSE.DIM_FEEDFORWARD = 1024

    cfg.MODEL.DEPOTR.DETECTOR = CN()
    # A Detectron2 person detector for TEST_BOX_SOURCE "detector" (and the Predictor), outside the
    # pose model (depotr/modeling/person_detector.py; pose checkpoints do not hold it): its config
    # file and weights, each a path or "model_zoo:<Detectron2 config path>".
    cfg.MODEL.DEPOTR.DETECTOR.CONFIG_FILE = ""
    cfg.MODEL.DEPOTR.DETECTOR.WEIGHTS = ""
    # Detector boxes scoring below this are dropped.
    cfg.MODEL.DEPOTR.DETECTOR.SCORE_THRESH = 0.5
    # Contiguous class id of "person" in the detector's classes.
    cfg.MODEL.DEPOTR.DETECTOR.PERSON_CLASS_ID = 0


def _add_input_config(cfg: CN) -> None:
    # (H, W) of the person crop fed to the keypoint branch (aspect 4:3 as 256x192).
    cfg.INPUT.CROP_SIZE = (256, 192)
    # Person box -> crop: expand to the crop's aspect, then scale by this factor.
    cfg.INPUT.CROP_PADDING = 1.25
    # RoIAlign samples per crop-pixel side when cropping (0 = adaptive: ceil(box / crop size)).
    cfg.INPUT.CROP_SAMPLING_RATIO = 0

    cfg.INPUT.AUG = CN()
    # Photometric training augmentation of the whole image in the data mapper (Albumentations,
    # pixels only); ENABLED False switches it off. *_PROB: probability of each.
    cfg.INPUT.AUG.ENABLED = True
    cfg.INPUT.AUG.BLUR_PROB = 0.1
    cfg.INPUT.AUG.RGB_SHIFT_PROB = 0.2
    cfg.INPUT.AUG.BRIGHTNESS_CONTRAST_PROB = 0.3

    cfg.INPUT.CROP_AUG = CN()
    # Geometric training augmentation at crop time, per person, in this order
    # (depotr/modeling/crop_augmentation.py): half-body box -> scale/shift jitter -> rotation
    # about the crop centre -> flip. ENABLED False switches all of INPUT.CROP_AUG off.
    cfg.INPUT.CROP_AUG.ENABLED = True
    # Half-body (SimpleBaseline / HRNet): with this probability per person the box of its labelled
    # upper- or lower-body keypoints replaces its box (HRNet on COCO: 0.3). 0 disables it.
    cfg.INPUT.CROP_AUG.HALF_BODY_PROB = 0.0
    # Only persons with at least this many labelled keypoints (HRNet: more than 8).
    cfg.INPUT.CROP_AUG.HALF_BODY_MIN_KEYPOINTS = 9
    # A body half qualifies with at least this many labelled keypoints, >= 2 (HRNet: more than 2).
    cfg.INPUT.CROP_AUG.HALF_BODY_MIN_PART_KEYPOINTS = 3
    # Half-body box = the half's keypoint box grown to the crop aspect, times this; the crop then
    # adds CROP_PADDING (1.2 x 1.25 = HRNet's 1.5).
    cfg.INPUT.CROP_AUG.HALF_BODY_PADDING = 1.2
    # Box jitter: size x (1 + r SCALE_FACTOR), centre + r SHIFT_FACTOR x box size (r per value).
    cfg.INPUT.CROP_AUG.SCALE_FACTOR = 0.25
    cfg.INPUT.CROP_AUG.SHIFT_FACTOR = 0.10
    # How r is drawn: "uniform" in [-1, 1], or "normal" = N(0, 1) clipped to [-1, 1]
    # (SimpleBaseline / HRNet's scale factor).
    cfg.INPUT.CROP_AUG.SCALE_DISTRIBUTION = "uniform"
    # Rotation of the crop about its centre, applied with ROTATION_PROB: "uniform" in
    # +-ROTATION_DEGREES, or "normal" = N(0, ROTATION_DEGREES) clipped to +-2 ROTATION_DEGREES
    # (SimpleBaseline / HRNet: 40 or 45 degrees, prob 0.6).
    cfg.INPUT.CROP_AUG.ROTATION_DEGREES = 10.0
    cfg.INPUT.CROP_AUG.ROTATION_PROB = 0.5
    cfg.INPUT.CROP_AUG.ROTATION_DISTRIBUTION = "uniform"
    # Mirrored crop (keypoints swapped with the keypoint table's flip indices), per person.
    cfg.INPUT.CROP_AUG.FLIP_PROB = 0.5


def _add_dataset_config(cfg: CN) -> None:
    # One COCO results json of person detections per DATASETS.TEST entry ("" = none); used
    # with MODEL.DEPOTR.TEST_BOX_SOURCE "precomputed".
    cfg.DATASETS.PRECOMPUTED_BOXES = ()

    cfg.DATASETS.SYNTHETIC = CN()
    # The embedded synthetic dataset: where it is cached and how large each split is.
    cfg.DATASETS.SYNTHETIC.ROOT = "datasets/synthetic_persons"
    cfg.DATASETS.SYNTHETIC.NUM_TRAIN_IMAGES = 2000
    cfg.DATASETS.SYNTHETIC.NUM_VAL_IMAGES = 200
    cfg.DATASETS.SYNTHETIC.SEED = 0
    # Generator version of synthetic_persons_train / _val (3 or 4: depotr.data.synthetic /
    # synthetic_v4); synthetic_persons_v<k>_train / _val name every version's split.
    cfg.DATASETS.SYNTHETIC.GENERATOR_VERSION = 3


def _add_solver_config(cfg: CN) -> None:
    # "ADAMW" (DePOTR) or "SGD" (Detectron2's default).
    cfg.SOLVER.OPTIMIZER = "ADAMW"
    cfg.SOLVER.BETAS = (0.9, 0.999)
    # Backbone learning rate = BASE_LR x this (thesis: 1e-5 / 1e-4).
    cfg.SOLVER.BACKBONE_MULTIPLIER = 0.1
    # Learning-rate factor for the sampling offsets and reference points (Deformable DETR).
    cfg.SOLVER.SAMPLING_LR_MULTIPLIER = 0.1
    # Weight decay of embeddings (level embedding, queries); norms use WEIGHT_DECAY_NORM.
    cfg.SOLVER.WEIGHT_DECAY_EMBED = 0.0
    # Final learning rate as a factor of BASE_LR for LR_SCHEDULER_NAME "WarmupLinearLR".
    cfg.SOLVER.FINAL_LR_FACTOR = 0.01
    # Schedule in epochs; when > 0 they override MAX_ITER / WARMUP_ITERS (converted with the
    # training set size and IMS_PER_BATCH, and logged).
    cfg.SOLVER.MAX_EPOCHS = 0
    cfg.SOLVER.WARMUP_EPOCHS = 0.0


def _add_test_config(cfg: CN) -> None:
    # Flip test: average the predictions on the crop and its mirror.
    cfg.TEST.FLIP = False
    # Heatmap sub-pixel decoding: "none", "shift" (quarter pixel toward the higher
    # neighbour) or "dark" (Zhang et al. 2020).
    cfg.TEST.HEATMAP_REFINE = "shift"
    # Shift the flipped heatmap by one pixel before averaging (SimpleBaseline's flip test). Off:
    # in our pixel-centre convention the array flip is already the exact mirror.
    cfg.TEST.FLIP_SHIFT_HEATMAP = False
    # OKS-NMS of each image's poses (box areas as scales): a pose with OKS above this with a
    # higher-scoring one is dropped (thesis and SimpleBaseline: 0.9); 1.0 disables it. For video
    # tracking use 1.0: crossing persons' poses coincide and NMS drops one (bench_video.py:
    # ID switches 27 -> 7 of 27 tracks, MOTA 81 -> 92 %).
    cfg.TEST.OKS_NMS_THRESH = 0.9

    # Video (depotr/tracking.py; demo --track / --smooth). Tracking matches the persons of a frame
    # to the tracks of the frames before by IOU_WEIGHT x box IoU + (1 - IOU_WEIGHT) x OKS (Hungarian),
    # never below MIN_SIMILARITY; a track without a match is kept MAX_LOST_FRAMES frames (~1/3 s at
    # 25-30 fps), then ended.
    cfg.TEST.TRACK = CN()
    cfg.TEST.TRACK.IOU_WEIGHT = 0.5
    cfg.TEST.TRACK.MIN_SIMILARITY = 0.3
    cfg.TEST.TRACK.MAX_LOST_FRAMES = 10
    # Tracks move at constant velocity between frames; a match corrects it by VELOCITY_GAIN x
    # (detected - predicted box centre) / frames since the last match (0: no motion model).
    cfg.TEST.TRACK.VELOCITY_GAIN = 0.1
    # One-Euro smoothing of each track's keypoints (Casiez et al. 2012): cutoff (Hz) =
    # MIN_CUTOFF + BETA x speed (pixels/s), the speed filtered at D_CUTOFF Hz. At 25-30 fps a
    # still keypoint is filtered at 1 Hz, one moving at 100 px/s at 21 Hz (little lag). Chosen on
    # bench_video.py's clips (persons 110-190 px tall) with ground-truth poses + N(0, 0.5 or 2 px):
    # jitter -40 / -44 %, AP -0.7 / +4.4; BETA 0.05 smooths more but lags (AP -9 at 0.5 px).
    cfg.TEST.SMOOTH = CN()
    cfg.TEST.SMOOTH.MIN_CUTOFF = 1.0
    cfg.TEST.SMOOTH.BETA = 0.2
    cfg.TEST.SMOOTH.D_CUTOFF = 1.0
