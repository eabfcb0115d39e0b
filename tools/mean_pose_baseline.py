#!/usr/bin/env python
"""The mean-pose baseline (no model) on a COCO keypoints set: the mean box-normalised training
pose placed in every ground-truth box (definition in ``depotr.evaluation.baselines``).

    python tools/mean_pose_baseline.py --train-gt datasets/.../train/annotations.json \
        --gt datasets/.../val/annotations.json [--output baseline.json]
"""
import argparse
import json
import sys

from depotr.evaluation.baselines import mean_pose_baseline_metrics
from depotr.evaluation.error_analysis import load_json, metrics_table
from depotr.file_io import atomic_write


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train-gt", required=True, help="COCO keypoints json the mean pose is taken from")
    parser.add_argument("--gt", required=True, help="COCO keypoints json to evaluate on")
    parser.add_argument("--sigmas", type=float, nargs="+", help="OKS sigma per keypoint (default: COCO's 17)")
    parser.add_argument("--output", help="write the metrics (in %%) to this json file")
    args = parser.parse_args(argv)
    try:
        metrics = mean_pose_baseline_metrics(load_json(args.train_gt, "training ground-truth"),
                                             load_json(args.gt, "ground-truth"), args.sigmas)
    except (OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print("Mean-pose baseline (mean box-normalised training pose in every ground-truth box):")
    print(metrics_table({k: v / 100.0 for k, v in metrics.items()}))
    if args.output:
        atomic_write(args.output, lambda f: f.write(json.dumps(metrics, indent=1).encode()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
