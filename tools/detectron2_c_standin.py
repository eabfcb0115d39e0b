"""Stand-in for Detectron2's compiled ``detectron2._C`` module.

Installed as ``detectron2/_C.py`` by ``tools/install.sh`` when Detectron2 v0.6 is built from
the PyPI sdist, which lacks the C++ sources. Detectron2 imports ``_C`` at import time in a few
modules; DePOTR needs none of its kernels (RoIAlign is backed by torchvision). Version queries
answer; every kernel raises a clear ``NotImplementedError``.
"""

import torch


def get_compiler_version() -> str:
    return "none (detectron2._C stand-in installed by DePOTR's tools/install.sh)"


def get_cuda_version() -> str:
    return torch.version.cuda or "none"


def has_cuda() -> bool:
    return False


def __getattr__(name: str):
    if name.startswith("__"):
        raise AttributeError(name)
    raise NotImplementedError(
        f"detectron2._C.{name} is not available: this Detectron2 was installed without its C++ "
        "extension (DePOTR's tools/install.sh stand-in). Install official Detectron2 from source "
        "to use it (for COCOEvaluator, pass use_fast_impl=False)."
    )
