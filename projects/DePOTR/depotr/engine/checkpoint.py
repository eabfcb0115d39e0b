"""DePOTR's checkpointer (docs/reliability.md): saves are atomic (``depotr.file_io.atomic_write``;
fvcore's left a truncated file when killed mid-save), and loading needs every parameter and buffer
of the model with its shape (Detectron2 only warns), except a backbone-only file (ImageNet
``R-50.pkl``) at the start of a training run. The detector weights old pose checkpoints hold under
``box_source.`` are dropped; an unreadable file is a one-line ``ValueError``.
"""

import glob
import logging
import os
import zipfile
from typing import Any, Dict, List

import torch

from detectron2.checkpoint import DetectionCheckpointer
from detectron2.modeling import Backbone

from ..cli import RANDOM_WEIGHTS_FLAG, ConfigError
from ..file_io import atomic_write

__all__ = ["DePOTRCheckpointer", "weights_to_load"]

logger = logging.getLogger(__name__)

_LISTED = 8  # names listed in an error message before "... and N more"
# Key prefix of the person-detector weights of pose checkpoints from when the detector was a submodule.
_OLD_DETECTOR_PREFIX = "box_source."
# First bytes of the files torch.load reads: a zip archive (torch.save) or a pickle.
_CHECKPOINT_MAGIC = (b"PK\x03\x04", b"\x80")


def _listing(names: List[str]) -> str:
    more = f" ... and {len(names) - _LISTED} more" if len(names) > _LISTED else ""
    return ", ".join(names[:_LISTED]) + more


def _read_error_reason(filename: str, error: Exception) -> str:
    """A one-line reason why ``filename`` could not be read (torch's run to a page of advice)."""
    with open(filename, "rb") as f:
        head = f.read(4)
    if not filename.endswith((".pkl", ".pyth")) and not head.startswith(_CHECKPOINT_MAGIC):
        return "it is not a checkpoint (neither a torch.save zip archive nor a pickle)"
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    detail = next((line for line in lines if line.startswith("WeightsUnpickler error:")), lines[0] if lines else "")
    return f"{type(error).__name__}: {detail.split('. ')[0]}"


def weights_to_load(weights: str, random_weights: bool = False) -> bool:
    """The one ``MODEL.WEIGHTS`` rule of everything that runs a model (``Predictor``, export, demo,
    tools, ``train_net.py --eval-only``): whether to load ``weights``. Empty ``weights`` need
    ``random_weights`` (``--random-weights``; then False, warned); a ConfigError otherwise, and for
    ``random_weights`` with ``weights`` set or a local path (no "://") that is not a file.
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
    if "://" not in weights and not os.path.isfile(weights):
        raise ConfigError(f"MODEL.WEIGHTS {weights}: no such checkpoint file")
    return True


class DePOTRCheckpointer(DetectionCheckpointer):
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
        """As fvcore's: the last checkpoint of ``save_dir`` with every checkpointable when
        ``resume`` and one exists, else the model's weights from ``path``."""
        if resume and self.has_checkpoint():
            last = self.get_checkpoint_file()
            try:
                return self.load(last)
            except ValueError as e:
                if not os.path.isfile(last) or zipfile.is_zipfile(last):  # a complete torch.save file
                    raise
                raise ValueError(f"{e}. {self._earlier_checkpoint_hint(last)}") from e
        self._initialising = True
        try:
            return self.load(path, checkpointables=[])
        finally:
            self._initialising = False

    def load(self, path: str, *args: Any, **kwargs: Any) -> Dict[str, Any]:
        self._path = path
        return super().load(path, *args, **kwargs)

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
            raise ValueError(f"cannot read checkpoint {filename}: {_read_error_reason(filename, e)}") from e

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
        loaded = [k for k in expected if k not in set(incompatible.missing_keys)]
        # BatchNorm's step counter: Detectron2's name matching pairs it with any other BatchNorm's.
        loaded_weights = [k for k in loaded if not k.endswith("num_batches_tracked")]
        where = f"checkpoint {self._path}"
        if not loaded_weights:
            raise ValueError(
                f"{where} holds none of the model's {len(expected)} parameters and buffers "
                f"(it holds {_listing(incompatible.unexpected_keys)})"
            )
        backbone = tuple(f"{n}." for n, m in self.model.named_modules() if isinstance(m, Backbone) and n)
        backbone_only = not mismatched and bool(backbone) and all(k.startswith(backbone) for k in loaded_weights)
        if backbone_only and self.allow_backbone_only and self._initialising:
            groups = _listing(sorted({".".join(k.split(".")[:3]) for k in missing}))
            logger.info(
                f"{where} holds backbone weights only: loaded {len(loaded)} of the model's {len(expected)} parameters "
                f"and buffers; the other {len(missing)} ({groups}) keep their random initialisation."
            )
            return incompatible
        problems = [f"{len(missing)} are not in it: {_listing(missing)}"] if missing else []
        if mismatched:
            shapes = [f"{k} {tuple(a)} in the checkpoint, {tuple(b)} in the model" for k, a, b in mismatched]
            problems.append(f"{len(mismatched)} have another shape: " + _listing(shapes))
        kind = (
            "holds backbone weights only, which can start a training run but not be evaluated or resumed"
            if backbone_only
            else "does not fit the model (a checkpoint of another config?)"
        )
        raise ValueError(
            f"{where} {kind}: of the model's {len(expected)} parameters and buffers, " + "; ".join(problems)
        )
