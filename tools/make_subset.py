#!/usr/bin/env python
r"""Writes a representative subset of a COCO keypoints json (thesis section 6.1).

    python tools/make_subset.py --input person_keypoints_train2017.json --fraction 0.1 \
        --output subset.json --plot subset.png [--seed 0] [--tolerance 1.0]

Keeps ``fraction`` of the images such that, per keypoint, the shares of visible (v=2),
occluded (v=1) and unlabelled/outside (v=0) person keypoints stay within ``--tolerance``
percentage points of the full set, and plots both distributions. Both outputs are checked (their
folders exist and are writable; the plot's extension is a matplotlib format) before the selection
runs, and written atomically: when either cannot be written, neither is.
"""

import argparse
import json
import os
import sys
from typing import Optional

# torch and Detectron2 (depotr.data) are imported once the arguments are parsed (a fast --help)
from depotr.cli import ConfigError, run_main
from depotr.file_io import atomic_output_path, output_problem


def plot_format_problem(path: str) -> Optional[str]:
    """Why matplotlib cannot save a figure in ``path``'s format (its extension), or None."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    formats = FigureCanvasAgg.get_supported_filetypes()
    extension = os.path.splitext(path)[1][1:].lower()
    if extension not in formats:
        return f"the extension {extension or '(none)'!r} is not a matplotlib format ({', '.join(sorted(formats))})"
    return None


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--input", required=True, help="COCO keypoints json")
    parser.add_argument("--fraction", type=float, required=True, help="fraction of the images to keep, in (0, 1]")
    parser.add_argument("--output", required=True, help="subset json to write")
    parser.add_argument("--plot", help="bar chart PNG comparing both visibility distributions")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tolerance", type=float, default=1.0, help="max deviation in percentage points")
    args = parser.parse_args(argv)
    checks = [("--output", args.output, output_problem(args.output))]
    if args.plot:
        checks.append(("--plot", args.plot, output_problem(args.plot) or plot_format_problem(args.plot)))
    for option, path, problem in checks:  # before the selection, which can take long
        if problem:
            parser.error(f"{option} {path}: {problem}")
    from detectron2.utils.logger import setup_logger

    from depotr.data.subset import (
        keypoint_names,
        plot_visibility_distributions,
        select_subset,
        subset_coco,
        visibility_distribution,
    )

    setup_logger(name="depotr")

    try:
        with open(args.input) as f:
            coco = json.load(f)
        if not isinstance(coco, dict):
            raise TypeError(
                f"holds a json {type(coco).__name__}, expected an object with images, annotations, categories"
            )
        ids = select_subset(coco, args.fraction, seed=args.seed, tolerance_pp=args.tolerance)
    except json.JSONDecodeError as e:
        raise ConfigError(f"{args.input} is not valid json: {e}") from e
    except OSError as e:
        raise ConfigError(f"cannot read {args.input}: {e.strerror}") from e
    except (KeyError, TypeError, ValueError) as e:
        problem = f"no {e} field where COCO keypoints have one" if isinstance(e, KeyError) else str(e)
        raise ConfigError(f"{args.input}: {problem}") from e
    subset = subset_coco(coco, ids)
    full_dist, sub_dist = visibility_distribution(coco), visibility_distribution(subset)
    # The plot is drawn into its temporary file (same extension) before either output is moved in place.
    with atomic_output_path(args.output) as json_tmp:
        with open(json_tmp, "w") as f:
            json.dump(subset, f)
        if args.plot:
            with atomic_output_path(args.plot) as plot_tmp:
                plot_visibility_distributions(
                    full_dist, sub_dist, keypoint_names(coco), plot_tmp, title=f"{args.input} fraction {args.fraction}:"
                )
    dev = abs(full_dist - sub_dist).max() * 100
    print(
        f"{args.output}: {len(subset['images'])} of {len(coco['images'])} images, "
        f"{len(subset['annotations'])} annotations, max deviation {dev:.3f} pp"
    )
    if args.plot:
        print(f"plot: {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
