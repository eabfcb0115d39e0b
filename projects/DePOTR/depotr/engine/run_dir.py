"""A run's output folder (``OUTPUT_DIR``): one live run at a time, and no leftovers of a killed one.

* :func:`lock_output_dir`: ``OUTPUT_DIR/run.lock``, held (``flock``) for the life of the run and
  naming its owner (pid, host, start time, command). The kernel drops the lock when its owner dies,
  even by ``kill -9``, so a lock file nobody holds is a dead run's: only ``--resume`` (or
  ``--eval-only``, which writes no checkpoints) may take the folder over, since a fresh training run
  would overwrite its checkpoints. Taking the lock removes the temporary files of killed writes.
  Every refusal is a one-line :class:`~depotr.cli.ConfigError` naming the folder and its files.
* A folder that holds an earlier training run (its ``last_checkpoint``, a non-empty
  ``metrics.json``) takes only ``--resume`` or ``--eval-only`` too: a new training run would append
  its rows to that run's ``metrics.json`` (Detectron2's ``JSONWriter`` appends) and overwrite some of
  its checkpoints, so that the folder reads as one run made of two.
* :func:`config_changes`: the keys in which a resumed run's config differs from the run's
  ``config.yaml`` (:func:`saved_config`), for ``train_net.py`` to warn about (the run continues
  under the new values).
* :func:`run_seed`: the seed of a run whose config leaves ``SEED`` random (< 0), kept in its
  ``config.yaml`` so that ``--resume`` continues the same sample streams (docs/resume.md).
* :func:`drop_metrics_after`: the ``metrics.json`` rows a dead run wrote after its last checkpoint
  (all of them when it left none), which the resumed run writes again, are dropped.
"""

import atexit
import contextlib
import fcntl
import json
import logging
import os
import socket
import sys
import time
from typing import Any, Dict, List, Optional

import yaml

from ..cli import ConfigError
from ..file_io import remove_temporary_files

__all__ = [
    "LOCK_NAME",
    "METRICS_NAME",
    "OutputDirLock",
    "config_changes",
    "drop_metrics_after",
    "lock_output_dir",
    "run_seed",
    "saved_config",
]

logger = logging.getLogger(__name__)

LOCK_NAME = "run.lock"
METRICS_NAME = "metrics.json"  # Detectron2's JSONWriter's, one json object per line
# Locks held by this process, by real path: a process that sets up several runs one after the
# other (tests, notebooks) keeps the folder it already owns.
_HELD: Dict[str, "OutputDirLock"] = {}


class OutputDirLock:
    """The held lock of one output folder. ``previous_owner``: what the lock file said about a run
    that died holding it (None: the folder was free); ``removed_temporaries``: the temporary files
    of its killed writes, deleted."""

    def __init__(self, path: str, fd: int, previous_owner: Optional[Dict[str, Any]], removed_temporaries: List[str]):
        self.path = path
        self.previous_owner = previous_owner
        self.removed_temporaries = removed_temporaries
        self._fd: Optional[int] = fd
        self._logged = False

    def log_recovery(self) -> None:
        """Logs, once, what was taken over from a dead run (call when logging is set up)."""
        if self._logged:
            return
        self._logged = True
        if self.previous_owner is not None:
            folder, owner = os.path.dirname(self.path), _describe(self.previous_owner)
            logger.warning(f"Took over {folder} from a run that died without releasing it: {owner}")
        if self.removed_temporaries:
            removed = ", ".join(self.removed_temporaries)
            logger.info(f"Removed {len(self.removed_temporaries)} temporary files of interrupted writes: {removed}")

    def release(self) -> None:
        """Deletes the lock file and drops the lock (the folder is free again)."""
        if self._fd is None:
            return
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)  # while still holding it, so no one locks the file being deleted
        os.close(self._fd)
        self._fd = None
        _HELD.pop(os.path.dirname(self.path), None)


def _describe(owner: Dict[str, Any]) -> str:
    started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(owner["started"])) if "started" in owner else "?"
    return f"pid {owner.get('pid', '?')} on {owner.get('host', '?')}, started {started}: {owner.get('command', '?')}"


def _alive(pid: Any) -> bool:
    """Whether process ``pid`` of this host exists (an unknown pid counts as alive)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, TypeError):  # another user's process; not a pid
        pass
    return True


def _read_owner(fd: int) -> Optional[Dict[str, Any]]:
    os.lseek(fd, 0, os.SEEK_SET)
    text = os.read(fd, 1 << 16).decode(errors="replace").strip()
    if not text:
        return None
    with contextlib.suppress(ValueError):
        owner = json.loads(text)
        if isinstance(owner, dict):
            return owner
    return {"command": text[:200]}


def _open_locked(path: str) -> Optional[int]:
    """Opens and locks ``path`` (created when missing); None when another process holds it."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        with contextlib.suppress(FileNotFoundError):
            if os.path.samestat(os.fstat(fd), os.stat(path)):
                return fd
        os.close(fd)  # its owner released (deleted) the file between our open and lock: retry


def lock_output_dir(output_dir: str, *, resume: bool, eval_only: bool = False) -> OutputDirLock:
    """Takes ``output_dir``'s run lock (module docstring) for this process, released at exit. Call
    on the main process only, before anything is written into the folder.

    Raises:
        ConfigError naming the folder, its lock file and the owner: another live run holds it, or
            a dead run left it and this run neither resumes nor only evaluates.
        ConfigError naming the folder and the earlier run's files: it holds an earlier training
            run and this run neither resumes nor only evaluates (the lock is released again).
        ConfigError naming the folder and the reason: it cannot be created or its lock file written.
    """
    folder = os.path.realpath(output_dir)
    lock = _HELD.get(folder) or _take_lock(folder, may_take_over=resume or eval_only)
    earlier = [] if resume or eval_only else _training_records(folder)
    if earlier:
        lock.release()
        raise ConfigError(
            f"OUTPUT_DIR {folder} holds an earlier training run ({', '.join(earlier)}), which a new run would mix "
            "with its own (appending to its metrics.json, overwriting its checkpoints): pass --resume to "
            f"{_resume_effect(folder)}, give this run another OUTPUT_DIR, or move those files out of {folder} to "
            "start a new run there"
        )
    return lock


def _take_lock(folder: str, may_take_over: bool) -> OutputDirLock:
    """Locks the real path ``folder`` (created when missing); a dead run's lock only when ``may_take_over``."""
    path = os.path.join(folder, LOCK_NAME)
    try:
        os.makedirs(folder, exist_ok=True)
        fd = _open_locked(path)
    except OSError as e:  # a read-only file system, a file in the way, no permission, a full disk
        raise ConfigError(
            f"OUTPUT_DIR {folder} cannot be written ({e.strerror}: {e.filename or path}): give the run a folder "
            "it can create and write into"
        ) from e
    if fd is None:
        with open(path) as f:
            owner = _read_owner(f.fileno()) or {}
        ending = ""
        if owner.get("host") == socket.gethostname() and not _alive(owner.get("pid")):
            ending = (
                " (its main process has exited; processes it forked, e.g. data loader workers, still hold the lock)"
            )
        raise ConfigError(
            f"OUTPUT_DIR {folder} is in use by another run, which holds {path} ({_describe(owner)}){ending}; "
            "wait for it to finish or give this run another OUTPUT_DIR"
        )
    previous = _read_owner(fd)
    if previous is not None and not may_take_over:
        os.close(fd)
        raise ConfigError(
            f"OUTPUT_DIR {folder} holds the outputs of a run that was killed ({_describe(previous)}), whose lock "
            f"file {path} no process holds: pass --resume to {_resume_effect(folder)}, or give this run another "
            "OUTPUT_DIR"
        )
    owner = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time(), "command": " ".join(sys.argv)}
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps(owner).encode(), 0)
    lock = _HELD[folder] = OutputDirLock(path, fd, previous, remove_temporary_files(folder))
    atexit.register(lock.release)
    return lock


def _resume_effect(folder: str) -> str:
    """What ``--resume`` does with the earlier run of ``folder`` (taking a dead run's stale lock
    over), for the refusals of a new run there; ``Trainer.resume_or_load`` and
    ``checkpoint.checkpoint_to_load``."""
    tag = os.path.join(folder, "last_checkpoint")
    if os.path.isfile(tag):
        return f"continue it from the checkpoint {tag} names (the {METRICS_NAME} rows it wrote after it are dropped)"
    return f"start it again from MODEL.WEIGHTS, as it left no checkpoint (the {METRICS_NAME} rows it wrote are dropped)"


def _training_records(folder: str) -> List[str]:
    """The files by which ``folder`` holds a training run: ``last_checkpoint`` and a non-empty
    ``metrics.json`` (a run that failed before its first row leaves an empty one)."""
    checkpoint_tag, metrics = os.path.join(folder, "last_checkpoint"), os.path.join(folder, METRICS_NAME)
    records = [checkpoint_tag] if os.path.isfile(checkpoint_tag) else []
    return records + ([metrics] if os.path.isfile(metrics) and os.path.getsize(metrics) > 0 else [])


def saved_config(output_dir: str) -> Optional[Dict[str, Any]]:
    """The config in ``output_dir``'s ``config.yaml`` (the run's: Detectron2's ``default_setup``
    writes it, ``train_net.setup`` again with an epoch schedule's iteration counts); None when the
    folder has no such file or it holds no config."""
    try:
        with open(os.path.join(output_dir, "config.yaml")) as f:
            saved = yaml.safe_load(f)
    except (OSError, yaml.YAMLError):
        return None
    return saved if isinstance(saved, dict) else None


def config_changes(saved: Optional[Dict[str, Any]], config_yaml: str) -> List[str]:
    """``"KEY: saved -> new"`` for every config key whose value in ``config_yaml`` (a config's
    ``dump()``) differs from ``saved`` (a run's config, :func:`saved_config`), keys sorted; [] when
    ``saved`` is None (nothing to compare)."""
    if saved is None:
        return []
    saved, new = _flat(saved), _flat(yaml.safe_load(config_yaml))
    missing = "(none)"
    return [
        f"{key}: {saved.get(key, missing)} -> {new.get(key, missing)}"
        for key in sorted(saved.keys() | new.keys())
        if saved.get(key, missing) != new.get(key, missing)
    ]


def run_seed(output_dir: str, resume: bool) -> int:
    """The ``SEED`` (>= 0) for a training run whose config's ``SEED`` is < 0 (Detectron2's "a new
    random seed"): with ``resume``, the one ``output_dir``'s ``config.yaml`` recorded, when it holds
    one; else a new random one. Set as ``cfg.SEED`` before Detectron2's ``default_setup`` writes
    ``config.yaml``, so that a resumed run draws the batches and augmentation of the run it continues
    (a new seed restarted the sampler's permutation mid-epoch and changed every sample's seed)."""
    if resume:
        seed = (saved_config(output_dir) or {}).get("SEED")
        if isinstance(seed, int) and seed >= 0:
            return seed
    return int.from_bytes(os.urandom(4), "little") % 2**31


def _flat(tree: Dict[str, Any], prefix: str = "") -> Dict[str, Any]:
    """A nested dict's leaves by dotted key (``{"SOLVER": {"BASE_LR": 0.1}}`` -> ``{"SOLVER.BASE_LR": 0.1}``)."""
    out: Dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def drop_metrics_after(metrics_file: str, start_iter: int) -> int:
    """Removes the rows of Detectron2's ``metrics.json`` (one json object per line) whose
    "iteration" is >= ``start_iter``, and rows a kill cut short; returns how many. Rewritten in
    place, so that a ``JSONWriter`` that already opened it for appending keeps writing into it."""
    if not os.path.isfile(metrics_file):
        return 0
    with open(metrics_file, "r+") as f:
        lines = f.read().splitlines(keepends=True)
        kept = [line for line in lines if _row_before(line, start_iter)]
        if len(kept) == len(lines):
            return 0
        f.seek(0)
        f.writelines(kept)
        f.truncate()
    dropped = len(lines) - len(kept)
    logger.info(
        f"Dropped {dropped} rows of iterations >= {start_iter} (written after the last checkpoint) or cut short "
        f"from {metrics_file}."
    )
    return dropped


def _row_before(line: str, start_iter: int) -> bool:
    try:
        row = json.loads(line)
    except ValueError:
        return False  # a row cut short
    return not (isinstance(row, dict) and isinstance(row.get("iteration"), int) and row["iteration"] >= start_iter)
