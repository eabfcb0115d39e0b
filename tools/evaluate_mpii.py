#!/usr/bin/env python
"""PCKh of MPII predictions against the official ground truth (the standard MPII table).

    python tools/evaluate_mpii.py --gt datasets/mpii/annot/gt_valid.mat --pred output/pred.mat
    # the mean-pose baseline (no model) of a config's DATASETS.TRAIN[0] on its DATASETS.TEST[0]
    python tools/evaluate_mpii.py --mean-pose-baseline --config-file configs/depotr_hm_r18_synthetic_mpii.yaml

--pred holds ``preds`` (P x 16 x 2, 0-based pixels, the persons and joints of --gt in its order),
as HRNet writes it and as DePOTR's PCKh evaluator writes ``OUTPUT_DIR/inference/<dataset>/pred.mat``.
Prints PCKh@0.5 of Head, Shoulder, Elbow, Wrist, Hip, Knee, Ankle, Mean and Mean@0.1, then as the
last line ``PCKh Mean@0.5 <x> Mean@0.1 <y>`` (definitions: ``depotr.evaluation.pckh``; the
baseline: ``depotr.evaluation.baselines``).
"""

import argparse
import sys

from depotr.cli import ConfigError, add_config_arguments, config_overrides, parse_command_line, run_main


def _baseline_table(config_file: str, opts) -> dict:
    from depotr.config import load_depotr_config
    from depotr.data import register_synthetic_datasets_from_cfg
    from depotr.evaluation.pckh import mean_pose_pckh_baseline

    cfg = load_depotr_config(config_file, opts)
    register_synthetic_datasets_from_cfg(cfg)
    return mean_pose_pckh_baseline(cfg.DATASETS.TRAIN[0], cfg.DATASETS.TEST[0])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gt", help="the official gt_valid.mat")
    parser.add_argument("--pred", help="pred.mat with preds (P, 16, 2), 0-based pixels")
    parser.add_argument("--mean-pose-baseline", action="store_true", help="PCKh of the mean pose of --config-file")
    add_config_arguments(parser, config_required=False, random_weights=False)  # for --mean-pose-baseline
    args = parse_command_line(parser, argv)
    if args.mean_pose_baseline and not args.config_file:
        parser.error("--mean-pose-baseline needs --config-file")
    if not args.mean_pose_baseline and not (args.gt and args.pred):
        parser.error("give --gt and --pred (or --mean-pose-baseline --config-file)")
    from depotr.evaluation.pckh import format_pckh_table, load_mpii_gt_mat, load_mpii_predictions_mat, pckh_table

    try:
        if args.mean_pose_baseline:
            table = _baseline_table(args.config_file, config_overrides(args))
        else:
            gt = load_mpii_gt_mat(args.gt)
            table = pckh_table(load_mpii_predictions_mat(args.pred, len(gt.positions)), gt)
    except ConfigError:
        raise  # run_main: "error: ..." and status 2, as every entry point
    except ValueError as e:  # a file that is no MPII .mat, a dataset that is not MPII's: named in e
        print(f"evaluate_mpii: {e}", file=sys.stderr)
        return 1
    print(format_pckh_table(table))
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
