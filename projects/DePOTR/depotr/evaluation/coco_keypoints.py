"""Detectron2's ``COCOEvaluator`` set up for person keypoints (OKS AP/AR).

The evaluator's fast path (``use_fast_impl=True``) needs Detectron2's compiled
``_C.COCOevalMaskApi``; a Detectron2 installed without its C++ extension (our CPU install
route) lacks it, so we check for it instead of assuming it.
"""
from typing import Optional, Sequence

from detectron2.evaluation import COCOEvaluator


def has_fast_coco_eval() -> bool:
    """Whether Detectron2's compiled COCO evaluation (``_C.COCOevalMaskApi``) is usable."""
    try:
        from detectron2 import _C

        return callable(getattr(_C, "COCOevalMaskApi"))
    except (ImportError, AttributeError, NotImplementedError):
        return False


def build_keypoint_evaluator(
    dataset_name: str,
    oks_sigmas: Sequence[float],
    output_dir: Optional[str] = None,
    distributed: bool = True,
) -> COCOEvaluator:
    """Returns a ``COCOEvaluator`` computing the 10 COCO keypoint metrics on ``dataset_name``.

    Args:
        dataset_name: a dataset registered in ``DatasetCatalog`` with COCO-style metadata.
        oks_sigmas: per-keypoint OKS sigmas (K,), e.g. ``cfg.TEST.KEYPOINT_OKS_SIGMAS``.
        output_dir: where the evaluator dumps predictions (``None``: nowhere).
        distributed: gather predictions from all ranks before evaluating on the main one.
    """
    if len(oks_sigmas) == 0:
        raise ValueError("oks_sigmas is empty: set TEST.KEYPOINT_OKS_SIGMAS (one sigma per keypoint)")
    return COCOEvaluator(
        dataset_name,
        tasks=("keypoints",),
        distributed=distributed,
        output_dir=output_dir,
        use_fast_impl=has_fast_coco_eval(),
        kpt_oks_sigmas=tuple(oks_sigmas),
    )
