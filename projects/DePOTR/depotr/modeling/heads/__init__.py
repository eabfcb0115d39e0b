"""Keypoint heads: regression (DePOTR), heatmap (DePOTR-HM), SimpleBaseline, TransPose-R, the
branches' typed outputs, and the shared heatmap codec, losses (RLE's with its flow), MLP and target
rule."""

from .heatmap import DePOTRDotProductHeatmapHead, DePOTRHeatmapHead
from .heatmap_codec import HeatmapCodec
from .heatmap_loss import joints_mse_loss
from .mlp import MLP
from .outputs import BranchOutputs, HeatmapOutputs, RegressionOutputs, RLEOutputs
from .regression import RegressionHead, coordinate_loss, score_loss
from .rle_loss import RealNVP, RLELoss
from .simple_baseline import SimpleBaselineHead
from .targets import keypoint_target_weights
from .transpose import TransPoseHead

__all__ = [
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
