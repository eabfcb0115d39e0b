"""Detectron2's ``COCOEvaluator`` set up for person keypoints (OKS AP/AR). Its fast path needs
Detectron2's compiled COCO evaluation, which a Detectron2 built without its C++ extension
(tools/install.sh's v0.6 route) lacks."""

from typing import Optional, Sequence

from detectron2.evaluation import COCOEvaluator


def build_keypoint_evaluator(
    dataset_name: str,
    oks_sigmas: Sequence[float],
    output_dir: Optional[str] = None,
    distributed: bool = True,
    use_fast_impl: Optional[bool] = None,
) -> COCOEvaluator:
    """Returns a ``COCOEvaluator`` computing the 10 COCO keypoint metrics on ``dataset_name``.

    Args:
        dataset_name: a dataset registered in ``DatasetCatalog`` with COCO-style metadata.
        oks_sigmas: per-keypoint OKS sigmas (K,): ``keypoint_metadata_from_config(cfg).oks_sigmas``
            (the keypoint table's, or ``TEST.KEYPOINT_OKS_SIGMAS`` where set).
        output_dir: where the evaluator dumps predictions (``None``: nowhere).
        distributed: gather predictions from all ranks before evaluating on the main one.
        use_fast_impl: Detectron2's compiled COCO evaluation (same metrics, faster); None: when
            this Detectron2 has it (:func:`depotr.engine.compat.has_fast_coco_eval`).
    """
    # Imported here: depotr.engine imports this package.
    from ..engine.compat import has_fast_coco_eval

    if len(oks_sigmas) == 0:
        raise ValueError("oks_sigmas is empty: pass keypoint_metadata_from_config(cfg).oks_sigmas (one per keypoint)")
    if use_fast_impl is None:
        use_fast_impl = has_fast_coco_eval()
    elif use_fast_impl and not has_fast_coco_eval():
        raise ValueError(
            "use_fast_impl=True needs Detectron2 built with its C++ extension (detectron2._C "
            "has no compiled COCO evaluation); pass use_fast_impl=False or None"
        )
    return COCOEvaluator(
        dataset_name,
        tasks=("keypoints",),
        distributed=distributed,
        output_dir=output_dir,
        use_fast_impl=use_fast_impl,
        kpt_oks_sigmas=tuple(oks_sigmas),
    )
