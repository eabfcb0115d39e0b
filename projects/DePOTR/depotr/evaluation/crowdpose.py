"""CrowdPose evaluation: xtcocotools' ``COCOeval`` in its "keypoints_crowd" mode, as CrowdPose's
official code and mmpose evaluate it.

Metrics (in %): AP, AP50, AP75, AR, AR50, AR75 over all images (top 20 poses per image, no area
ranges), and AP(E) / AP(M) / AP(H): the AP of the images of crowd index < 0.2, in [0.2, 0.8), and
>= 0.8 (xtcocotools' bins; the paper states 0.1 for the first bound), averaging the precision
array with its -1 entries, as the official code does. The ground truth is the dataset's json
file (its images need ``crowdIndex``).
"""

import contextlib
import io
import json
import logging
import os
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from detectron2.data import MetadataCatalog
from detectron2.evaluation import DatasetEvaluator
from detectron2.evaluation.coco_evaluation import instances_to_coco_json

from ..file_io import atomic_write
from .pckh import gather_on_main

__all__ = ["CROWDPOSE_METRIC_NAMES", "CrowdPoseEvaluator", "crowdpose_metrics"]

logger = logging.getLogger(__name__)

CROWDPOSE_METRIC_NAMES = ("AP", "AP50", "AP75", "AR", "AR50", "AR75", "AP(E)", "AP(M)", "AP(H)")


def crowdpose_metrics(gt_json_file: str, results: List[Dict[str, Any]], sigmas: Sequence[float]) -> Dict[str, float]:
    """The CrowdPose metrics (in %) of COCO keypoint ``results`` (image_id, category_id,
    keypoints (3K), score) against the COCO-format ``gt_json_file``, with OKS ``sigmas`` (K,)."""
    from xtcocotools.coco import COCO
    from xtcocotools.cocoeval import COCOeval

    with open(gt_json_file) as f:
        images = json.load(f).get("images", [])
    without = [image.get("id") for image in images if "crowdIndex" not in image]
    if without:
        raise ValueError(f"CrowdPose ground truth {gt_json_file}: {len(without)} images have no 'crowdIndex'")
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        coco_gt = COCO(gt_json_file)
        coco_dt = coco_gt.loadRes(results)
        coco_eval = COCOeval(coco_gt, coco_dt, "keypoints_crowd", np.asarray(sigmas, np.float64), use_area=False)
        coco_eval.params.useSegm = None
        coco_eval.evaluate()
        coco_eval.accumulate()
        coco_eval.summarize()
    logger.info("CrowdPose evaluation:\n%s", printed.getvalue())
    return {name: 100.0 * float(v) for name, v in zip(CROWDPOSE_METRIC_NAMES, coco_eval.stats)}


class CrowdPoseEvaluator(DatasetEvaluator):
    """:func:`crowdpose_metrics` of a model's predictions on a dataset registered with a json file
    (``depotr.data.register_keypoint_dataset(..., evaluator_type="crowdpose")``). With
    ``output_dir`` the results are written as ``keypoint_results.json``. Returns
    ``{"keypoints": metrics}``, as Detectron2's ``COCOEvaluator`` names its keypoint task."""

    def __init__(
        self,
        dataset_name: str,
        oks_sigmas: Sequence[float],
        distributed: bool = True,
        output_dir: Optional[str] = None,
    ):
        metadata = MetadataCatalog.get(dataset_name)
        if len(oks_sigmas) != len(metadata.keypoint_names):
            raise ValueError(
                f"dataset {dataset_name!r}: {len(oks_sigmas)} OKS sigmas for {len(metadata.keypoint_names)} keypoints"
            )
        self._dataset_name = dataset_name
        self._json_file = metadata.json_file
        self._sigmas = list(oks_sigmas)
        self._distributed = distributed
        self._output_dir = output_dir
        self._results: List[Dict[str, Any]] = []

    def reset(self) -> None:
        self._results = []

    def process(self, inputs: List[Dict[str, Any]], outputs: List[Dict[str, Any]]) -> None:
        for inp, out in zip(inputs, outputs):
            self._results.extend(instances_to_coco_json(out["instances"].to("cpu"), inp["image_id"]))

    def evaluate(self) -> Dict[str, Dict[str, float]]:
        results = gather_on_main(self._results, self._distributed)
        if results is None:
            return {}
        metadata = MetadataCatalog.get(self._dataset_name)
        to_dataset_id = {v: k for k, v in metadata.thing_dataset_id_to_contiguous_id.items()}
        for result in results:
            result["category_id"] = to_dataset_id[result["category_id"]]
        if self._output_dir:
            os.makedirs(self._output_dir, exist_ok=True)
            path = os.path.join(self._output_dir, "keypoint_results.json")
            atomic_write(path, lambda f: f.write(json.dumps(results).encode()))
        if not results:
            logger.warning("CrowdPose evaluation of %s: no predictions", self._dataset_name)
            return {}
        return {"keypoints": crowdpose_metrics(self._json_file, results, self._sigmas)}
