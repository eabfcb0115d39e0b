"""Fixtures for every test."""

import logging

import pytest


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
