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
