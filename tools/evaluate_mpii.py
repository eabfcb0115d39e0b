#!/usr/bin/env python
"""PCKh of MPII predictions against the official ground truth (the standard MPII table).

    python tools/evaluate_mpii.py --gt datasets/mpii/annot/gt_valid.mat --pred output/pred.mat

--pred holds ``preds`` (P x 16 x 2, 0-based pixels, the persons and joints of --gt in its order),
as HRNet writes it and as DePOTR's PCKh evaluator writes ``OUTPUT_DIR/inference/<dataset>/pred.mat``.
Prints PCKh@0.5 of Head, Shoulder, Elbow, Wrist, Hip, Knee, Ankle, Mean and Mean@0.1, then as the
last line ``PCKh Mean@0.5 <x> Mean@0.1 <y>`` (definitions: ``depotr.evaluation.pckh``).
"""

import argparse
import sys

from depotr.evaluation.pckh import format_pckh_table, load_mpii_gt_mat, load_mpii_predictions_mat, pckh_table


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gt", required=True, help="the official gt_valid.mat")
    parser.add_argument("--pred", required=True, help="pred.mat with preds (P, 16, 2), 0-based pixels")
    args = parser.parse_args(argv)
    gt = load_mpii_gt_mat(args.gt)
    preds = load_mpii_predictions_mat(args.pred, len(gt.positions))
    print(format_pckh_table(pckh_table(preds, gt)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
