"""DePOTR: deformable pose transformer for top-down human pose estimation in Detectron2.

``import depotr`` registers DePOTR's components (meta-architecture, datasets) with Detectron2;
``depotr.Predictor`` is the Python inference API (images -> person keypoints).
On a machine with PyTorch alone (no Detectron2), only ``depotr.layers`` (the multi-scale
deformable attention op) is usable, so that the op builds and tests there.
"""

import importlib.util

if importlib.util.find_spec("detectron2") is not None:
    from . import data, evaluation, modeling  # noqa: F401  (registers components)
    from .config import add_depotr_config  # noqa: F401
    from .predictor import Predictor  # noqa: F401
