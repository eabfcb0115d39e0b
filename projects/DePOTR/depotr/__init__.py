"""DePOTR: deformable pose transformer for top-down human pose estimation in Detectron2.

``depotr.Predictor`` is the Python inference API (images -> person keypoints). ``import depotr``
itself imports neither torch nor Detectron2, so that the command-line entry points answer
``--help`` and report argument mistakes at once (``depotr.cli``); ``depotr.Predictor`` and
``depotr.add_depotr_config`` are imported on first use. DePOTR's components register with
Detectron2 when their package is imported: ``depotr.modeling`` (the meta-architecture; every
module that builds a model imports it) and ``depotr.data`` (the datasets). On a machine with
PyTorch alone (no Detectron2), only ``depotr.layers`` (the multi-scale deformable attention op)
is usable, so that the op builds and tests there.
"""

import importlib

# Public name -> the submodule it is imported from on first use.
_LAZY_ATTRIBUTES = {"Predictor": ".predictor", "add_depotr_config": ".config"}


def __getattr__(name: str):
    if name in _LAZY_ATTRIBUTES:
        return getattr(importlib.import_module(_LAZY_ATTRIBUTES[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
