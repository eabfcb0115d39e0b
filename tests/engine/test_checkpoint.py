"""Checkpoints are written whole or not at all."""
import os

import pytest
import torch
from torch import nn

from depotr.engine import AtomicDetectionCheckpointer


def test_save_writes_checkpoint_and_tag(tmp_path):
    model = nn.Linear(3, 2)
    checkpointer = AtomicDetectionCheckpointer(model, str(tmp_path))
    checkpointer.save("model_0000009", iteration=9)
    assert (tmp_path / "last_checkpoint").read_text() == "model_0000009.pth"
    data = torch.load(tmp_path / "model_0000009.pth")
    torch.testing.assert_close(data["model"]["weight"], model.weight)
    assert data["iteration"] == 9
    assert sorted(os.listdir(tmp_path)) == ["last_checkpoint", "model_0000009.pth"]


def test_interrupted_save_leaves_previous_checkpoint_intact(tmp_path, monkeypatch):
    model = nn.Linear(3, 2)
    checkpointer = AtomicDetectionCheckpointer(model, str(tmp_path))
    checkpointer.save("model_final")
    before = (tmp_path / "model_final.pth").read_bytes()

    def dying_save(obj, f, *args, **kwargs):
        f.write(b"partial")
        raise KeyboardInterrupt("killed while writing")

    monkeypatch.setattr(torch, "save", dying_save)
    with torch.no_grad():
        model.weight.add_(1.0)
    with pytest.raises(KeyboardInterrupt):
        checkpointer.save("model_final")
    assert (tmp_path / "model_final.pth").read_bytes() == before
    assert (tmp_path / "last_checkpoint").read_text() == "model_final.pth"
    assert sorted(os.listdir(tmp_path)) == ["last_checkpoint", "model_final.pth"]  # no temp file left
