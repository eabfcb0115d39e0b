"""Keypoint heads: regression (DePOTR), heatmap (DePOTR-HM), SimpleBaseline, TransPose-R, and the
shared heatmap codec, losses (RLE's with its flow), MLP and target rule."""
from .heatmap import DePOTRDotProductHeatmapHead, DePOTRHeatmapHead
from .heatmap_codec import HeatmapCodec, flip_heatmaps
from .heatmap_loss import joints_mse_loss
from .mlp import MLP
from .regression import RegressionHead, coordinate_loss, score_loss
from .rle_loss import RealNVP, RLELoss
from .simple_baseline import SimpleBaselineHead
from .targets import keypoint_target_weights
from .transpose import TransPoseHead

__all__ = [
    "DePOTRDotProductHeatmapHead",
    "DePOTRHeatmapHead",
    "HeatmapCodec",
    "MLP",
    "RealNVP",
    "RLELoss",
    "RegressionHead",
    "SimpleBaselineHead",
    "TransPoseHead",
    "coordinate_loss",
    "flip_heatmaps",
    "joints_mse_loss",
    "keypoint_target_weights",
    "score_loss",
]
