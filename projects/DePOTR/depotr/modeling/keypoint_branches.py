"""The keypoint branches the meta-architecture runs on person crops: their contract
(:class:`KeypointBranch`) and their registry, keyed by ``MODEL.DEPOTR.HEAD``.

Crop pixels are continuous: pixel i covers [i, i+1), centre i + 0.5; a horizontal flip maps
u -> W - u. Outputs are typed (``heads/outputs.py``): each type knows how to flip back and how two
passes average, which is all the flip test (``tta.py``) needs.

- ``"regression"``, :class:`RegressionBranch`: DePOTR (seed thesis; Deformable DETR, Zhu et al.
  2021), with a smooth-L1, L1 or RLE (Li et al. 2021) coordinate loss.
- ``"heatmap"``, :class:`DePOTRHeatmapBranch`: DePOTR-HM (the seed thesis).
- ``"simple_baseline"``, :class:`SimpleBaselineBranch`: SimpleBaseline (Xiao et al. 2018).
- ``"transpose"``, :class:`TransPoseBranch`: TransPose-R (Yang et al. 2021).

A new head is one class registered with ``@KEYPOINT_BRANCH_REGISTRY.register_head(name)``.
"""

from abc import ABCMeta, abstractmethod
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Type, TypeVar

import torch
from torch import nn

from detectron2.config import CfgNode, configurable
from detectron2.utils.registry import Registry

from .backbone import build_resnet
from .heads import (
    BranchOutputs,
    DePOTRDotProductHeatmapHead,
    DePOTRHeatmapHead,
    HeatmapCodec,
    HeatmapOutputs,
    RegressionHead,
    RegressionOutputs,
    RLELoss,
    SimpleBaselineHead,
    TransPoseHead,
    coordinate_loss,
    joints_mse_loss,
    keypoint_target_weights,
    score_loss,
)
from .pose_transformer import DeformablePoseTransformer

__all__ = [
    "KEYPOINT_BRANCH_REGISTRY",
    "DePOTRHeatmapBranch",
    "HeatmapBranch",
    "KeypointBranch",
    "RegressionBranch",
    "SimpleBaselineBranch",
    "TransPoseBranch",
    "build_keypoint_branch",
]

# The heatmap target's sigma (HEATMAP.SIGMA) is given for a heatmap of this height.
_SIGMA_REFERENCE_HEIGHT = 64

_Class = TypeVar("_Class", bound=type)


class _HeadNameRegistry(Registry):
    """fvcore's ``Registry`` keyed by the ``MODEL.DEPOTR.HEAD`` name given at registration
    instead of the class name (``register`` keys by ``__name__``)."""

    def register_head(self, name: str) -> Callable[[_Class], _Class]:
        """Class decorator: registers the class as the branch of ``MODEL.DEPOTR.HEAD`` ``name``."""

        def deco(cls: _Class) -> _Class:
            # fvcore's public register() keys by __name__ only, and the HEAD names are not class names
            # ("heatmap"): its own register() makes this same call, which also refuses duplicates.
            self._do_register(name, cls)
            return cls

        return deco


KEYPOINT_BRANCH_REGISTRY = _HeadNameRegistry("KEYPOINT_BRANCH")
KEYPOINT_BRANCH_REGISTRY.__doc__ = """
Keypoint branches, keyed by ``MODEL.DEPOTR.HEAD``. Each is called with the config and returns a
:class:`KeypointBranch`.
"""


def _check_crops(crops: torch.Tensor, crop_size: Tuple[int, int]) -> None:
    if crops.dim() != 4 or tuple(crops.shape[-2:]) != tuple(crop_size):
        raise ValueError(f"expected crops of shape (B, 3, {crop_size[0]}, {crop_size[1]}), got {tuple(crops.shape)}")


class KeypointBranch(nn.Module, metaclass=ABCMeta):
    """The contract of a keypoint branch. B crops, K keypoints, (H, W) = ``crop_size``.

    ``forward(crops (B, 3, H, W)) -> outputs``, a :class:`~depotr.modeling.heads.BranchOutputs`;
    ``losses(outputs, gt_keypoints (B, K, 3)) -> {"loss_*": scalar}``;
    ``decode(outputs) -> (B, K, 3)`` (x, y, score) in crop pixels;
    ``flip_back(outputs, flip_indices)``: the outputs of mirrored crops mapped back to the
    original crops (the flip test averages them with ``outputs.average``).
    """

    crop_size: Tuple[int, int]

    @abstractmethod
    def forward(self, crops: torch.Tensor) -> BranchOutputs:
        """crops: (B, 3, H, W) normalised person crops. Returns the raw outputs."""

    @abstractmethod
    def losses(self, outputs: BranchOutputs, gt_keypoints: torch.Tensor) -> Dict[str, torch.Tensor]:
        """gt_keypoints: (B, K, 3) (x, y, v) in crop pixels. Returns scalar "loss_*" terms."""

    @abstractmethod
    def decode(self, outputs: BranchOutputs) -> torch.Tensor:
        """Returns (B, K, 3): (x, y) in crop pixels and a score."""

    @abstractmethod
    def flip_back(self, outputs: BranchOutputs, flip_indices: Sequence[int]) -> BranchOutputs:
        """Outputs of horizontally mirrored crops -> outputs of the original crops;
        ``flip_indices[k]`` is keypoint k's left/right mirror partner."""


# MODEL.DEPOTR.REGRESSION.LOSS values.
REGRESSION_LOSSES = ("smooth_l1", "l1", "rle")


@KEYPOINT_BRANCH_REGISTRY.register_head("regression")
class RegressionBranch(KeypointBranch):
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

    def forward(self, crops: torch.Tensor) -> RegressionOutputs:
        """
        Args:
            crops: (B, 3, H, W) normalised person crops.
        Returns:
            :class:`RegressionOutputs` (score logits) or, with loss "rle", ``RLEOutputs``
            (scales); with AUX_LOSS or ITER_REFINE with the auxiliary outputs of decoder
            layers 0 .. n-2.
        """
        _check_crops(crops, self.crop_size)
        refine = self.head.predict_coords if self.head.iter_refine else None
        return self.head(self.body(crops, refine))

    def losses(self, outputs: RegressionOutputs, gt_keypoints: torch.Tensor) -> Dict[str, torch.Tensor]:
        """gt_keypoints: (B, K, 3) (x, y, v) in crop pixels. Returns, for the last decoder layer,
        "loss_keypoint_coords" (smooth-L1 or L1) and "loss_keypoint_score" (BCE), or
        "loss_keypoint_rle" (RLE); with auxiliary outputs (AUX_LOSS, ITER_REFINE) the same
        terms with suffix "_{i}" for layers i < n-1 (deep supervision, as (Deformable) DETR).
        Without them only the last layer is supervised, as in the thesis."""
        height, width = self.crop_size
        weights = keypoint_target_weights(gt_keypoints, self.crop_size)
        target = gt_keypoints[..., :2] / gt_keypoints.new_tensor([width, height])
        predictions = [("", outputs.coords, outputs.confidence)]
        if outputs.aux_coords is not None:
            predictions += [
                (f"_{i}", coords, confidence)
                for i, (coords, confidence) in enumerate(zip(outputs.aux_coords, outputs.aux_confidence))
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

    def decode(self, outputs: RegressionOutputs) -> torch.Tensor:
        """Returns (B, K, 3): (x, y) in crop pixels and the confidence: sigmoid(score logit), or
        with RLE 1 - (sigma_x + sigma_y) / 2 (``outputs.scores()``)."""
        height, width = self.crop_size
        coords = outputs.coords * outputs.coords.new_tensor([width, height])
        return torch.cat((coords, outputs.scores()[..., None]), dim=-1)

    def flip_back(self, outputs: RegressionOutputs, flip_indices: Sequence[int]) -> RegressionOutputs:
        """See :meth:`RegressionOutputs.flip_back`: x -> 1 - x, left/right swapped."""
        return outputs.flip_back(flip_indices)


class HeatmapBranch(KeypointBranch):
    """A heatmap network: B crops, K keypoints, a body and a head predict K Gaussian heatmaps,
    :class:`HeatmapCodec` encodes targets and decodes maxima. Built from a config as one of its
    registered subclasses (DePOTR-HM, SimpleBaseline, TransPose-R), which build the network."""

    # 2: the network's features module is "body" (it was "backbone").
    _version = 2

    @configurable
    def __init__(
        self,
        *,
        body: nn.Module,
        head: nn.Module,
        codec: HeatmapCodec,
        loss_weight: float = 1.0,
        flip_shift: bool = False,
        aux_heads: Sequence[nn.Module] = (),
    ):
        """
        Args:
            body: crops -> dict of features the head reads (a ResNet, or DePOTR-HM's
                transformer body).
            head: features -> (B, K, h, w) heatmaps of stride ``codec.stride``.
            codec: heatmap targets and decoding; its ``crop_size`` is the branch's.
            loss_weight: weight of the heatmap MSE loss.
            flip_shift: shift flipped-back heatmaps one pixel right (see ``tta.flip_heatmaps``).
            aux_heads: deep supervision (DePOTR-HM): while training, head i maps decoder layer
                i's output to heatmaps that are supervised too, for i < n-1. One head per layer
                (as Deformable DETR's per-layer heads) rather than one shared head, so that the
                last layer's BatchNorm statistics stay its own; unused at inference.
        """
        super().__init__()
        self.body = body
        self.head = head
        self.codec = codec
        self.crop_size = codec.crop_size
        self.loss_weight = loss_weight
        self.flip_shift = flip_shift
        self.aux_heads = nn.ModuleList(aux_heads)

    @classmethod
    def from_config(cls, cfg: CfgNode) -> Dict[str, object]:
        if cfg.MODEL.DEPOTR.ITER_REFINE:
            raise ValueError("MODEL.DEPOTR.ITER_REFINE needs per-layer coordinates: only HEAD 'regression' has them")
        body, head = cls.build_network(cfg)
        aux_heads = cls.build_aux_heads(cfg)
        crop_size = tuple(cfg.INPUT.CROP_SIZE)
        heatmap_height = crop_size[0] // head.stride
        sigma = cfg.MODEL.DEPOTR.HEATMAP.SIGMA * heatmap_height / _SIGMA_REFERENCE_HEIGHT
        return {
            "body": body,
            "head": head,
            "codec": HeatmapCodec(crop_size, head.stride, sigma, cfg.TEST.HEATMAP_REFINE),
            "loss_weight": cfg.MODEL.DEPOTR.HEATMAP.LOSS_WEIGHT,
            "flip_shift": cfg.TEST.FLIP_SHIFT_HEATMAP,
            "aux_heads": aux_heads,
        }

    @classmethod
    def build_network(cls, cfg: CfgNode) -> Tuple[nn.Module, nn.Module]:
        """Returns (body, head) of the subclass's network."""
        raise NotImplementedError(
            f"{cls.__name__} has no network to build from a config: build one of "
            f"{sorted(name for name, _ in KEYPOINT_BRANCH_REGISTRY)}"
        )

    @classmethod
    def build_aux_heads(cls, cfg: CfgNode) -> List[nn.Module]:
        """Deep-supervision heads (``MODEL.DEPOTR.AUX_LOSS``); only networks with decoder layers
        have them."""
        if cfg.MODEL.DEPOTR.AUX_LOSS:
            raise ValueError(
                "MODEL.DEPOTR.AUX_LOSS needs decoder layers: of the heatmap heads only "
                f"'heatmap' (DePOTR-HM) has them, not {cfg.MODEL.DEPOTR.HEAD!r}"
            )
        return []

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, *args, **kwargs):
        """Checkpoints of version 1 name the body "backbone": renamed to "body"."""
        if local_metadata.get("version", 1) < 2:
            old = prefix + "backbone."
            for key in [k for k in state_dict if k.startswith(old)]:
                state_dict[prefix + "body." + key[len(old) :]] = state_dict.pop(key)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, *args, **kwargs)

    def forward(self, crops: torch.Tensor) -> HeatmapOutputs:
        """
        Args:
            crops: (B, 3, H, W) normalised person crops.
        Returns:
            :class:`HeatmapOutputs`: heatmaps (B, K, H/s, W/s), s = ``codec.stride`` (4); while
            training with ``aux_heads`` also aux_heatmaps (n-1, B, K, H/s, W/s) of decoder
            layers 0 .. n-2.
        """
        _check_crops(crops, self.crop_size)
        features = self.body(crops)
        heatmaps = self.head(features)
        aux_heatmaps = None
        if self.training and len(self.aux_heads):
            hidden = features["hidden_states"]
            aux_heatmaps = torch.stack(
                [head({**features, "hidden_states": hidden[i : i + 1]}) for i, head in enumerate(self.aux_heads)]
            )
        if tuple(heatmaps.shape[-2:]) != self.codec.heatmap_size:
            raise ValueError(
                f"the head predicts {tuple(heatmaps.shape[-2:])} heatmaps, the codec expects "
                f"{self.codec.heatmap_size}: crop sides must be multiples of the backbone stride"
            )
        return HeatmapOutputs(heatmaps, aux_heatmaps)

    def losses(self, outputs: HeatmapOutputs, gt_keypoints: torch.Tensor) -> Dict[str, torch.Tensor]:
        """gt_keypoints: (B, K, 3) (x, y, v) in crop pixels. Returns "loss_heatmap", and with
        aux_heatmaps in ``outputs`` also "loss_heatmap_{i}" of decoder layer i < n-1."""
        targets, weights = self.codec.encode(gt_keypoints)
        losses = {"loss_heatmap": self.loss_weight * joints_mse_loss(outputs.heatmaps, targets, weights)}
        aux_heatmaps = () if outputs.aux_heatmaps is None else outputs.aux_heatmaps
        for i, heatmaps in enumerate(aux_heatmaps):
            losses[f"loss_heatmap_{i}"] = self.loss_weight * joints_mse_loss(heatmaps, targets, weights)
        return losses

    def decode(self, outputs: HeatmapOutputs) -> torch.Tensor:
        """Returns (B, K, 3): (x, y) in crop pixels and the heatmap maximum as score."""
        return self.codec.decode(outputs.heatmaps)

    def flip_back(self, outputs: HeatmapOutputs, flip_indices: Sequence[int]) -> HeatmapOutputs:
        """See :meth:`HeatmapOutputs.flip_back`: mirrored along the width, left/right swapped,
        shifted one pixel right with ``flip_shift``."""
        return outputs.flip_back(flip_indices, self.flip_shift)


# MODEL.DEPOTR.HEATMAP.DECODER -> DePOTR-HM head class.
_DEPOTR_HEATMAP_HEADS: Dict[str, Type[nn.Module]] = {
    "deconv": DePOTRHeatmapHead,
    "dot_product": DePOTRDotProductHeatmapHead,
}


def _depotr_heatmap_head_class(cfg: CfgNode) -> Type[nn.Module]:
    """DePOTR-HM's head class of ``MODEL.DEPOTR.HEATMAP.DECODER``, with its config checks."""
    model = cfg.MODEL.DEPOTR
    if model.HEATMAP.DECODER not in _DEPOTR_HEATMAP_HEADS:
        raise ValueError(
            f"MODEL.DEPOTR.HEATMAP.DECODER must be 'deconv' or 'dot_product', got {model.HEATMAP.DECODER!r}"
        )
    if model.HEATMAP.DECODER == "dot_product" and "res3" not in model.IN_FEATURES[:1]:
        raise ValueError(
            "HEATMAP.DECODER 'dot_product' upsamples the finest encoder level 2x to res2's "
            f"stride: MODEL.DEPOTR.IN_FEATURES must start with 'res3', got {model.IN_FEATURES}"
        )
    return _DEPOTR_HEATMAP_HEADS[model.HEATMAP.DECODER]


def _build_depotr_heatmap_head(cfg: CfgNode) -> nn.Module:
    """DePOTR-HM's head of ``MODEL.DEPOTR.HEATMAP.DECODER``."""
    model = cfg.MODEL.DEPOTR
    if _depotr_heatmap_head_class(cfg) is DePOTRDotProductHeatmapHead:
        res2_channels = cfg.MODEL.RESNETS.RES2_OUT_CHANNELS
        return DePOTRDotProductHeatmapHead(
            model.HIDDEN_DIM, model.NUM_KEYPOINTS, res2_channels, model.HEATMAP.MLP_LAYERS
        )
    return DePOTRHeatmapHead(
        model.HIDDEN_DIM,
        model.NUM_KEYPOINTS,
        tuple(cfg.INPUT.CROP_SIZE),
        model.HEATMAP.INITIAL_CHANNELS,
        model.HEATMAP.MLP_LAYERS,
    )


@KEYPOINT_BRANCH_REGISTRY.register_head("heatmap")
class DePOTRHeatmapBranch(HeatmapBranch):
    """DePOTR-HM: the DePOTR transformer body, one heatmap per keypoint query's decoder output
    (``HEATMAP.DECODER`` "deconv": the thesis' head; "dot_product": dot products with pixel
    features), with per-layer heads for deep supervision (``AUX_LOSS``)."""

    @classmethod
    def build_network(cls, cfg: CfgNode) -> Tuple[nn.Module, nn.Module]:
        # The head names the backbone maps it reads besides the decoder's (res2 for "dot_product").
        body = DeformablePoseTransformer(cfg, pixel_features=_depotr_heatmap_head_class(cfg).pixel_features)
        return body, _build_depotr_heatmap_head(cfg)

    @classmethod
    def build_aux_heads(cls, cfg: CfgNode) -> List[nn.Module]:
        if not cfg.MODEL.DEPOTR.AUX_LOSS:
            return []
        return [_build_depotr_heatmap_head(cfg) for _ in range(cfg.MODEL.DEPOTR.DEC_LAYERS - 1)]


@KEYPOINT_BRANCH_REGISTRY.register_head("simple_baseline")
class SimpleBaselineBranch(HeatmapBranch):
    """SimpleBaseline: a ResNet's res5 and a deconvolution head."""

    @classmethod
    def build_network(cls, cfg: CfgNode) -> Tuple[nn.Module, nn.Module]:
        model = cfg.MODEL.DEPOTR
        body = build_resnet(cfg, ["res5"])
        shape = body.output_shape()["res5"]
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
        return body, head


@KEYPOINT_BRANCH_REGISTRY.register_head("transpose")
class TransPoseBranch(HeatmapBranch):
    """TransPose-R: a ResNet map and a transformer encoder head."""

    @classmethod
    def build_network(cls, cfg: CfgNode) -> Tuple[nn.Module, nn.Module]:
        model = cfg.MODEL.DEPOTR
        tp = model.TRANSPOSE
        body = build_resnet(cfg, [tp.IN_FEATURE])
        shape = body.output_shape()[tp.IN_FEATURE]
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
        return body, head


def build_keypoint_branch(cfg: CfgNode) -> KeypointBranch:
    """Returns the keypoint branch registered under ``MODEL.DEPOTR.HEAD``."""
    head = cfg.MODEL.DEPOTR.HEAD
    if head not in KEYPOINT_BRANCH_REGISTRY:
        names = sorted(name for name, _ in KEYPOINT_BRANCH_REGISTRY)
        raise ValueError(f"unknown MODEL.DEPOTR.HEAD {head!r}; expected one of the registered {names}")
    return KEYPOINT_BRANCH_REGISTRY.get(head)(cfg)
