"""A Detectron2 checkpointer that never leaves a half-written checkpoint.

fvcore's ``Checkpointer.save`` streams ``torch.save`` straight into the final file and then
rewrites ``last_checkpoint`` in place, so a job killed mid-save leaves a truncated checkpoint
that ``--resume`` then tries to load. Here both are written with ``depotr.file_io.atomic_write``
(a temporary file in the same directory, moved into place with ``os.replace``).
"""
import os
from typing import Any

import torch
from detectron2.checkpoint import DetectionCheckpointer

from ..file_io import atomic_write


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
        atomic_write(save_file, lambda f: torch.save(data, f))
        self.tag_last_checkpoint(basename)

    def tag_last_checkpoint(self, last_filename_basename: str) -> None:
        path = os.path.join(self.save_dir, "last_checkpoint")
        atomic_write(path, lambda f: f.write(last_filename_basename.encode()))
