"""Every configuration key DePOTR adds to Detectron2's defaults (longer notes: docs/config.md).

Call :func:`add_depotr_config` in every entry point before merging a yaml file; unknown keys fail.
"""

import ast
import difflib
import logging
import os
import sys
from typing import List, Sequence

import torch
import yaml

from detectron2.config import CfgNode as CN
from detectron2.config import get_cfg

from .cli import ConfigError

logger = logging.getLogger(__name__)


def add_depotr_config(cfg: CN) -> None:
    """Adds DePOTR's keys to ``cfg`` in place, with the defaults of the thesis' R50 256×192 model."""
    cfg.MODEL.DEPOTR = CN()
    # Keypoint branch on the crops: "regression", "heatmap" (DePOTR-HM), "simple_baseline", "transpose".
    cfg.MODEL.DEPOTR.HEAD = "regression"
    # K: number of keypoints, one decoder query each.
    cfg.MODEL.DEPOTR.NUM_KEYPOINTS = 17
    # The K keypoint names in output order; both empty: COCO's 17 (see docs/config.md).
    cfg.MODEL.DEPOTR.KEYPOINT_NAMES = []
    # [left, right] name pairs a horizontal flip swaps; both empty: COCO's 8.
    cfg.MODEL.DEPOTR.KEYPOINT_FLIP_MAP = []
    # Skeleton edges [name, name] or [name, name, [r, g, b]] the demo draws; with KEYPOINT_NAMES empty: COCO's.
    cfg.MODEL.DEPOTR.KEYPOINT_SKELETON = []
    # Backbone feature maps fed to the transformer (res3/res4/res5 = strides 8/16/32).
    cfg.MODEL.DEPOTR.IN_FEATURES = ["res3", "res4", "res5"]
    # L: feature levels; levels beyond IN_FEATURES come from stride-2 3x3 convs (stride 64).
    cfg.MODEL.DEPOTR.NUM_FEATURE_LEVELS = 4
    # d: transformer width.
    cfg.MODEL.DEPOTR.HIDDEN_DIM = 256
    # M: attention heads.
    cfg.MODEL.DEPOTR.NHEADS = 8
    # Deformable encoder / decoder layers, feed-forward width and dropout.
    cfg.MODEL.DEPOTR.ENC_LAYERS = 6
    cfg.MODEL.DEPOTR.DEC_LAYERS = 6
    cfg.MODEL.DEPOTR.DIM_FEEDFORWARD = 1024
    cfg.MODEL.DEPOTR.DROPOUT = 0.1
    # P: sampling points per head and level in encoder / decoder deformable attention.
    cfg.MODEL.DEPOTR.ENC_N_POINTS = 4
    cfg.MODEL.DEPOTR.DEC_N_POINTS = 4
    # Iterative reference-point refinement across decoder layers (off in DePOTR).
    cfg.MODEL.DEPOTR.ITER_REFINE = False
    # Deep supervision: the loss on every decoder layer's output, not only the last (DePOTR heads).
    cfg.MODEL.DEPOTR.AUX_LOSS = False
    # Person boxes in training: "gt" only (depotr/modeling/box_sources.py).
    cfg.MODEL.DEPOTR.BOX_SOURCE = "gt"
    # Person boxes at inference: "gt", "precomputed", "detector" or "whole_image" (docs/config.md).
    cfg.MODEL.DEPOTR.TEST_BOX_SOURCE = "precomputed"
    # "precomputed" / "detector" boxes: drop those scoring below THRESH, keep the TOPK best (<= 0: all).
    cfg.MODEL.DEPOTR.BOX_SCORE_THRESH = 0.0
    cfg.MODEL.DEPOTR.BOX_TOPK = 100
    # Instance score = box score x mean of keypoint scores above this (SimpleBaseline).
    cfg.MODEL.DEPOTR.KEYPOINT_SCORE_THRESH = 0.2

    cfg.MODEL.DEPOTR.REGRESSION = CN()
    # Layers of the MLP mapping a decoder output to (x, y).
    cfg.MODEL.DEPOTR.REGRESSION.MLP_LAYERS = 3
    # beta of the smooth-L1 loss, in crop-normalised units ([0, 1] of crop width/height).
    cfg.MODEL.DEPOTR.REGRESSION.SMOOTH_L1_BETA = 0.01
    # Weight of the coordinate loss.
    cfg.MODEL.DEPOTR.REGRESSION.LOSS_WEIGHT = 1.0
    # Coordinate loss: "smooth_l1" (thesis), "l1" or "rle" (Li et al. 2021; docs/models.md).
    cfg.MODEL.DEPOTR.REGRESSION.LOSS = "smooth_l1"
    # Weight of the BCE loss of the per-keypoint confidence (not with LOSS "rle").
    cfg.MODEL.DEPOTR.REGRESSION.SCORE_LOSS_WEIGHT = 0.1

    cfg.MODEL.DEPOTR.HEATMAP = CN()
    # Gaussian sigma of the heatmap target at a 64x48 heatmap; scaled with the heatmap size.
    cfg.MODEL.DEPOTR.HEATMAP.SIGMA = 2.0
    # Query -> heatmap in DePOTR-HM: "deconv" (thesis) or "dot_product" (docs/config.md).
    cfg.MODEL.DEPOTR.HEATMAP.DECODER = "deconv"
    # Weight of the heatmap loss.
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
    # TransPose-R: standard transformer encoder on this backbone map: layers, heads, width, FFN width.
    cfg.MODEL.DEPOTR.TRANSPOSE.IN_FEATURE = "res3"
    cfg.MODEL.DEPOTR.TRANSPOSE.ENC_LAYERS = 4
    cfg.MODEL.DEPOTR.TRANSPOSE.NHEADS = 8
    cfg.MODEL.DEPOTR.TRANSPOSE.HIDDEN_DIM = 256
    cfg.MODEL.DEPOTR.TRANSPOSE.DIM_FEEDFORWARD = 1024

    cfg.MODEL.DEPOTR.DETECTOR = CN()
    # Person detector config and weights for "detector" boxes: a path or "model_zoo:<config path>".
    cfg.MODEL.DEPOTR.DETECTOR.CONFIG_FILE = ""
    cfg.MODEL.DEPOTR.DETECTOR.WEIGHTS = ""
    # Detector boxes scoring below this are dropped.
    cfg.MODEL.DEPOTR.DETECTOR.SCORE_THRESH = 0.5
    # Contiguous class id of "person" in the detector's classes.
    cfg.MODEL.DEPOTR.DETECTOR.PERSON_CLASS_ID = 0

    # (H, W) of the person crop fed to the keypoint branch (aspect 4:3 as 256x192).
    cfg.INPUT.CROP_SIZE = (256, 192)
    # Person box -> crop: expand to the crop's aspect, then scale by this factor.
    cfg.INPUT.CROP_PADDING = 1.25
    # RoIAlign samples per crop-pixel side when cropping (0 = adaptive: ceil(box / crop size)).
    cfg.INPUT.CROP_SAMPLING_RATIO = 0

    cfg.INPUT.AUG = CN()
    # Photometric training augmentation of the whole image (Albumentations, pixels only).
    cfg.INPUT.AUG.ENABLED = True
    # Probability of each photometric transform.
    cfg.INPUT.AUG.BLUR_PROB = 0.1
    cfg.INPUT.AUG.RGB_SHIFT_PROB = 0.2
    cfg.INPUT.AUG.BRIGHTNESS_CONTRAST_PROB = 0.3

    cfg.INPUT.CROP_AUG = CN()
    # Geometric per-person augmentation at crop time, all of INPUT.CROP_AUG (docs/config.md).
    cfg.INPUT.CROP_AUG.ENABLED = True
    # Probability per person of a half-body box (HRNet on COCO: 0.3); 0 disables it.
    cfg.INPUT.CROP_AUG.HALF_BODY_PROB = 0.0
    # Only persons with at least this many labelled keypoints (HRNet: more than 8).
    cfg.INPUT.CROP_AUG.HALF_BODY_MIN_KEYPOINTS = 9
    # A body half qualifies with at least this many labelled keypoints, >= 2 (HRNet: more than 2).
    cfg.INPUT.CROP_AUG.HALF_BODY_MIN_PART_KEYPOINTS = 3
    # Half-body box = the half's keypoint box at the crop aspect x this (x CROP_PADDING 1.25 = HRNet's 1.5).
    cfg.INPUT.CROP_AUG.HALF_BODY_PADDING = 1.2
    # Box jitter: size x (1 + r SCALE_FACTOR), centre + r SHIFT_FACTOR x box size (r per value).
    cfg.INPUT.CROP_AUG.SCALE_FACTOR = 0.25
    cfg.INPUT.CROP_AUG.SHIFT_FACTOR = 0.10
    # r: "uniform" in [-1, 1] or "normal" = N(0, 1) clipped to [-1, 1] (SimpleBaseline / HRNet).
    cfg.INPUT.CROP_AUG.SCALE_DISTRIBUTION = "uniform"
    # Rotation about the crop centre: degrees, probability, "uniform" in +-deg or "normal" (docs/config.md).
    cfg.INPUT.CROP_AUG.ROTATION_DEGREES = 10.0
    cfg.INPUT.CROP_AUG.ROTATION_PROB = 0.5
    cfg.INPUT.CROP_AUG.ROTATION_DISTRIBUTION = "uniform"
    # Mirrored crop (keypoints swapped with the keypoint table's flip indices), per person.
    cfg.INPUT.CROP_AUG.FLIP_PROB = 0.5

    # One COCO results json of person detections per DATASETS.TEST entry ("" = none), read only for
    # TEST_BOX_SOURCE "precomputed"; a leading "datasets/" follows $DETECTRON2_DATASETS.
    cfg.DATASETS.PRECOMPUTED_BOXES = ()

    cfg.DATASETS.SYNTHETIC = CN()
    # The embedded synthetic dataset: cache folder, images per split and seed.
    cfg.DATASETS.SYNTHETIC.ROOT = "datasets/synthetic_persons"
    cfg.DATASETS.SYNTHETIC.NUM_TRAIN_IMAGES = 2000
    cfg.DATASETS.SYNTHETIC.NUM_VAL_IMAGES = 200
    cfg.DATASETS.SYNTHETIC.SEED = 0
    # Generator version (3 or 4) of synthetic_persons_train / _val (docs/config.md).
    cfg.DATASETS.SYNTHETIC.GENERATOR_VERSION = 3

    # "ADAMW" (DePOTR) or "SGD" (Detectron2's default).
    cfg.SOLVER.OPTIMIZER = "ADAMW"
    # AdamW's (beta1, beta2).
    cfg.SOLVER.BETAS = (0.9, 0.999)
    # Backbone learning rate = BASE_LR x this (thesis: 1e-5 / 1e-4).
    cfg.SOLVER.BACKBONE_MULTIPLIER = 0.1
    # Learning-rate factor for the sampling offsets and reference points (Deformable DETR).
    cfg.SOLVER.SAMPLING_LR_MULTIPLIER = 0.1
    # Weight decay of embeddings (level embedding, queries); norms use WEIGHT_DECAY_NORM.
    cfg.SOLVER.WEIGHT_DECAY_EMBED = 0.0
    # Final learning rate as a factor of BASE_LR for LR_SCHEDULER_NAME "WarmupLinearLR".
    cfg.SOLVER.FINAL_LR_FACTOR = 0.01
    # Schedule in epochs; when > 0 they override MAX_ITER / WARMUP_ITERS (logged).
    cfg.SOLVER.MAX_EPOCHS = 0
    cfg.SOLVER.WARMUP_EPOCHS = 0.0

    # Flip test: average the predictions on the crop and its mirror.
    cfg.TEST.FLIP = False
    # Inference precision of the keypoint branch's body: "float32", "bfloat16" (CPUs with avx512_bf16
    # or AMX, GPUs) or "float16" (GPUs), under torch.autocast; heads and decoding stay float32.
    cfg.TEST.PRECISION = "float32"
    # Channels-last crops at inference: faster for several R50-size crops, ~20 % slower for one small one.
    cfg.TEST.CHANNELS_LAST = False
    # Heatmap sub-pixel decoding: "none", "shift" (quarter pixel to the higher neighbour), "dark".
    cfg.TEST.HEATMAP_REFINE = "shift"
    # Shift the flipped heatmap by one pixel before averaging (SimpleBaseline; off: docs/config.md).
    cfg.TEST.FLIP_SHIFT_HEATMAP = False
    # OKS-NMS: drop a pose with OKS above this with a higher-scoring one (thesis 0.9; 1.0: off, video).
    cfg.TEST.OKS_NMS_THRESH = 0.9

    cfg.TEST.TRACK = CN()
    # Video tracking (demo --track): similarity = IOU_WEIGHT x box IoU + (1 - IOU_WEIGHT) x OKS (docs/config.md).
    cfg.TEST.TRACK.IOU_WEIGHT = 0.5
    # Persons and tracks less similar than this are not matched.
    cfg.TEST.TRACK.MIN_SIMILARITY = 0.3
    # Frames an unmatched track is kept before it ends (~1/3 s at 25-30 fps).
    cfg.TEST.TRACK.MAX_LOST_FRAMES = 10
    # Constant-velocity motion: a match corrects it by this x centre error per frame (0: no motion).
    cfg.TEST.TRACK.VELOCITY_GAIN = 0.1
    # TEST.OKS_NMS_THRESH when persons are tracked (depotr.tracking.tracking_config): 1.0, off (docs/config.md).
    cfg.TEST.TRACK.OKS_NMS_THRESH = 1.0
    cfg.TEST.SMOOTH = CN()
    # One-Euro smoothing (demo --smooth): cutoff Hz = MIN_CUTOFF + BETA x speed (px/s) (docs/config.md).
    cfg.TEST.SMOOTH.MIN_CUTOFF = 1.0
    cfg.TEST.SMOOTH.BETA = 0.2
    # Cutoff (Hz) of the speed filter.
    cfg.TEST.SMOOTH.D_CUTOFF = 1.0
    # Each keypoint's cutoff x (score / SCORE_REF) ^ SCORE_POWER: unsure keypoints are smoothed more
    # (0.0: plain One-Euro). SCORE_REF: a typical keypoint score of the model (docs/config.md).
    cfg.TEST.SMOOTH.SCORE_REF = 0.5
    cfg.TEST.SMOOTH.SCORE_POWER = 2.0


def load_depotr_config(config_file: str, opts: Sequence[str] = ()) -> CN:
    """Detectron2's defaults + :func:`add_depotr_config`, then ``config_file``, then ``opts``
    (KEY VALUE ...); returns the unfrozen config. Without CUDA a "cuda" ``MODEL.DEVICE`` becomes
    "cpu" (where ``SOLVER.AMP.ENABLED`` trains the keypoint branch under bfloat16 autocast).

    Raises:
        ConfigError: (one line) a missing file (naming its existing ``.yaml`` / ``.yml`` twin) or
            ``_BASE_`` file, invalid YAML (file and line), a file that is no mapping of keys, an odd
            number of ``opts``, a value of the wrong type or an unknown key (with the nearest valid key).
            An integer for a float key, in a file (``WARMUP_EPOCHS: 0``) or in ``opts``
            (``SOLVER.WARMUP_EPOCHS 0``), is taken as that float.
    """
    cfg = get_cfg()
    add_depotr_config(cfg)
    _check_config_file(config_file)
    try:
        _merge_config_file(cfg, config_file)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{mark.name}:{mark.line + 1}" if mark is not None else config_file
        raise ConfigError(f"{where}: invalid YAML: {getattr(e, 'problem', None) or e}") from e
    except KeyError as e:  # yacs: "Non-existent config key: X"
        key = str(e.args[0]).rpartition(": ")[2]
        message = f"{config_file} (or a _BASE_ file) sets the unknown config key {key}{_nearest(cfg, key)}"
        raise ConfigError(message) from None
    except (AssertionError, ValueError) as e:  # a value of the wrong type
        raise ConfigError(f"{config_file}: {e}") from e
    except OSError as e:  # a _BASE_ file that does not exist
        raise ConfigError(f"{config_file} (or a _BASE_ file): cannot read {e.filename}: {e.strerror}") from e
    except (AttributeError, TypeError) as e:  # yacs on a yaml list, scalar or empty file
        raise ConfigError(f"{config_file} (or a _BASE_ file) is not a yaml mapping of config keys ({e})") from e
    opts = [str(o) for o in opts]
    if len(opts) % 2:
        raise ConfigError(f"config overrides must be KEY VALUE pairs; got {len(opts)} values: {' '.join(opts)}")
    keys = _full_keys(cfg)
    for key in opts[0::2]:
        if key not in keys and not cfg.key_is_deprecated(key) and not cfg.key_is_renamed(key):
            raise ConfigError(f"unknown config key {key} in the overrides{_nearest(cfg, key)}")
    try:
        cfg.merge_from_list(_ints_as_floats(cfg, opts))
    except (ValueError, AssertionError) as e:  # yacs: a value of the wrong type
        raise ConfigError(f"config overrides: {e}") from e
    if cfg.MODEL.DEVICE.startswith("cuda") and not torch.cuda.is_available():
        cfg.MODEL.DEVICE = "cpu"
    return cfg


_device_logged = False


def log_device(device: str) -> None:
    """Logs "running on CPU" the first time a model is set up on the CPU in this process."""
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


def _merge_config_file(cfg: CN, config_file: str) -> None:
    """``cfg.merge_from_file(config_file)`` (its ``_BASE_`` chain read by Detectron2), with each
    integer value of a float key taken as that float (:func:`_file_ints_as_floats`). A file of
    another config ``VERSION`` is left to Detectron2's merge, which upgrades or refuses it."""
    loaded = cfg.load_yaml_with_base(config_file, allow_unsafe=True)
    if not isinstance(loaded, dict) or loaded.get("VERSION", cfg.VERSION) != cfg.VERSION:
        cfg.merge_from_file(config_file)  # a yaml list or empty file fails there as before
        return
    _file_ints_as_floats(cfg, loaded)
    cfg.merge_from_other_cfg(type(cfg)(loaded))


def _file_ints_as_floats(defaults: CN, values: dict) -> None:
    """In place: each integer in ``values`` (a config file's nested mapping) whose key is a float
    in ``defaults`` becomes that float, as :func:`_ints_as_floats` does for the overrides."""
    for name, value in values.items():
        default = defaults.get(name) if isinstance(defaults, CN) else None
        if isinstance(value, dict):
            _file_ints_as_floats(default, value)
        elif type(value) is int and type(default) is float and abs(value) <= sys.float_info.max:  # larger: refused
            values[name] = float(value)


def _ints_as_floats(cfg: CN, opts: List[str]) -> List[str]:
    """``opts`` (KEY VALUE ...) with each integer value of a float key written as a float ("0" ->
    "0.0"): yacs refuses an int for a float default ("Type mismatch (<class 'float'> vs. <class
    'int'>)") though the number is the same. Values are read as yacs reads them (``literal_eval``)."""
    opts = list(opts)
    for i in range(0, len(opts), 2):
        node = cfg
        for name in opts[i].split("."):  # a deprecated or renamed key is not in cfg: left to yacs
            node = node.get(name) if isinstance(node, CN) else None
        if type(node) is not float:
            continue
        try:
            value = ast.literal_eval(opts[i + 1])
            if type(value) is int:  # not bool
                opts[i + 1] = repr(float(value))
        except (ValueError, SyntaxError, OverflowError):  # no literal, or an int beyond floats: yacs refuses it
            pass
    return opts


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
