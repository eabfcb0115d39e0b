"""DePOTR modeling: the keypoint branches run on person crops, their parts, and the top-down
meta-architecture (imported here so that ``import depotr.modeling`` registers it)."""
from .backbone import MultiLevelProjection, build_resnet
from .deformable_transformer import DeformableTransformer
from .keypoint_branches import BRANCHES, HeatmapBranch, RegressionBranch, average_outputs, build_keypoint_branch
from .meta_arch import TopDownPoseEstimator
from .pose_transformer import DeformablePoseTransformer
from .position_encoding import PositionEmbeddingSine

__all__ = [
    "BRANCHES",
    "DeformablePoseTransformer",
    "DeformableTransformer",
    "HeatmapBranch",
    "MultiLevelProjection",
    "PositionEmbeddingSine",
    "RegressionBranch",
    "TopDownPoseEstimator",
    "average_outputs",
    "build_keypoint_branch",
    "build_resnet",
]
