#!/usr/bin/env python
"""Evaluates COCO keypoint results and diagnoses their errors (thesis Figs. 27, 28, 31).

    python tools/analyze_results.py --gt person_keypoints_val2017.json \
        --results keypoints_results.json --output output/analysis [--sigmas 0.026 0.025 ...]

Results are any COCO keypoint results list ({image_id, category_id, keypoints [x, y, s] * K,
score}), ours (Detectron2's ``coco_instances_results.json``) or anyone's. Writes into --output:

* metrics.json / metrics.md: the 10 COCO keypoint metrics (AP ... ARl) of pycocotools'
  ``COCOeval(iouType="keypoints")``;
* pr_curves.png: precision-recall curves at OKS 0.50 ... 0.95 (area all, maxDets 20);
* error_breakdown.png / .md / .json: AP at each OKS threshold after cumulatively correcting
  Jitter, Inversion, Swap and Miss keypoints, removing background false positives and false
  negatives (Ronchi & Perona, ICCV 2017), with the number of keypoints in each class.

The definitions and thresholds are in ``depotr.evaluation.error_analysis``.
"""
import argparse
import sys

from detectron2.utils.logger import setup_logger

from depotr.evaluation.error_analysis import (
    analyze_keypoint_results,
    breakdown_table,
    load_json,
    metrics_table,
    write_report,
)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gt", required=True, help="COCO keypoints ground-truth json")
    parser.add_argument("--results", required=True, help="COCO keypoint results json")
    parser.add_argument("--output", required=True, help="folder for the tables and plots")
    parser.add_argument("--sigmas", type=float, nargs="+", help="OKS sigma per keypoint (default: COCO's 17)")
    args = parser.parse_args(argv)
    setup_logger(name="depotr")

    try:
        gt = load_json(args.gt, "ground-truth")
        results = load_json(args.results, "results")
        analysis = analyze_keypoint_results(gt, results, args.sigmas)
    except (FileNotFoundError, ValueError) as e:
        print(f"analyze_results: {e}", file=sys.stderr)
        return 1
    paths = write_report(analysis, args.output)
    print(metrics_table(analysis.metrics))
    print()
    print(breakdown_table(analysis))
    print()
    print("wrote " + ", ".join(paths.values()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
