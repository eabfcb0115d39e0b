"""Files written whole or not at all (every output DePOTR writes goes through here), and checked
json reads.

A temporary file ``.tmp-<random>-<name>`` in the destination's directory is written, synced and
moved onto the destination with ``os.replace`` (atomic on POSIX); if writing fails it is removed
and the destination is left as it was. A process killed mid-write leaves its temporary file
behind: :func:`remove_temporary_files` deletes those once nothing else can be writing there.
"""

import contextlib
import json
import math
import os
import secrets
from collections import Counter
from typing import Any, BinaryIO, Callable, Iterable, Iterator, List, Optional

import numpy as np

from .cli import ConfigError

__all__ = [
    "TEMPORARY_PREFIX",
    "atomic_output_path",
    "atomic_write",
    "is_finite_number",
    "load_json",
    "load_json_list",
    "output_problem",
    "remove_temporary_files",
    "repeated_ids",
    "temporary_path",
    "write_image",
]

# Name prefix of every temporary file or folder made here.
TEMPORARY_PREFIX = ".tmp-"


def temporary_path(path: str) -> str:
    """A fresh name ``.tmp-<random>-<name>`` next to ``path`` (nothing is created)."""
    directory, name = os.path.split(os.path.abspath(path))
    return os.path.join(directory, f"{TEMPORARY_PREFIX}{secrets.token_hex(6)}-{name}")


@contextlib.contextmanager
def atomic_output_path(path: str) -> Iterator[str]:
    """Yields a temporary path next to ``path`` for the block to write (for writers that take a
    path, e.g. ``torch.onnx.export``); when the block succeeds the file is synced and moved onto
    ``path``, otherwise removed."""
    tmp_path = temporary_path(path)
    # Mode 0o666 filtered by the umask (tempfile.mkstemp would give 0o600).
    os.close(os.open(tmp_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    try:
        yield tmp_path
        with open(tmp_path, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp_path, path)
    finally:
        if os.path.exists(tmp_path):
            os.remove(tmp_path)


def atomic_write(path: str, write: Callable[[BinaryIO], None]) -> None:
    """Calls ``write`` with a binary file object whose content becomes ``path`` atomically."""
    with atomic_output_path(path) as tmp_path:
        with open(tmp_path, "wb") as f:
            write(f)


def write_image(path: str, image: np.ndarray) -> None:
    """Writes the (H, W, 3) uint8 BGR ``image`` to ``path``, encoded as its extension says (.png,
    .jpg, ...), whole or not at all."""
    import cv2

    try:
        ok, encoded = cv2.imencode(os.path.splitext(path)[1], image)
    except cv2.error:  # an extension with no encoder
        ok = False
    if not ok:
        raise OSError(f"cannot encode {path} (an image extension: .png, .jpg, ...)")
    atomic_write(path, lambda f: f.write(encoded.tobytes()))


def output_problem(path: str, folder: bool = False, create: bool = False) -> Optional[str]:
    """Why the file ``path`` (with ``folder``: the folder ``path`` to write into) cannot be
    written, or None: for tools to check their outputs before the work. Problems: a folder of the
    file's name, a missing, read-only or non-folder folder. ``create``: a missing folder (and its
    parents) is made, as the tool would, rather than a problem."""
    directory = os.path.abspath(path) if folder else os.path.dirname(os.path.abspath(path))
    where = "it" if folder else f"its folder {directory}"
    if not folder and os.path.isdir(path):
        return "it is a folder"
    if create and not os.path.exists(directory):
        try:
            os.makedirs(directory, exist_ok=True)
        except OSError as e:
            return f"{where} cannot be made: {e.strerror} ({e.filename})"
    if not os.path.isdir(directory):
        return f"{where} {'is not a folder' if os.path.exists(directory) else 'does not exist'}"
    if not os.access(directory, os.W_OK | os.X_OK):
        return f"{where} is not writable"
    return None


def remove_temporary_files(directory: str) -> List[str]:
    """Deletes the temporary files of :func:`atomic_output_path` that killed writers left in
    ``directory`` and its subfolders; returns their paths. Call it only while no other process
    can be writing there (e.g. holding the folder's run lock)."""
    removed = []
    for folder, _, files in os.walk(directory):
        for name in files:
            if name.startswith(TEMPORARY_PREFIX):
                path = os.path.join(folder, name)
                with contextlib.suppress(FileNotFoundError):
                    os.remove(path)
                    removed.append(path)
    return removed


def load_json(json_file: str, what: str) -> Any:
    """The contents of ``json_file``; FileNotFoundError / ValueError naming "``what`` file" when
    it is missing or not json."""
    if not os.path.isfile(json_file):
        raise FileNotFoundError(f"{what} file not found: {json_file}")
    try:
        with open(json_file) as f:
            return json.load(f)
    except ValueError as e:
        raise ValueError(f"{what} file {json_file} is not valid json: {e}") from e


def load_json_list(json_file: str, what: str, items: str) -> List[Any]:
    """The list that ``json_file`` holds (:func:`load_json`), for the input files a run reads (MPII
    annotations, precomputed boxes): a ConfigError (one ``error:`` line from the commands) naming
    "``what`` file" when it is missing, not json, or not a list (of ``items``)."""
    try:
        data = load_json(json_file, what)
    except (OSError, ValueError) as e:
        raise ConfigError(str(e)) from e
    if not isinstance(data, list):
        raise ConfigError(f"{what} file {json_file}: expected a list of {items}, got {type(data).__name__}")
    return data


def repeated_ids(ids: Iterable[Any]) -> List[str]:
    """The ids (as sorted strings) that occur more than once in ``ids`` (e.g. a json's image ids:
    Detectron2 and pycocotools index by id, and a repeated one silently merges two entries)."""
    return sorted(str(i) for i, n in Counter(ids).items() if n > 1)


def is_finite_number(value: Any) -> bool:
    """Whether a value read from json is a finite int or float (not a bool, NaN or infinity)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
