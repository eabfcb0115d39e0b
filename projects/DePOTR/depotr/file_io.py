"""Files written whole or not at all: every output DePOTR writes (checkpoints, the synthetic
dataset's json, exported models, demo results) goes through here.

A temporary file in the destination's directory is written, flushed to disk and moved onto the
destination with ``os.replace`` (atomic on POSIX); if writing fails the temporary file is removed
and the destination is left as it was.
"""
import contextlib
import os
import tempfile
from typing import BinaryIO, Callable, Iterator

__all__ = ["atomic_output_path", "atomic_write"]


@contextlib.contextmanager
def atomic_output_path(path: str) -> Iterator[str]:
    """Yields a temporary path next to ``path`` for the block to write (by name: for writers
    that take a path, e.g. ``torch.onnx.export``); when the block succeeds the file is synced
    and moved onto ``path``, otherwise removed."""
    directory, name = os.path.split(os.path.abspath(path))
    fd, tmp_path = tempfile.mkstemp(prefix=".tmp-", suffix="-" + name, dir=directory)
    os.close(fd)
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
