"""A Detectron2 checkpointer that never leaves a half-written checkpoint.

fvcore's ``Checkpointer.save`` streams ``torch.save`` straight into the final file and then
rewrites ``last_checkpoint`` in place, so a job killed mid-save leaves a truncated checkpoint
that ``--resume`` then tries to load. Here both are written to a temporary file in the same
directory and moved into place with ``os.replace`` (atomic on POSIX).
"""
import os
import tempfile
from typing import Any

import torch
from detectron2.checkpoint import DetectionCheckpointer


def _atomic_write(path: str, write) -> None:
    directory = os.path.dirname(path) or "."
    fd, tmp_path = tempfile.mkstemp(prefix=".tmp-", suffix="-" + os.path.basename(path), dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp_path, path)
    except BaseException:
        if os.path.exists(tmp_path):
            os.remove(tmp_path)
        raise


class AtomicDetectionCheckpointer(DetectionCheckpointer):
    """``DetectionCheckpointer`` whose ``save`` and ``last_checkpoint`` tag are atomic."""

    def save(self, name: str, **kwargs: Any) -> None:
        if not self.save_dir or not self.save_to_disk:
            return
        data = {"model": self.model.state_dict()}
        for key, obj in self.checkpointables.items():
            data[key] = obj.state_dict()
        data.update(kwargs)
        basename = f"{name}.pth"
        save_file = os.path.join(self.save_dir, basename)
        self.logger.info("Saving checkpoint to %s", save_file)
        _atomic_write(save_file, lambda f: torch.save(data, f))
        self.tag_last_checkpoint(basename)

    def tag_last_checkpoint(self, last_filename_basename: str) -> None:
        path = os.path.join(self.save_dir, "last_checkpoint")
        _atomic_write(path, lambda f: f.write(last_filename_basename.encode()))
