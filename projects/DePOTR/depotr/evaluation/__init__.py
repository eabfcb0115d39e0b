from .coco_keypoints import build_keypoint_evaluator
from .crowdpose import CrowdPoseEvaluator
from .error_analysis import ResultsAnalysis, analyze_keypoint_results
from .error_report import write_report
from .pckh import PCKhEvaluator

__all__ = [
    "build_keypoint_evaluator",
    "CrowdPoseEvaluator",
    "PCKhEvaluator",
    "ResultsAnalysis",
    "analyze_keypoint_results",
    "write_report",
]
