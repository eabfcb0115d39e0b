"""The keypoint branches the meta-architecture runs on person crops.

Contract (every branch): ``forward(crops (B, 3, H, W)) -> outputs``; ``losses(outputs,
gt_keypoints (B, K, 3)) -> {"loss_*": scalar}``; ``decode(outputs) -> (B, K, 3)`` (x, y, score) in
crop pixels; ``flip_back(outputs, flip_indices)`` undoes a horizontal flip of the crops (flip
test); ``crop_size`` (H, W). Crop pixels are continuous: pixel i covers [i, i+1), centre i + 0.5;
a horizontal flip maps u -> W - u.

- :class:`RegressionBranch`: DePOTR (seed thesis; Deformable DETR, Zhu et al. 2021), with a
  smooth-L1, L1 or RLE (Li et al. 2021) coordinate loss.
- :class:`HeatmapBranch`: DePOTR-HM, SimpleBaseline (Xiao et al. 2018) or TransPose-R
  (Yang et al. 2021), per ``MODEL.DEPOTR.HEAD``.
"""
from typing import Dict, Optional, Sequence, Tuple

import torch
from detectron2.config import CfgNode, configurable
from torch import nn

from .backbone import build_resnet
from .heads import (
    DePOTRDotProductHeatmapHead,
    DePOTRHeatmapHead,
    HeatmapCodec,
    RegressionHead,
    RLELoss,
    SimpleBaselineHead,
    TransPoseHead,
    coordinate_loss,
    flip_heatmaps,
    joints_mse_loss,
    keypoint_target_weights,
    score_loss,
)
from .pose_transformer import DeformablePoseTransformer

# The heatmap target's sigma (HEATMAP.SIGMA) is given for a heatmap of this height.
_SIGMA_REFERENCE_HEIGHT = 64


def _check_crops(crops: torch.Tensor, crop_size: Tuple[int, int]) -> None:
    if crops.dim() != 4 or tuple(crops.shape[-2:]) != tuple(crop_size):
        raise ValueError(f"expected crops of shape (B, 3, {crop_size[0]}, {crop_size[1]}), got {tuple(crops.shape)}")


def average_outputs(a: Dict[str, torch.Tensor], b: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Elementwise mean of each output of two forward passes (e.g. a crop and its flipped-back
    mirror). Regression score logits are averaged as logits; RLE's sigmas as scales, so that the
    RLE confidence 1 - mean sigma is the mean of the two passes' confidences."""
    return {key: (a[key] + b[key]) / 2 for key in a}


# MODEL.DEPOTR.REGRESSION.LOSS values.
REGRESSION_LOSSES = ("smooth_l1", "l1", "rle")


class RegressionBranch(nn.Module):
    """DePOTR. B crops, K keypoints: one decoder query per keypoint regresses its (x, y)."""

    @configurable
    def __init__(
        self,
        *,
        body: DeformablePoseTransformer,
        head: RegressionHead,
        crop_size: Tuple[int, int],
        loss: str = "smooth_l1",
        smooth_l1_beta: float = 0.01,
        loss_weight: float = 1.0,
        score_loss_weight: float = 0.1,
        rle_loss: Optional[RLELoss] = None,
    ):
        """
        Args:
            body: crops -> decoder hidden states and reference points.
            head: decoder outputs -> coordinates and confidences (logits, or sigmas for "rle").
            crop_size: (H, W) of the crops.
            loss: coordinate loss, one of :data:`REGRESSION_LOSSES`: "smooth_l1", "l1" (both with
                the BCE confidence loss) or "rle" (:class:`RLELoss`; needs a sigma head).
            smooth_l1_beta: beta of the smooth-L1 loss in crop-normalised units. (The thesis'
                beta = 1 on [0, 1] coordinates never left the quadratic zone: it was 0.5 MSE.)
            loss_weight, score_loss_weight: weights of the coordinate and confidence losses.
            rle_loss: the RLE loss with its flow (trained with the branch) for loss "rle";
                default a new :class:`RLELoss`.
        """
        super().__init__()
        if loss not in REGRESSION_LOSSES:
            raise ValueError(f"MODEL.DEPOTR.REGRESSION.LOSS must be one of {REGRESSION_LOSSES}, got {loss!r}")
        if head.predict_sigma != (loss == "rle"):
            raise ValueError(f"REGRESSION.LOSS {loss!r} needs a head with predict_sigma={loss == 'rle'}")
        self.body = body
        self.head = head
        self.crop_size = tuple(crop_size)
        self.loss = loss
        self.smooth_l1_beta = smooth_l1_beta if loss == "smooth_l1" else 0.0
        self.loss_weight = loss_weight
        self.score_loss_weight = score_loss_weight
        self.rle_loss = (rle_loss if rle_loss is not None else RLELoss()) if loss == "rle" else None

    @classmethod
    def from_config(cls, cfg: CfgNode) -> Dict[str, object]:
        model = cfg.MODEL.DEPOTR
        regression = model.REGRESSION
        return {
            "body": DeformablePoseTransformer(cfg),
            "head": RegressionHead(
                model.HIDDEN_DIM,
                regression.MLP_LAYERS,
                model.DEC_LAYERS,
                model.ITER_REFINE,
                all_layers=model.AUX_LOSS,
                predict_sigma=regression.LOSS == "rle",
            ),
            "crop_size": tuple(cfg.INPUT.CROP_SIZE),
            "loss": regression.LOSS,
            "smooth_l1_beta": regression.SMOOTH_L1_BETA,
            "loss_weight": regression.LOSS_WEIGHT,
            "score_loss_weight": regression.SCORE_LOSS_WEIGHT,
        }

    def forward(self, crops: torch.Tensor) -> Dict[str, torch.Tensor]:
        """
        Args:
            crops: (B, 3, H, W) normalised person crops.
        Returns:
            "coords": (B, K, 2) (x, y) = continuous crop pixels / (W, H), in [0, 1].
            "score_logits": (B, K) logit that the keypoint is labelled and inside the crop; with
                loss "rle" instead "sigmas": (B, K, 2) RLE scales in (0, 1), crop-normalised.
            With AUX_LOSS or ITER_REFINE also "aux_coords" (n-1, B, K, 2) and
            "aux_score_logits" (n-1, B, K) / "aux_sigmas" (n-1, B, K, 2) of decoder layers
            0 .. n-2.
        """
        _check_crops(crops, self.crop_size)
        refine = self.head.predict_coords if self.head.iter_refine else None
        return self.head(self.body(crops, refine))

    def losses(self, outputs: Dict[str, torch.Tensor], gt_keypoints: torch.Tensor) -> Dict[str, torch.Tensor]:
        """gt_keypoints: (B, K, 3) (x, y, v) in crop pixels. Returns, for the last decoder layer,
        "loss_keypoint_coords" (smooth-L1 or L1) and "loss_keypoint_score" (BCE), or
        "loss_keypoint_rle" (RLE); with auxiliary outputs (AUX_LOSS, ITER_REFINE) the same
        terms with suffix "_{i}" for layers i < n-1 (deep supervision, as (Deformable) DETR).
        Without them only the last layer is supervised, as in the thesis."""
        height, width = self.crop_size
        weights = keypoint_target_weights(gt_keypoints, self.crop_size)
        target = gt_keypoints[..., :2] / gt_keypoints.new_tensor([width, height])
        key = self.head.confidence_key
        predictions = [("", outputs["coords"], outputs[key])]
        if "aux_coords" in outputs:
            predictions += [
                (f"_{i}", coords, confidence)
                for i, (coords, confidence) in enumerate(zip(outputs["aux_coords"], outputs["aux_" + key]))
            ]
        losses = {}
        for suffix, coords, confidence in predictions:
            if self.rle_loss is not None:
                losses["loss_keypoint_rle" + suffix] = self.loss_weight * self.rle_loss(
                    coords, confidence, target, weights
                )
                continue
            losses["loss_keypoint_coords" + suffix] = self.loss_weight * coordinate_loss(
                coords, target, weights, self.smooth_l1_beta
            )
            losses["loss_keypoint_score" + suffix] = self.score_loss_weight * score_loss(confidence, weights)
        return losses

    def decode(self, outputs: Dict[str, torch.Tensor]) -> torch.Tensor:
        """Returns (B, K, 3): (x, y) in crop pixels and the confidence: sigmoid(score logit), or
        with RLE 1 - (sigma_x + sigma_y) / 2 (in (0, 1); see ``heads/rle_loss.py``)."""
        height, width = self.crop_size
        coords = outputs["coords"] * outputs["coords"].new_tensor([width, height])
        if "sigmas" in outputs:
            scores = 1 - outputs["sigmas"].mean(-1)
        else:
            scores = outputs["score_logits"].sigmoid()
        return torch.cat((coords, scores[..., None]), dim=-1)

    def flip_back(self, outputs: Dict[str, torch.Tensor], flip_indices: Sequence[int]) -> Dict[str, torch.Tensor]:
        """outputs of mirrored crops -> outputs of the original crops: x -> 1 - x, and keypoint k
        takes the prediction of its mirror partner ``flip_indices[k]`` (scales sigma are not
        mirrored: a mirror keeps |x| errors)."""
        index = torch.as_tensor(list(flip_indices), dtype=torch.long, device=outputs["coords"].device)
        flipped = {}
        for key, value in outputs.items():
            if key.endswith("coords"):  # (..., K, 2)
                value = torch.stack((1 - value[..., 0], value[..., 1]), dim=-1)
            keypoint_dim = -1 if key.endswith("score_logits") else -2  # logits (..., K); else (..., K, 2)
            flipped[key] = value.index_select(keypoint_dim, index)
        return flipped


class HeatmapBranch(nn.Module):
    """DePOTR-HM, SimpleBaseline or TransPose-R. B crops, K keypoints: a network predicts K
    Gaussian heatmaps, :class:`HeatmapCodec` encodes targets and decodes maxima."""

    @configurable
    def __init__(
        self,
        *,
        backbone: nn.Module,
        head: nn.Module,
        codec: HeatmapCodec,
        loss_weight: float = 1.0,
        flip_shift: bool = False,
        aux_heads: Sequence[nn.Module] = (),
    ):
        """
        Args:
            backbone: crops -> dict of features the head reads.
            head: features -> (B, K, h, w) heatmaps of stride ``codec.stride``.
            codec: heatmap targets and decoding; its ``crop_size`` is the branch's.
            loss_weight: weight of the heatmap MSE loss.
            flip_shift: shift flipped-back heatmaps one pixel right (see :func:`flip_heatmaps`).
            aux_heads: deep supervision (DePOTR-HM): while training, head i maps decoder layer
                i's output to heatmaps that are supervised too, for i < n-1. One head per layer
                (as Deformable DETR's per-layer heads) rather than one shared head, so that the
                last layer's BatchNorm statistics stay its own; unused at inference.
        """
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.codec = codec
        self.crop_size = codec.crop_size
        self.loss_weight = loss_weight
        self.flip_shift = flip_shift
        self.aux_heads = nn.ModuleList(aux_heads)

    @classmethod
    def from_config(cls, cfg: CfgNode) -> Dict[str, object]:
        backbone, head = _build_heatmap_network(cfg)
        aux_heads = []
        if cfg.MODEL.DEPOTR.AUX_LOSS:
            if cfg.MODEL.DEPOTR.HEAD != "heatmap":
                raise ValueError("MODEL.DEPOTR.AUX_LOSS needs decoder layers: of the heatmap heads only "
                                 f"'heatmap' (DePOTR-HM) has them, not {cfg.MODEL.DEPOTR.HEAD!r}")
            aux_heads = [_build_depotr_heatmap_head(cfg) for _ in range(cfg.MODEL.DEPOTR.DEC_LAYERS - 1)]
        crop_size = tuple(cfg.INPUT.CROP_SIZE)
        heatmap_height = crop_size[0] // head.stride
        sigma = cfg.MODEL.DEPOTR.HEATMAP.SIGMA * heatmap_height / _SIGMA_REFERENCE_HEIGHT
        return {
            "backbone": backbone,
            "head": head,
            "codec": HeatmapCodec(crop_size, head.stride, sigma, cfg.TEST.HEATMAP_REFINE),
            "loss_weight": cfg.MODEL.DEPOTR.HEATMAP.LOSS_WEIGHT,
            "flip_shift": cfg.TEST.FLIP_SHIFT_HEATMAP,
            "aux_heads": aux_heads,
        }

    def forward(self, crops: torch.Tensor) -> Dict[str, torch.Tensor]:
        """
        Args:
            crops: (B, 3, H, W) normalised person crops.
        Returns:
            "heatmaps": (B, K, H/s, W/s), s = ``codec.stride`` (4); heatmap pixel j covers crop
                pixels [j s, (j+1) s), its centre is crop pixel (j + 0.5) s.
            While training with ``aux_heads`` also "aux_heatmaps" (n-1, B, K, H/s, W/s) of
            decoder layers 0 .. n-2.
        """
        _check_crops(crops, self.crop_size)
        features = self.backbone(crops)
        outputs = {"heatmaps": self.head(features)}
        if self.training and len(self.aux_heads):
            hidden = features["hidden_states"]
            outputs["aux_heatmaps"] = torch.stack(
                [head({**features, "hidden_states": hidden[i:i + 1]}) for i, head in enumerate(self.aux_heads)]
            )
        if tuple(outputs["heatmaps"].shape[-2:]) != self.codec.heatmap_size:
            raise ValueError(
                f"the head predicts {tuple(outputs['heatmaps'].shape[-2:])} heatmaps, the codec expects "
                f"{self.codec.heatmap_size}: crop sides must be multiples of the backbone stride"
            )
        return outputs

    def losses(self, outputs: Dict[str, torch.Tensor], gt_keypoints: torch.Tensor) -> Dict[str, torch.Tensor]:
        """gt_keypoints: (B, K, 3) (x, y, v) in crop pixels. Returns "loss_heatmap", and with
        "aux_heatmaps" in ``outputs`` also "loss_heatmap_{i}" of decoder layer i < n-1."""
        targets, weights = self.codec.encode(gt_keypoints)
        losses = {"loss_heatmap": self.loss_weight * joints_mse_loss(outputs["heatmaps"], targets, weights)}
        for i, heatmaps in enumerate(outputs.get("aux_heatmaps", ())):
            losses[f"loss_heatmap_{i}"] = self.loss_weight * joints_mse_loss(heatmaps, targets, weights)
        return losses

    def decode(self, outputs: Dict[str, torch.Tensor]) -> torch.Tensor:
        """Returns (B, K, 3): (x, y) in crop pixels and the heatmap maximum as score."""
        return self.codec.decode(outputs["heatmaps"])

    def flip_back(self, outputs: Dict[str, torch.Tensor], flip_indices: Sequence[int]) -> Dict[str, torch.Tensor]:
        """outputs of mirrored crops -> outputs of the original crops (heatmaps mirrored along
        the width, left/right swapped)."""
        return {"heatmaps": flip_heatmaps(outputs["heatmaps"], flip_indices, self.flip_shift)}


def _build_depotr_heatmap_head(cfg: CfgNode) -> nn.Module:
    """DePOTR-HM's head of ``MODEL.DEPOTR.HEATMAP.DECODER``."""
    model = cfg.MODEL.DEPOTR
    if model.HEATMAP.DECODER == "dot_product":
        if "res3" not in model.IN_FEATURES[:1]:
            raise ValueError("HEATMAP.DECODER 'dot_product' upsamples the finest encoder level 2x to res2's "
                             f"stride: MODEL.DEPOTR.IN_FEATURES must start with 'res3', got {model.IN_FEATURES}")
        res2_channels = cfg.MODEL.RESNETS.RES2_OUT_CHANNELS
        return DePOTRDotProductHeatmapHead(model.HIDDEN_DIM, model.NUM_KEYPOINTS, res2_channels, model.HEATMAP.MLP_LAYERS)
    if model.HEATMAP.DECODER != "deconv":
        raise ValueError(f"MODEL.DEPOTR.HEATMAP.DECODER must be 'deconv' or 'dot_product', got {model.HEATMAP.DECODER!r}")
    return DePOTRHeatmapHead(
        model.HIDDEN_DIM,
        model.NUM_KEYPOINTS,
        tuple(cfg.INPUT.CROP_SIZE),
        model.HEATMAP.INITIAL_CHANNELS,
        model.HEATMAP.MLP_LAYERS,
    )


def _build_heatmap_network(cfg: CfgNode) -> Tuple[nn.Module, nn.Module]:
    """Returns (backbone, head) of the heatmap network named by ``MODEL.DEPOTR.HEAD``."""
    model = cfg.MODEL.DEPOTR
    if model.ITER_REFINE:
        raise ValueError("MODEL.DEPOTR.ITER_REFINE needs per-layer coordinates: only HEAD 'regression' has them")
    if model.HEAD == "heatmap":
        return DeformablePoseTransformer(cfg), _build_depotr_heatmap_head(cfg)
    if model.HEAD == "simple_baseline":
        backbone = build_resnet(cfg, ["res5"])
        shape = backbone.output_shape()["res5"]
        sb = model.SIMPLE_BASELINE
        head = SimpleBaselineHead(
            "res5",
            shape.channels,
            shape.stride,
            model.NUM_KEYPOINTS,
            sb.NUM_DECONV_LAYERS,
            sb.DECONV_CHANNELS,
            sb.DECONV_KERNEL,
        )
        return backbone, head
    if model.HEAD == "transpose":
        tp = model.TRANSPOSE
        backbone = build_resnet(cfg, [tp.IN_FEATURE])
        shape = backbone.output_shape()[tp.IN_FEATURE]
        head = TransPoseHead(
            tp.IN_FEATURE,
            shape.channels,
            shape.stride,
            model.NUM_KEYPOINTS,
            tp.HIDDEN_DIM,
            tp.NHEADS,
            tp.ENC_LAYERS,
            tp.DIM_FEEDFORWARD,
            model.DROPOUT,
        )
        return backbone, head
    raise ValueError(f"MODEL.DEPOTR.HEAD {model.HEAD!r} is not a heatmap head")


# MODEL.DEPOTR.HEAD -> branch class.
BRANCHES = {
    "regression": RegressionBranch,
    "heatmap": HeatmapBranch,
    "simple_baseline": HeatmapBranch,
    "transpose": HeatmapBranch,
}


def build_keypoint_branch(cfg: CfgNode) -> nn.Module:
    """Returns the keypoint branch named by ``MODEL.DEPOTR.HEAD``."""
    head = cfg.MODEL.DEPOTR.HEAD
    if head not in BRANCHES:
        raise ValueError(f"unknown MODEL.DEPOTR.HEAD {head!r}; expected one of {sorted(BRANCHES)}")
    return BRANCHES[head](cfg)
