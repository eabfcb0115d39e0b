from .coco_keypoints import build_keypoint_evaluator, has_fast_coco_eval

__all__ = ["build_keypoint_evaluator", "has_fast_coco_eval"]
