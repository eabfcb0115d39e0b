"""Keypoint heads: regression (DePOTR), heatmap (DePOTR-HM, SimpleBaseline, TransPose-R), the
branches' typed outputs, the heatmap codec, the losses (RLE's with its flow) and the MLP."""

from .heatmap import COARSE_STRIDE, DePOTRDotProductHeatmapHead, DePOTRHeatmapHead, SimpleBaselineHead, TransPoseHead
from .heatmap_codec import HeatmapCodec
from .losses import coordinate_loss, joints_mse_loss, keypoint_target_weights, score_loss
from .mlp import MLP
from .outputs import BranchOutputs, HeatmapOutputs, RegressionOutputs, RLEOutputs
from .regression import RegressionHead
from .rle_loss import RealNVP, RLELoss

__all__ = [
    "COARSE_STRIDE",
    "BranchOutputs",
    "DePOTRDotProductHeatmapHead",
    "DePOTRHeatmapHead",
    "HeatmapCodec",
    "HeatmapOutputs",
    "MLP",
    "RealNVP",
    "RLELoss",
    "RLEOutputs",
    "RegressionHead",
    "RegressionOutputs",
    "SimpleBaselineHead",
    "TransPoseHead",
    "coordinate_loss",
    "joints_mse_loss",
    "keypoint_target_weights",
    "score_loss",
]
