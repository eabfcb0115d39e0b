"""Fixtures and helpers for every test."""

import importlib.util
import logging
import os
from types import ModuleType

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_script(path: str) -> ModuleType:
    """The script at ``path`` (relative to the repository root, e.g. ``"tools/export_model.py"``,
    or absolute) loaded as a fresh module named after its file, not registered in ``sys.modules``."""
    path = os.path.join(REPO, path)
    spec = importlib.util.spec_from_file_location(os.path.splitext(os.path.basename(path))[0], path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(autouse=True)
def restore_depotr_logger():
    """Undoes what an entry point's ``setup_logger(name="depotr")`` did to the ``depotr`` logger
    (handlers writing into a test's OUTPUT_DIR, propagation off), so that later tests' caplog
    sees DePOTR's records."""
    root = logging.getLogger("depotr")
    state = (list(root.handlers), root.propagate, root.level)
    yield
    root.handlers[:], root.propagate = state[0], state[1]
    root.setLevel(state[2])


@pytest.fixture
def cpu_processes(monkeypatch):
    """``--num-gpus N`` runs N CPU processes on any machine, as on one without CUDA: with a GPU,
    ``depotr.engine.launch`` would take Detectron2's CUDA launch (NCCL, a device per process;
    one GPU fails) and a "cuda" MODEL.DEVICE would stay cuda. CUDA is hidden from the processes
    the test starts (``CUDA_VISIBLE_DEVICES=""``, inherited by spawned workers and subprocesses
    and read when their torch first asks for CUDA) and from this process (``torch.cuda.is_available``:
    CUDA read the variable when this process first asked, e.g. for a skipif), whose launch decides
    on CPU processes and whose config falls back to MODEL.DEVICE cpu."""
    import torch

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
