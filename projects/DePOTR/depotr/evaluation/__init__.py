from .coco_keypoints import build_keypoint_evaluator
from .error_analysis import ResultsAnalysis, analyze_keypoint_results
from .error_report import write_report

__all__ = ["build_keypoint_evaluator", "ResultsAnalysis", "analyze_keypoint_results", "write_report"]
