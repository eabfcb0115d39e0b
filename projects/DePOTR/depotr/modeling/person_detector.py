"""The person detector of the top-down pipeline, outside the pose model. N persons of one image.

The pose model takes boxes only (:mod:`depotr.modeling.box_sources`). :class:`PersonDetector` turns
images into ``"proposals"``, which the pose model treats as any precomputed boxes: in
:class:`PoseWithDetector` (``TEST_BOX_SOURCE "detector"`` in ``Trainer.test``), in
``depotr.Predictor`` and the demo. So pose checkpoints hold the pose model only;
``depotr.engine.detector`` builds the detector of ``MODEL.DEPOTR.DETECTOR`` with its weights.
"""

from typing import Any, Dict, List

import torch
import torch.nn.functional as F
from torch import nn

from detectron2.data.transforms import ResizeShortestEdge
from detectron2.structures import Boxes, Instances

__all__ = ["MODEL_ZOO_PREFIX", "PersonDetector", "PoseWithDetector", "resolve_model_zoo_path"]

# Prefix of DETECTOR.CONFIG_FILE / DETECTOR.WEIGHTS naming a file of Detectron2's model zoo.
MODEL_ZOO_PREFIX = "model_zoo:"


def resolve_model_zoo_path(path: str, checkpoint: bool = False) -> str:
    """``"model_zoo:<config path in Detectron2's configs/>"`` as the installed config file, or with
    ``checkpoint=True`` the URL of its trained weights; other paths (files, URLs) unchanged."""
    if not path.startswith(MODEL_ZOO_PREFIX):
        return path
    from detectron2 import model_zoo

    name = path[len(MODEL_ZOO_PREFIX) :].lstrip("/")
    return model_zoo.get_checkpoint_url(name) if checkpoint else model_zoo.get_config_file(name)


class PersonDetector(nn.Module):
    """A frozen Detectron2 detector (e.g. GeneralizedRCNN) giving person proposals: always in eval
    mode, no grad. Inputs are converted to the detector's channel order and resized as
    ``DefaultPredictor`` does (shortest edge ``min_size_test``, longest <= ``max_size_test``); the
    boxes are in the pixels of the input's image tensor, the frame of ``"proposals"``."""

    def __init__(
        self,
        detector: nn.Module,
        *,
        detector_format: str,
        min_size_test: int,
        max_size_test: int,
        score_thresh: float,
        person_class_id: int,
    ):
        super().__init__()
        self.detector = detector
        self.detector_format = detector_format
        self.min_size_test = min_size_test
        self.max_size_test = max_size_test
        self.score_thresh = score_thresh
        self.person_class_id = person_class_id
        self.detector.requires_grad_(False)
        self.train(False)

    def train(self, mode: bool = True) -> "PersonDetector":
        """Keeps the detector in eval mode (it is never trained here)."""
        return super().train(False)

    def _detector_input(self, batched_input: Dict[str, Any], input_format: str) -> Dict[str, Any]:
        image = batched_input["image"]
        if input_format != self.detector_format:
            if {input_format, self.detector_format} != {"RGB", "BGR"}:
                raise ValueError(f"cannot convert images from {input_format} to the detector's {self.detector_format}")
            image = image.flip(0)
        h, w = image.shape[-2:]
        if self.min_size_test > 0:
            new_h, new_w = ResizeShortestEdge.get_output_shape(h, w, self.min_size_test, self.max_size_test)
            if (new_h, new_w) != (h, w):
                image = F.interpolate(
                    image[None].float(), size=(new_h, new_w), mode="bilinear", align_corners=False, antialias=True
                )[0]
        return {"image": image, "height": h, "width": w}

    @torch.no_grad()
    def forward(self, batched_inputs: List[Dict[str, Any]], input_format: str) -> List[Instances]:
        """Per input (``"image"``: (C, H, W) in ``input_format``) the ``"proposals"`` of the pose
        model: Instances of size (H, W) with ``proposal_boxes`` (Boxes (N, 4) XYXY in image
        pixels) and ``scores`` (N,) of the person class scoring >= ``score_thresh``, in the
        detector's order (checking, ranking and clipping: the pose model's box source)."""
        if not batched_inputs:
            return []
        outputs = self.detector([self._detector_input(x, input_format) for x in batched_inputs])
        results = []
        for x, out in zip(batched_inputs, outputs):
            instances = out["instances"]
            keep = (instances.pred_classes == self.person_class_id) & (instances.scores >= self.score_thresh)
            proposals = Instances(tuple(x["image"].shape[-2:]))
            proposals.proposal_boxes = Boxes(instances.pred_boxes.tensor[keep])
            proposals.scores = instances.scores[keep]
            results.append(proposals)
        return results


class PoseWithDetector(nn.Module):
    """Inference only (the pose model trains on gt boxes alone): what ``pose_model`` (whose box
    source reads proposals: "precomputed") returns for the inputs with ``"proposals"`` set to the
    ``detector``'s (the caller's dicts are not changed). ``input_format``: channel order of
    ``batched_input["image"]`` ("RGB" or "BGR")."""

    def __init__(self, detector: PersonDetector, pose_model: nn.Module, input_format: str):  # noqa: D107
        super().__init__()
        self.detector = detector
        self.pose_model = pose_model
        self.input_format = input_format

    def forward(self, batched_inputs: List[Dict[str, Any]]) -> List[Dict[str, Instances]]:
        if self.training:
            raise RuntimeError("PoseWithDetector runs inference only; train the pose model on its own")
        proposals = self.detector(batched_inputs, self.input_format)
        return self.pose_model([dict(x, proposals=p) for x, p in zip(batched_inputs, proposals)])
