"""DePOTR's checkpointer (docs/reliability.md): saves are atomic (``depotr.file_io.atomic_write``;
fvcore's left a truncated file when killed mid-save), and loading needs every parameter and buffer
of the model with its shape (Detectron2 only warns), except a backbone-only file (ImageNet
``R-50.pkl``) at the start of a training run, which must hold the whole backbone (every parameter
and buffer; none of its backbone weights left over, as a ResNet of another depth would). The
detector weights old pose checkpoints hold under ``box_source.`` are dropped. Every loading error
(a missing or unreadable file, weights that do not fit, ``last_checkpoint`` naming a missing file)
is a one-line ``ConfigError`` (a ``ValueError``) naming the file. Which file a run loads is
:func:`checkpoint_to_load`'s one rule.
"""

import glob
import logging
import os
import warnings
import zipfile
from typing import Any, Dict, List, Tuple

import torch

from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import CfgNode
from detectron2.modeling import Backbone
from fvcore.common.checkpoint import Checkpointer

from ..cli import RANDOM_WEIGHTS_FLAG, ConfigError, listing
from ..file_io import atomic_write
from ..modeling.meta_arch import build_pose_model
from .compat import checkpoint_file

__all__ = ["DePOTRCheckpointer", "check_checkpoint_fits", "checkpoint_to_load", "resume_checkpoint", "weights_to_load"]

logger = logging.getLogger(__name__)

# Key prefix of the person-detector weights of pose checkpoints from when the detector was a submodule.
_OLD_DETECTOR_PREFIX = "box_source."
# First bytes of the files torch.load reads: a zip archive (torch.save) or a pickle.
_CHECKPOINT_MAGIC = (b"PK\x03\x04", b"\x80")
# fvcore's logger for check_checkpoint_fits: errors only.
_FIT_CHECK_LOGGER = logging.getLogger(f"{__name__}.fit_check")
_FIT_CHECK_LOGGER.setLevel(logging.ERROR)
# Suffixes of the files Detectron2 reads its own way (Detectron / Caffe2 pickles, pycls), not by torch.load.
_OTHER_FORMATS = (".pkl", ".pyth")


def _block_pattern(key: str) -> str:
    """``key`` with its numeric parts (block indices) as "#": ``res2.2.conv1.weight`` -> ``res2.#.conv1.weight``."""
    return ".".join("#" if part.isdigit() else part for part in key.split("."))


def _backbone_like(keys: List[str], backbone_keys: List[str]) -> List[str]:
    """Those of ``keys`` (a file's, unused) named as a backbone weight is, up to block indices
    (``res2.2.conv1.weight`` beside a model's ``...res2.0.conv1.weight``): weights of a deeper
    ResNet. A stage the model lacks (``res5`` of a truncated ResNet) or a classifier is not."""
    patterns = {_block_pattern(k) for k in backbone_keys}
    return [k for k in keys if any(p == _block_pattern(k) or p.endswith("." + _block_pattern(k)) for p in patterns)]


def _read_error_reason(filename: str, error: Exception) -> str:
    """A one-line reason why ``filename`` could not be read (torch's run to a page of advice)."""
    with open(filename, "rb") as f:
        head = f.read(4)
    if not filename.endswith(_OTHER_FORMATS) and not head.startswith(_CHECKPOINT_MAGIC):
        return "it is not a checkpoint (neither a torch.save zip archive nor a pickle)"
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    detail = next((line for line in lines if line.startswith("WeightsUnpickler error:")), lines[0] if lines else "")
    return f"{type(error).__name__}: {detail.split('. ')[0]}"


def weights_to_load(weights: str, random_weights: bool = False) -> bool:
    """The one ``MODEL.WEIGHTS`` rule of everything that runs a model (``Predictor``, export, demo,
    tools, ``train_net.py --eval-only``): whether to load ``weights``. Empty ``weights`` need
    ``random_weights`` (``--random-weights``; then False, warned); a ConfigError otherwise, and for
    ``random_weights`` with ``weights`` set or a local path (no "://") that names no file
    (``compat.checkpoint_file``: Detectron2 main reads a ``?matching_heuristics=True`` query off it).
    """
    if random_weights:
        if weights:
            raise ConfigError(f"{RANDOM_WEIGHTS_FLAG} asked for random weights, but MODEL.WEIGHTS is {weights}")
        logger.warning("MODEL.WEIGHTS is empty: the pose model runs with random weights (asked for)")
        return False
    if not weights:
        raise ConfigError(
            "MODEL.WEIGHTS is empty: set it to a checkpoint (MODEL.WEIGHTS path/to/model_final.pth), or pass "
            f"{RANDOM_WEIGHTS_FLAG} (Predictor(cfg, random_weights=True)) to run with random weights"
        )
    if "://" not in weights and not os.path.isfile(checkpoint_file(weights)):
        raise ConfigError(f"MODEL.WEIGHTS {weights}: no such checkpoint file")
    return True


def resume_checkpoint(output_dir: str) -> str:
    """The checkpoint ``--resume`` loads from ``output_dir``: the file its ``last_checkpoint``
    names, "" when there is no ``last_checkpoint`` (the run starts from ``MODEL.WEIGHTS``); a
    ConfigError naming both when that file is missing."""
    tag = os.path.join(output_dir, "last_checkpoint")
    if not os.path.isfile(tag):
        return ""
    with open(tag) as f:
        name = f.read().strip()
    last = os.path.join(output_dir, name)
    if not name or not os.path.isfile(last):
        named = f"names the checkpoint {last}, which does not exist" if name else "is empty"
        raise ConfigError(
            f"{tag} {named}: write the name of a checkpoint of {output_dir or '.'} into it, or remove it to start "
            "afresh"
        )
    return last


def checkpoint_to_load(output_dir: str, weights: str, resume: bool) -> Tuple[str, bool]:
    """The one rule of which file a run loads into its model (:meth:`DePOTRCheckpointer.resume_or_load`,
    hence the trainer, ``train_net.py --eval-only`` and ``train_net.py``'s checks): with ``resume``,
    the checkpoint ``output_dir``'s ``last_checkpoint`` names when there is one
    (:func:`resume_checkpoint`, whose ConfigError names a missing one), else ``weights``
    (``MODEL.WEIGHTS``; "" loads nothing). Returns (the file, whether it resumes the run)."""
    last = resume_checkpoint(output_dir) if resume else ""
    return (last, True) if last else (weights, False)


def check_checkpoint_fits(cfg: CfgNode, *, resume: bool, eval_only: bool) -> None:
    """Loads what ``train_net.py`` will load (:func:`checkpoint_to_load` of ``cfg``'s OUTPUT_DIR and
    MODEL.WEIGHTS), under the same rules (a backbone-only file starts a training run only), into
    ``cfg``'s model as the run builds it (``eval_only``: the inference model, else the training one,
    whose ConfigErrors, e.g. of ``INPUT.CROP_AUG``, come up front) on the meta device: the
    ConfigError of :class:`DePOTRCheckpointer` naming the parameters when it does not fit. Only
    names and shapes are read (the model has no data, a ``torch.save`` file is memory-mapped); the
    run's real load reads the file. ``train_net.py`` calls it before Detectron2's ``default_setup``
    overwrites the run's ``config.yaml`` with ``cfg``."""
    with torch.device("meta"):
        model = build_pose_model(cfg, training=not eval_only)
    checkpointer = DePOTRCheckpointer(model, cfg.OUTPUT_DIR, allow_backbone_only=not eval_only)
    checkpointer.logger = _FIT_CHECK_LOGGER  # the real load logs what fvcore reports (keys not loaded)
    with warnings.catch_warnings():  # torch warns for each tensor that loading into the meta device does nothing
        warnings.filterwarnings("ignore", message=".*to a meta parameter in the current model", category=UserWarning)
        checkpointer.resume_or_load(cfg.MODEL.WEIGHTS, resume=resume)


class _MemoryMappedLoad(Checkpointer):
    """fvcore's read of a ``torch.save`` file, memory-mapped when the model has no data (on the
    meta device, :func:`check_checkpoint_fits`): its tensors are never read. It sits between
    ``DetectionCheckpointer`` and fvcore's ``Checkpointer`` (``DePOTRCheckpointer``'s bases), so
    Detectron2's ``_load_file`` still runs around it, the fit check as the real load (main's
    ``?matching_heuristics=True`` query, the ``{"model": ...}`` wrapping)."""

    def _load_file(self, f: str) -> Dict[str, Any]:
        if any(t.is_meta for t in self.model.state_dict().values()) and zipfile.is_zipfile(f):
            return torch.load(f, map_location="cpu", mmap=True)
        return super()._load_file(f)


class DePOTRCheckpointer(DetectionCheckpointer, _MemoryMappedLoad):
    """``DetectionCheckpointer`` with atomic saves and strict loading (module docstring)."""

    def __init__(
        self, model: torch.nn.Module, save_dir: str = "", *, allow_backbone_only: bool = False, **checkpointables: Any
    ):
        """``allow_backbone_only``: accept a backbone-only file (ImageNet weights) when
        :meth:`resume_or_load` initialises the model (not when it resumes); the other arguments
        as ``DetectionCheckpointer``'s."""
        super().__init__(model, save_dir, **checkpointables)
        self.allow_backbone_only = allow_backbone_only
        self._initialising = False
        self._path = ""  # the file being loaded, for messages
        self._loading: Dict[str, Any] = {}  # the weights fvcore loads into the model

    def save(self, name: str, **kwargs: Any) -> None:
        if not self.save_dir or not self.save_to_disk:
            return
        data = {"model": self.model.state_dict(), **{k: v.state_dict() for k, v in self.checkpointables.items()}}
        data.update(kwargs)
        save_file = os.path.join(self.save_dir, f"{name}.pth")
        self.logger.info("Saving checkpoint to %s", save_file)
        atomic_write(save_file, lambda f: torch.save(data, f))
        self.tag_last_checkpoint(f"{name}.pth")

    def tag_last_checkpoint(self, last_filename_basename: str) -> None:
        path = os.path.join(self.save_dir, "last_checkpoint")
        atomic_write(path, lambda f: f.write(last_filename_basename.encode()))

    def resume_or_load(self, path: str, *, resume: bool = True) -> Dict[str, Any]:
        """As fvcore's (:func:`checkpoint_to_load`): the last checkpoint of ``save_dir`` with every
        checkpointable when ``resume`` and one exists, else the model's weights from ``path``."""
        checkpoint, resumes = checkpoint_to_load(self.save_dir, path, resume)
        if resumes:
            try:
                return self.load(checkpoint)
            except ValueError as e:
                if zipfile.is_zipfile(checkpoint):  # a complete torch.save file
                    raise
                raise ConfigError(f"{e}. {self._earlier_checkpoint_hint(checkpoint)}") from e
        self._initialising = True
        try:
            return self.load(checkpoint, checkpointables=[])
        finally:
            self._initialising = False

    def load(self, path: str, *args: Any, **kwargs: Any) -> Dict[str, Any]:
        """As fvcore's (empty ``path``: nothing loaded); a missing local file, or weights that do
        not fit, are a ConfigError naming ``path``."""
        self._path = path
        if path and "://" not in path and not os.path.isfile(checkpoint_file(path)):
            raise ConfigError(f"checkpoint {path}: no such file")
        try:
            return super().load(path, *args, **kwargs)
        except ConfigError:
            raise
        except ValueError as e:  # Detectron2's name matching, for one
            raise ConfigError(f"checkpoint {path}: {e}") from e

    def _earlier_checkpoint_hint(self, broken: str) -> str:
        """Names the newest complete checkpoint of ``save_dir`` other than ``broken``."""
        others = [p for p in glob.glob(os.path.join(self.save_dir, "*.pth")) if not os.path.samefile(p, broken)]
        complete = sorted(filter(zipfile.is_zipfile, others), key=os.path.getmtime)
        tag = os.path.join(self.save_dir, "last_checkpoint")
        if not complete:
            return f"There is no complete earlier checkpoint in {self.save_dir}: remove {tag} to start afresh"
        name = os.path.basename(complete[-1])
        return f"The newest complete earlier checkpoint is {complete[-1]}: write '{name}' into {tag} to resume from it"

    def _load_file(self, filename: str) -> Dict[str, Any]:
        try:
            return super()._load_file(filename)
        except Exception as e:  # torch.load / pickle raise many types for files that are not checkpoints
            raise ConfigError(f"cannot read checkpoint {filename}: {_read_error_reason(filename, e)}") from e

    def _convert_ndarray_to_tensor(self, state_dict: Dict[str, Any]) -> None:
        # fvcore's _load_model calls this last on the very dict it loads (after Detectron2's name
        # matching, before dropping weights of another shape): what the file holds, unlike what
        # load_state_dict reports (FrozenBatchNorm2d fills in running_mean / running_var).
        super()._convert_ndarray_to_tensor(state_dict)
        self._loading = state_dict

    def _load_model(self, checkpoint: Any):
        weights = checkpoint["model"]
        old_detector = [k for k in weights if k.startswith(_OLD_DETECTOR_PREFIX)]
        for k in old_detector:
            del weights[k]
        if old_detector:
            logger.info(
                f"checkpoint {self._path}: dropped {len(old_detector)} person-detector weights "
                f"({_OLD_DETECTOR_PREFIX}*) of a checkpoint from when the detector was part of the pose model; the "
                "detector loads MODEL.DEPOTR.DETECTOR.WEIGHTS"
            )
        expected = list(self.model.state_dict())
        incompatible = super()._load_model(checkpoint)
        mismatched = [(k, a, b) for k, a, b in incompatible.incorrect_shapes if k in expected]
        missing = sorted(set(incompatible.missing_keys).intersection(expected) - {k for k, _, _ in mismatched})
        if not mismatched and not missing:
            return incompatible
        held = set(self._loading)
        loaded = [k for k in expected if k in held]
        # BatchNorm's step counter: Detectron2's name matching pairs it with any other BatchNorm's.
        loaded_weights = [k for k in loaded if not k.endswith("num_batches_tracked")]
        where = f"checkpoint {self._path}"
        if not loaded_weights:
            found = [f"not in it: {listing(missing, 3)}"] if missing else []
            if mismatched:
                found.append(f"{len(mismatched)} of another shape: {listing([k for k, _, _ in mismatched], 3)}")
            if incompatible.unexpected_keys:
                found.append(f"it holds {listing(incompatible.unexpected_keys, 3)}")
            raise ConfigError(
                f"{where} holds none of the model's {len(expected)} parameters and buffers ({'; '.join(found)})"
            )
        backbone = tuple(f"{n}." for n, m in self.model.named_modules() if isinstance(m, Backbone) and n)
        backbone_only = not mismatched and bool(backbone) and all(k.startswith(backbone) for k in loaded_weights)
        if backbone_only:
            # The whole backbone, or its random part would train (or stay frozen) unnoticed.
            not_loaded = [k for k in missing if k.startswith(backbone) and not k.endswith("num_batches_tracked")]
            backbone_keys = [k for k in expected if k.startswith(backbone)]
            left_over = _backbone_like(incompatible.unexpected_keys, backbone_keys)
            if not_loaded or left_over:
                problems = [f"{len(not_loaded)} are not in it: {listing(not_loaded)}"] if not_loaded else []
                if left_over:
                    problems.append(
                        f"{len(left_over)} backbone weights of it fit none of the model's: {listing(left_over)}"
                    )
                raise ConfigError(
                    f"{where} holds backbone weights only, but not those of the model's backbone (a ResNet of "
                    f"another depth? see MODEL.RESNETS): of its {len(backbone_keys)} parameters and buffers, "
                    + "; ".join(problems)
                )
        if backbone_only and self.allow_backbone_only and self._initialising:
            # Counted from the file: fvcore leaves BatchNorm step counters it lacks out of missing_keys.
            random_keys = [k for k in expected if k not in held]
            groups = listing(sorted({".".join(k.split(".")[:3]) for k in random_keys}))
            logger.info(
                f"{where} holds backbone weights only: loaded {len(loaded)} of the model's {len(expected)} "
                f"parameters and buffers; the other {len(random_keys)} ({groups}) keep their random initialisation."
            )
            return incompatible
        problems = [f"{len(missing)} are not in it: {listing(missing)}"] if missing else []
        if mismatched:
            shapes = [f"{k} {tuple(a)} in the checkpoint, {tuple(b)} in the model" for k, a, b in mismatched]
            problems.append(f"{len(mismatched)} have another shape: " + listing(shapes))
        kind = (
            "holds backbone weights only, which can start a training run but not be evaluated or resumed"
            if backbone_only
            else "does not fit the model (a checkpoint of another config?)"
        )
        raise ConfigError(
            f"{where} {kind}: of the model's {len(expected)} parameters and buffers, " + "; ".join(problems)
        )
