from .coco_keypoints import build_keypoint_evaluator, has_fast_coco_eval
from .error_analysis import ResultsAnalysis, analyze_keypoint_results, write_report

__all__ = ["build_keypoint_evaluator", "has_fast_coco_eval", "ResultsAnalysis", "analyze_keypoint_results", "write_report"]
