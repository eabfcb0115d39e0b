"""DePOTR modeling: the keypoint branches run on person crops (registered by head name), their
parts, test-time augmentation, and the top-down meta-architecture (imported here so that
``import depotr.modeling`` registers it)."""

from .backbone import MultiLevelProjection, build_resnet
from .deformable_transformer import DeformableTransformer
from .keypoint_branches import (
    KEYPOINT_BRANCH_REGISTRY,
    DePOTRHeatmapBranch,
    HeatmapBranch,
    KeypointBranch,
    RegressionBranch,
    SimpleBaselineBranch,
    TransPoseBranch,
    build_keypoint_branch,
)
from .meta_arch import TopDownPoseEstimator
from .pose_transformer import DeformablePoseTransformer
from .position_encoding import PositionEmbeddingSine

__all__ = [
    "KEYPOINT_BRANCH_REGISTRY",
    "DePOTRHeatmapBranch",
    "DeformablePoseTransformer",
    "DeformableTransformer",
    "HeatmapBranch",
    "KeypointBranch",
    "MultiLevelProjection",
    "PositionEmbeddingSine",
    "RegressionBranch",
    "SimpleBaselineBranch",
    "TopDownPoseEstimator",
    "TransPoseBranch",
    "build_keypoint_branch",
    "build_resnet",
]
