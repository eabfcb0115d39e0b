#!/usr/bin/env python
r"""Evaluates COCO keypoint results and diagnoses their errors (thesis Figs. 27, 28, 31).

    python tools/analyze_results.py --gt person_keypoints_val2017.json \
        --results keypoints_results.json --output output/analysis [--sigmas 0.026 0.025 ...] \
        [--baseline-train-gt person_keypoints_train2017.json]
    # a finished train_net.py run: its config's first test set and first training set
    python tools/analyze_results.py --config-file configs/depotr_hm_r18_synthetic.yaml [KEY VALUE ...]

Results are any COCO keypoint results list ({image_id, category_id, keypoints [x, y, s] * K,
score}), ours (Detectron2's ``coco_instances_results.json``) or anyone's. Writes into --output (each
file whole or not at all):

* metrics.json / metrics.md: the 10 COCO keypoint metrics (AP ... ARl) of pycocotools'
  ``COCOeval(iouType="keypoints")``;
* pr_curves.png: precision-recall curves at OKS 0.50 ... 0.95 (area all, maxDets 20);
* error_breakdown.png / .md / .json: AP at each OKS threshold after cumulatively correcting
  Jitter, Inversion, Swap and Miss keypoints, removing background false positives and false
  negatives (Ronchi & Perona, ICCV 2017), with the number of keypoints in each class and of the
  ground-truth images without any result (their persons count as misses; also logged);
* with a baseline training set, mean_pose_baseline.json: the metrics (in %) of the mean-pose
  baseline (``depotr.evaluation.baselines``: the mean box-normalised training pose placed in
  every ground-truth box), printed beside the results' AP;
* bins.json / bins.md: AP and the share of each keypoint class per size / truncation /
  occlusion / crowd bin of the persons (``depotr.evaluation.error_analysis.analyze_bins``), with
  the mean-pose baseline's AP per bin when there is a baseline training set.

With ``--config-file`` (and KEY VALUE overrides, bare or after --opts, as every entry point): --gt is the json of the
config's ``DATASETS.TEST[0]``, --results ``OUTPUT_DIR/inference/<TEST[0]>/coco_instances_results.json``,
--output ``OUTPUT_DIR/analysis``, --baseline-train-gt the json of ``DATASETS.TRAIN[0]``, the
sigmas and the left/right mirrors of the Inversion class the config's keypoints
(``keypoint_metadata_from_config``); explicit options win. Without a config, the pairs the
ground truth's keypoint names make (left_x / right_x, L_X / R_X, x.l / x.r, LeftX / RightX), and
COCO's sigmas when its keypoints are COCO's 17 person keypoints (other keypoints, 17 or not, need
--sigmas).

The definitions and thresholds are in ``depotr.evaluation.error_analysis``.
"""

import argparse
import json
import os
import sys

from depotr.cli import ConfigError, add_config_arguments, config_overrides, parse_command_line, run_main


def _config_defaults(config_file: str, opts) -> dict:
    """--gt, --results, --output, --baseline-train-gt, --sigmas and the flip indices of a
    train_net.py run (the run's config.yaml: its keypoint keys give the sigmas and flip indices of
    any skeleton; --gt and --baseline-train-gt are left unset for a dataset not registered here,
    e.g. a custom one registered by the user's own script)."""
    from detectron2.data import DatasetCatalog, MetadataCatalog

    from depotr.config import load_depotr_config
    from depotr.data import register_synthetic_datasets_from_cfg
    from depotr.data.keypoint_metadata import keypoint_metadata_from_config

    cfg = load_depotr_config(config_file, opts)
    register_synthetic_datasets_from_cfg(cfg)

    def json_file(name: str):
        if name not in DatasetCatalog.list():
            return None
        DatasetCatalog.get(name)  # a generated dataset is generated (or its cache checked) first
        return MetadataCatalog.get(name).json_file

    test = cfg.DATASETS.TEST[0]
    return {
        "gt": json_file(test),
        "baseline_train_gt": json_file(cfg.DATASETS.TRAIN[0]),
        "results": os.path.join(cfg.OUTPUT_DIR, "inference", test, "coco_instances_results.json"),
        "output": os.path.join(cfg.OUTPUT_DIR, "analysis"),
        "sigmas": list(keypoint_metadata_from_config(cfg).oks_sigmas),
        "flip_indices": list(keypoint_metadata_from_config(cfg).flip_indices),
    }


def check_image_ids(gt, results, gt_file: str) -> None:
    """A ValueError saying how to fix results whose image ids are not the ground truth's
    (the demo's ids come from file names); other malformations are left to the analysis."""
    if not isinstance(results, list) or not isinstance(gt, dict) or not isinstance(gt.get("images"), list):
        return
    known = {image.get("id") for image in gt["images"] if isinstance(image, dict)}
    # A missing or list-valued image_id is left to the analysis, whose message names the entry.
    ids = [r["image_id"] for r in results if isinstance(r, dict) and "image_id" in r]
    unknown = sorted({repr(i) for i in ids if not isinstance(i, (list, dict)) and i not in known})
    if unknown:
        examples = ", ".join(map(repr, sorted(known, key=str)[:3]))
        raise ValueError(
            f"results name {len(unknown)} image id(s) that are not in the ground truth {gt_file} "
            f"(e.g. {', '.join(unknown[:3])}; its ids are e.g. {examples}). "
            f"demo/demo.py takes an image's id from its file name unless given --image-ids {gt_file}, which "
            "takes the id of the ground-truth image of the same file name"
        )


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gt", help="COCO keypoints ground-truth json")
    parser.add_argument("--results", help="COCO keypoint results json")
    parser.add_argument("--output", help="folder for the tables and plots")
    parser.add_argument(
        "--sigmas",
        type=float,
        nargs="+",
        help="OKS sigma per keypoint (default: COCO's, for a ground truth of COCO's 17 person keypoints)",
    )
    parser.add_argument("--baseline-train-gt", help="COCO keypoints json the mean-pose baseline is taken from")
    add_config_arguments(parser, config_required=False, random_weights=False)  # the defaults of the options above
    parser.set_defaults(flip_indices=None)  # from --config-file only
    args = parse_command_line(parser, argv)

    from detectron2.utils.logger import setup_logger

    from depotr.evaluation.baselines import mean_pose, mean_pose_baseline_metrics, mean_pose_results
    from depotr.evaluation.error_analysis import analyze_bins, analyze_keypoint_results
    from depotr.evaluation.error_report import bins_table, breakdown_table, metrics_table, write_report
    from depotr.file_io import atomic_write, load_json

    setup_logger(name="depotr")
    opts = config_overrides(args)
    try:
        if args.config_file:
            for key, value in _config_defaults(args.config_file, opts).items():
                if getattr(args, key) is None:
                    setattr(args, key, value)
        elif opts:
            parser.error(f"config overrides {opts} need --config-file")
        missing = [f"--{name}" for name in ("gt", "results", "output") if getattr(args, name) is None]
        if missing:
            parser.error(
                f"{', '.join(missing)} required (or --config-file, whose first test dataset gives --gt when "
                "it is registered in this process: a custom dataset needs --gt)"
            )
        gt = load_json(args.gt, "ground-truth")
        results = load_json(args.results, "results")
        check_image_ids(gt, results, args.gt)
        analysis = analyze_keypoint_results(gt, results, args.sigmas, args.flip_indices)
        baseline = baseline_results = None
        if args.baseline_train_gt:
            train_gt = load_json(args.baseline_train_gt, "baseline training")
            baseline = mean_pose_baseline_metrics(train_gt, gt, args.sigmas)
            baseline_results = mean_pose_results(mean_pose(train_gt), gt)
        bins = analyze_bins(gt, results, analysis, args.sigmas, baseline_results)
    except ConfigError:
        raise  # run_main: "error: ..." and status 2, as every entry point
    except (FileNotFoundError, ValueError) as e:
        print(f"analyze_results: {e}", file=sys.stderr)
        return 1
    paths = write_report(analysis, args.output, bins)
    print(metrics_table(analysis.metrics))
    print()
    print(breakdown_table(analysis))
    print()
    print(bins_table(bins))
    print()
    if baseline is not None:
        path = os.path.join(args.output, "mean_pose_baseline.json")
        atomic_write(path, lambda f: f.write(json.dumps(baseline, indent=1).encode()))
        paths["mean_pose_baseline"] = path
        print(
            f"AP {100 * analysis.metrics['AP']:.1f} (AP50 {100 * analysis.metrics['AP50']:.1f}, "
            f"AP75 {100 * analysis.metrics['AP75']:.1f}); mean-pose baseline (no model): AP {baseline['AP']:.1f} "
            f"(AP50 {baseline['AP50']:.1f}, AP75 {baseline['AP75']:.1f})"
        )
        print()
    print("wrote " + ", ".join(paths.values()))
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
