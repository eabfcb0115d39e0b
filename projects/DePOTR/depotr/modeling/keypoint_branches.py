"""The keypoint branches the meta-architecture runs on person crops: their contract
(:class:`KeypointBranch`) and their registry, keyed by ``MODEL.DEPOTR.HEAD``.

Crop pixels are continuous (pixel i covers [i, i+1); a horizontal flip maps u -> W - u); outputs
are typed (``heads/outputs.py``) and know how to flip back and average (the flip test, ``tta.py``).

- ``"regression"``, :class:`RegressionBranch`: DePOTR (seed thesis; Deformable DETR, Zhu et al.
  2021), with a smooth-L1, L1 or RLE (Li et al. 2021) coordinate loss.
- ``"heatmap"``, :class:`DePOTRHeatmapBranch`: DePOTR-HM (the seed thesis).
- ``"simple_baseline"``, :class:`SimpleBaselineBranch`: SimpleBaseline (Xiao et al. 2018).
- ``"transpose"``, :class:`TransPoseBranch`: TransPose-R (Yang et al. 2021).

A new head is one class registered with ``@KEYPOINT_BRANCH_REGISTRY.register_head(name)``.
"""

from abc import ABCMeta, abstractmethod
from typing import Callable, Dict, List, Optional, Sequence, Tuple, TypeVar

import torch
from torch import Tensor, nn

from detectron2.config import CfgNode, configurable
from detectron2.utils.registry import Registry

from ..cli import ConfigError
from ..layers import at_least_float32
from .backbone import build_resnet
from .heads import (
    COARSE_STRIDE,
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
# MODEL.DEPOTR.REGRESSION.LOSS values.
REGRESSION_LOSSES = ("smooth_l1", "l1", "rle")

_Class = TypeVar("_Class", bound=type)


class _HeadNameRegistry(Registry):
    """fvcore's ``Registry`` keyed by the ``MODEL.DEPOTR.HEAD`` name (``register`` keys by ``__name__``)."""

    def register_head(self, name: str) -> Callable[[_Class], _Class]:
        """Class decorator: registers the class as the branch of ``MODEL.DEPOTR.HEAD`` ``name``."""

        def deco(cls: _Class) -> _Class:
            self._do_register(name, cls)  # what register() calls; refuses duplicates
            return cls

        return deco


KEYPOINT_BRANCH_REGISTRY = _HeadNameRegistry("KEYPOINT_BRANCH")
KEYPOINT_BRANCH_REGISTRY.__doc__ = "Keypoint branches by ``MODEL.DEPOTR.HEAD``, called with the config."


def _float32(value):
    """A features entry (tensor, list or tuple of tensors, other) with 16-bit float tensors in float32."""
    if isinstance(value, (list, tuple)):
        return type(value)(_float32(v) for v in value)
    return at_least_float32(value) if torch.is_tensor(value) else value


class KeypointBranch(nn.Module, metaclass=ABCMeta):
    """The contract of a keypoint branch. B crops, K keypoints, (H, W) = ``crop_size``. The flip
    test averages ``forward``'s outputs with ``flip_back`` of the mirrored crops' (``outputs.average``)."""

    crop_size: Tuple[int, int]

    @abstractmethod
    def forward(self, crops: Tensor) -> BranchOutputs:
        """crops: (B, 3, H, W) normalised person crops. Returns the raw :class:`BranchOutputs`."""

    @abstractmethod
    def losses(self, outputs: BranchOutputs, gt_keypoints: Tensor) -> Dict[str, Tensor]:
        """gt_keypoints: (B, K, 3) (x, y, v) in crop pixels. Returns scalar "loss_*" terms."""

    @abstractmethod
    def decode(self, outputs: BranchOutputs) -> Tensor:
        """Returns (B, K, 3): (x, y) in crop pixels and a score."""

    def flip_back(self, outputs: BranchOutputs, flip_indices: Sequence[int]) -> BranchOutputs:
        """Outputs of horizontally mirrored crops -> outputs of the original crops;
        ``flip_indices[k]`` is keypoint k's left/right mirror partner (``outputs.flip_back``)."""
        return outputs.flip_back(flip_indices)

    @staticmethod
    def _run_head(head: nn.Module, features: Dict[str, Tensor], device_type: str):
        """``head(features)``; under bfloat16 autocast (``TEST.PRECISION``, ``SOLVER.AMP.ENABLED`` on
        a CPU) in float32 with autocast off, as bfloat16's 8-bit mantissa would round heatmaps and
        coordinates. Float16 autocast (CUDA AMP) runs the heads in float16 as the rest."""
        if not (torch.is_autocast_enabled(device_type) and torch.get_autocast_dtype(device_type) == torch.bfloat16):
            return head(features)
        with torch.autocast(device_type, enabled=False):
            return head({name: _float32(value) for name, value in features.items()})

    def _check_crops(self, crops: Tensor) -> None:
        if crops.dim() != 4 or tuple(crops.shape[-2:]) != tuple(self.crop_size):
            height, width = self.crop_size
            raise ValueError(f"expected crops of shape (B, 3, {height}, {width}), got {tuple(crops.shape)}")


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
            body, head: crops -> decoder outputs -> coordinates and confidences (logits, or
                sigmas for "rle").
            loss: one of :data:`REGRESSION_LOSSES`: "smooth_l1", "l1" (both with the BCE
                confidence loss) or "rle" (``rle_loss``, default a new :class:`RLELoss`).
            smooth_l1_beta: in crop-normalised units (the thesis' beta = 1 on [0, 1] coordinates
                was 0.5 MSE).
        """
        super().__init__()
        if loss not in REGRESSION_LOSSES:
            raise ConfigError(f"MODEL.DEPOTR.REGRESSION.LOSS must be one of {REGRESSION_LOSSES}, got {loss!r}")
        if head.predict_sigma != (loss == "rle"):
            raise ConfigError(f"REGRESSION.LOSS {loss!r} needs a head with predict_sigma={loss == 'rle'}")
        self.body = body
        self.head = head
        self.crop_size = tuple(crop_size)
        self.loss = loss
        self.smooth_l1_beta = smooth_l1_beta if loss == "smooth_l1" else 0.0  # beta 0: the L1 loss
        self.loss_weight = loss_weight
        self.score_loss_weight = score_loss_weight
        self.rle_loss = (rle_loss if rle_loss is not None else RLELoss()) if loss == "rle" else None

    @classmethod
    def from_config(cls, cfg: CfgNode) -> Dict[str, object]:
        model, reg = cfg.MODEL.DEPOTR, cfg.MODEL.DEPOTR.REGRESSION
        return {
            "body": DeformablePoseTransformer(cfg),
            "head": RegressionHead(
                model.HIDDEN_DIM,
                reg.MLP_LAYERS,
                model.DEC_LAYERS,
                model.ITER_REFINE,
                all_layers=model.AUX_LOSS,
                predict_sigma=reg.LOSS == "rle",
            ),
            "crop_size": tuple(cfg.INPUT.CROP_SIZE),
            "loss": reg.LOSS,
            "smooth_l1_beta": reg.SMOOTH_L1_BETA,
            "loss_weight": reg.LOSS_WEIGHT,
            "score_loss_weight": reg.SCORE_LOSS_WEIGHT,
        }

    def forward(self, crops: Tensor) -> RegressionOutputs:
        """Returns :class:`RegressionOutputs` (score logits) or, with loss "rle", ``RLEOutputs``
        (scales); with AUX_LOSS or ITER_REFINE with those of decoder layers 0 .. n-2 too."""
        self._check_crops(crops)
        refine = self.head.predict_coords if self.head.iter_refine else None
        return self._run_head(self.head, self.body(crops, refine), crops.device.type)

    def losses(self, outputs: RegressionOutputs, gt_keypoints: Tensor) -> Dict[str, Tensor]:
        """Returns, for the last decoder layer, "loss_keypoint_coords" (smooth-L1 or L1) and
        "loss_keypoint_score" (BCE), or "loss_keypoint_rle"; with auxiliary outputs the same terms
        with suffix "_{i}" for layers i < n-1 (deep supervision, as (Deformable) DETR)."""
        height, width = self.crop_size
        weights = keypoint_target_weights(gt_keypoints, self.crop_size)
        target = gt_keypoints[..., :2] / gt_keypoints.new_tensor([width, height])
        layers = [("", outputs.coords, outputs.confidence)]
        if outputs.aux_coords is not None:
            layers += [(f"_{i}", *aux) for i, aux in enumerate(zip(outputs.aux_coords, outputs.aux_confidence))]
        losses = {}
        for suffix, coords, confidence in layers:
            if self.rle_loss is not None:
                rle = self.rle_loss(coords, confidence, target, weights)
                losses["loss_keypoint_rle" + suffix] = self.loss_weight * rle
            else:
                coordinates = coordinate_loss(coords, target, weights, self.smooth_l1_beta)
                losses["loss_keypoint_coords" + suffix] = self.loss_weight * coordinates
                losses["loss_keypoint_score" + suffix] = self.score_loss_weight * score_loss(confidence, weights)
        return losses

    def decode(self, outputs: RegressionOutputs) -> Tensor:
        """(x, y) in crop pixels and ``outputs.scores()``: sigmoid(score logit), or with RLE
        1 - (sigma_x + sigma_y) / 2."""
        height, width = self.crop_size
        coords = outputs.coords * outputs.coords.new_tensor([width, height])
        return torch.cat((coords, outputs.scores()[..., None]), dim=-1)


class HeatmapBranch(KeypointBranch):
    """A heatmap network: B crops, K keypoints, a body and a head predict K Gaussian heatmaps,
    :class:`HeatmapCodec` encodes targets and decodes maxima. Built from a config as one of its
    registered subclasses, which build the network (:meth:`build_network`)."""

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
            body, head: crops -> dict of features -> (B, K, h, w) heatmaps of stride
                ``codec.stride``; the codec's ``crop_size`` is the branch's.
            flip_shift: shift flipped-back heatmaps one pixel right (see ``tta.flip_heatmaps``).
            aux_heads: deep supervision (DePOTR-HM): while training, head i maps decoder layer
                i < n-1 to heatmaps that are supervised too. One head per layer (as Deformable
                DETR) so that the last layer's BatchNorm statistics stay its own.
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
            raise ConfigError("MODEL.DEPOTR.ITER_REFINE needs per-layer coordinates: only HEAD 'regression' has them")
        body, head, aux_heads = cls.build_network(cfg)
        head_name = cfg.MODEL.DEPOTR.HEAD
        _check_crop_size(cfg, head.stride, f"MODEL.DEPOTR.HEAD {head_name!r} gives stride-{head.stride} heatmaps")
        crop_size = tuple(cfg.INPUT.CROP_SIZE)
        sigma = cfg.MODEL.DEPOTR.HEATMAP.SIGMA * (crop_size[0] // head.stride) / _SIGMA_REFERENCE_HEIGHT
        return {
            "body": body,
            "head": head,
            "codec": HeatmapCodec(crop_size, head.stride, sigma, cfg.TEST.HEATMAP_REFINE),
            "loss_weight": cfg.MODEL.DEPOTR.HEATMAP.LOSS_WEIGHT,
            "flip_shift": cfg.TEST.FLIP_SHIFT_HEATMAP,
            "aux_heads": aux_heads,
        }

    @classmethod
    def build_network(cls, cfg: CfgNode) -> Tuple[nn.Module, nn.Module, List[nn.Module]]:
        """Returns (body, head, deep-supervision heads of ``MODEL.DEPOTR.AUX_LOSS``)."""
        raise NotImplementedError(
            f"{cls.__name__} has no network to build from a config: build one of "
            f"{sorted(name for name, _ in KEYPOINT_BRANCH_REGISTRY)}"
        )

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, *args, **kwargs):
        """Checkpoints of version 1 name the body "backbone": renamed to "body"."""
        if local_metadata.get("version", 1) < 2:
            old = prefix + "backbone."
            for key in [k for k in state_dict if k.startswith(old)]:
                state_dict[prefix + "body." + key[len(old) :]] = state_dict.pop(key)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, *args, **kwargs)

    def forward(self, crops: Tensor) -> HeatmapOutputs:
        """Returns :class:`HeatmapOutputs`: heatmaps (B, K, H/s, W/s), s = ``codec.stride``;
        while training with ``aux_heads`` also aux_heatmaps (n-1, B, K, H/s, W/s)."""
        self._check_crops(crops)
        features = self.body(crops)
        heatmaps = self._run_head(self.head, features, crops.device.type)
        aux_heatmaps = None
        if self.training and len(self.aux_heads):
            hidden = features["hidden_states"]  # head i reads decoder layer i
            layers = [{**features, "hidden_states": hidden[i : i + 1]} for i in range(len(self.aux_heads))]
            aux_heatmaps = torch.stack(
                [self._run_head(h, f, crops.device.type) for h, f in zip(self.aux_heads, layers)]
            )
        if tuple(heatmaps.shape[-2:]) != self.codec.heatmap_size:
            raise ConfigError(
                f"the head predicts {tuple(heatmaps.shape[-2:])} heatmaps, the codec expects "
                f"{self.codec.heatmap_size}: crop sides must be multiples of the backbone stride"
            )
        return HeatmapOutputs(heatmaps, aux_heatmaps)

    def losses(self, outputs: HeatmapOutputs, gt_keypoints: Tensor) -> Dict[str, Tensor]:
        """Returns "loss_heatmap", and with aux_heatmaps "loss_heatmap_{i}" of decoder layer i."""
        targets, weights = self.codec.encode(gt_keypoints)
        heatmaps = {"loss_heatmap": outputs.heatmaps}
        if outputs.aux_heatmaps is not None:
            heatmaps.update((f"loss_heatmap_{i}", aux) for i, aux in enumerate(outputs.aux_heatmaps))
        return {key: self.loss_weight * joints_mse_loss(h, targets, weights) for key, h in heatmaps.items()}

    def decode(self, outputs: HeatmapOutputs) -> Tensor:
        """(x, y) in crop pixels and the heatmap maximum as score."""
        return self.codec.decode(outputs.heatmaps)

    def flip_back(self, outputs: HeatmapOutputs, flip_indices: Sequence[int]) -> HeatmapOutputs:
        return outputs.flip_back(flip_indices, self.flip_shift)


@KEYPOINT_BRANCH_REGISTRY.register_head("heatmap")
class DePOTRHeatmapBranch(HeatmapBranch):
    """DePOTR-HM: the DePOTR transformer body, one heatmap per keypoint query's decoder output
    (``HEATMAP.DECODER`` "deconv": the thesis' head; "dot_product": dot products with pixel
    features), with per-layer heads for deep supervision (``AUX_LOSS``)."""

    @classmethod
    def build_network(cls, cfg: CfgNode) -> Tuple[nn.Module, nn.Module, List[nn.Module]]:
        model = cfg.MODEL.DEPOTR
        heatmap, sizes = model.HEATMAP, (model.HIDDEN_DIM, model.NUM_KEYPOINTS)
        if heatmap.DECODER == "dot_product":
            if "res3" not in model.IN_FEATURES[:1]:
                raise ConfigError(
                    "HEATMAP.DECODER 'dot_product' upsamples the finest encoder level 2x to res2's "
                    f"stride: MODEL.DEPOTR.IN_FEATURES must start with 'res3', got {model.IN_FEATURES}"
                )
            head_class = DePOTRDotProductHeatmapHead
            args = (*sizes, cfg.MODEL.RESNETS.RES2_OUT_CHANNELS, heatmap.MLP_LAYERS)
        elif heatmap.DECODER == "deconv":
            _check_crop_size(cfg, COARSE_STRIDE, f"HEATMAP.DECODER 'deconv' starts from a stride-{COARSE_STRIDE} map")
            head_class = DePOTRHeatmapHead
            args = (*sizes, tuple(cfg.INPUT.CROP_SIZE), heatmap.INITIAL_CHANNELS, heatmap.MLP_LAYERS)
        else:
            decoder = heatmap.DECODER
            raise ConfigError(f"MODEL.DEPOTR.HEATMAP.DECODER must be 'deconv' or 'dot_product', got {decoder!r}")
        # The body passes on the backbone maps the head reads (res2 for "dot_product").
        body = DeformablePoseTransformer(cfg, pixel_features=head_class.pixel_features)
        num_aux = model.DEC_LAYERS - 1 if model.AUX_LOSS else 0
        return body, head_class(*args), [head_class(*args) for _ in range(num_aux)]


def _check_crop_size(cfg: CfgNode, stride: int, reader: str) -> None:
    """A ConfigError naming ``INPUT.CROP_SIZE`` unless both its sides are multiples of ``stride``,
    which ``reader`` (the component, in words) needs."""
    crop_size = tuple(cfg.INPUT.CROP_SIZE)
    if any(side % stride for side in crop_size):
        raise ConfigError(f"INPUT.CROP_SIZE {crop_size}: {reader}, so both crop sides must be multiples of {stride}")


def _resnet_heatmap_network(cfg: CfgNode, in_feature: str, head_class: type, *head_args) -> Tuple:
    """(body, head, []): a ResNet up to ``in_feature`` and ``head_class(in_feature, its channels,
    its stride, K, *head_args)``. These networks have no decoder layers to supervise. A ConfigError
    unless both sides of ``INPUT.CROP_SIZE`` are multiples of that stride (else the heatmaps are
    not crop size / head stride)."""
    if cfg.MODEL.DEPOTR.AUX_LOSS:
        raise ConfigError(
            "MODEL.DEPOTR.AUX_LOSS needs decoder layers: of the heatmap heads only "
            f"'heatmap' (DePOTR-HM) has them, not {cfg.MODEL.DEPOTR.HEAD!r}"
        )
    body = build_resnet(cfg, [in_feature])
    shape = body.output_shape()[in_feature]
    reader = f"MODEL.DEPOTR.HEAD {cfg.MODEL.DEPOTR.HEAD!r} reads the stride-{shape.stride} map {in_feature!r}"
    _check_crop_size(cfg, shape.stride, reader)
    return body, head_class(in_feature, shape.channels, shape.stride, cfg.MODEL.DEPOTR.NUM_KEYPOINTS, *head_args), []


@KEYPOINT_BRANCH_REGISTRY.register_head("simple_baseline")
class SimpleBaselineBranch(HeatmapBranch):
    """SimpleBaseline: a ResNet's res5 and a deconvolution head."""

    @classmethod
    def build_network(cls, cfg: CfgNode) -> Tuple[nn.Module, nn.Module, List[nn.Module]]:
        sb = cfg.MODEL.DEPOTR.SIMPLE_BASELINE
        args = (sb.NUM_DECONV_LAYERS, sb.DECONV_CHANNELS, sb.DECONV_KERNEL)
        return _resnet_heatmap_network(cfg, "res5", SimpleBaselineHead, *args)


@KEYPOINT_BRANCH_REGISTRY.register_head("transpose")
class TransPoseBranch(HeatmapBranch):
    """TransPose-R: a ResNet map and a transformer encoder head."""

    @classmethod
    def build_network(cls, cfg: CfgNode) -> Tuple[nn.Module, nn.Module, List[nn.Module]]:
        tp = cfg.MODEL.DEPOTR.TRANSPOSE
        args = (tp.HIDDEN_DIM, tp.NHEADS, tp.ENC_LAYERS, tp.DIM_FEEDFORWARD, cfg.MODEL.DEPOTR.DROPOUT)
        return _resnet_heatmap_network(cfg, tp.IN_FEATURE, TransPoseHead, *args)


def build_keypoint_branch(cfg: CfgNode) -> KeypointBranch:
    """Returns the keypoint branch registered under ``MODEL.DEPOTR.HEAD``."""
    head = cfg.MODEL.DEPOTR.HEAD
    if head not in KEYPOINT_BRANCH_REGISTRY:
        names = sorted(name for name, _ in KEYPOINT_BRANCH_REGISTRY)
        raise ConfigError(f"unknown MODEL.DEPOTR.HEAD {head!r}; expected one of the registered {names}")
    return KEYPOINT_BRANCH_REGISTRY.get(head)(cfg)
