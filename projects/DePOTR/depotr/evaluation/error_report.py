"""Report of a COCO keypoint results analysis (:mod:`depotr.evaluation.error_analysis`): markdown
tables of the metrics and the error breakdown, and matplotlib PNGs of the PR curves and the
breakdown (coco-analyze style, Ronchi & Perona, ICCV 2017).

Shapes: T OKS thresholds, R recall thresholds, S analysis stages (``STAGES``).
"""

import json
import os
from typing import Any, Dict, Optional, Tuple

import numpy as np

from ..file_io import atomic_output_path, atomic_write
from .error_analysis import KEYPOINT_CLASSES, MATCH_OKS, METRIC_NAMES, STAGES, ResultsAnalysis, mean_valid

__all__ = ["bins_table", "breakdown_table", "metrics_table", "plot_error_breakdown", "plot_pr_curves", "write_report"]

PLOTTED_OKS: Tuple[float, ...] = (0.5, 0.75, 0.95)  # thresholds with a panel in the breakdown PNG
# Fill colour per stage; the error colours are coco-analyze's.
STAGE_COLOURS: Tuple[str, ...] = ("#C8D7E6", "#8C4646", "#D96459", "#F2AE72", "#F2E394", "#8063A3", "seagreen")


def metrics_table(metrics: Dict[str, float]) -> str:
    """Markdown table of the 10 COCO keypoint metrics."""
    header = "| " + " | ".join(METRIC_NAMES) + " |"
    rule = "|" + "---|" * len(METRIC_NAMES)
    values = "| " + " | ".join(f"{metrics[name]:.3f}" for name in METRIC_NAMES) + " |"
    return "\n".join([header, rule, values])


def breakdown_table(analysis: ResultsAnalysis) -> str:
    """Markdown tables: AP per OKS threshold after each cumulative correction, and counts."""
    lines = ["| OKS | " + " | ".join(STAGES) + " |", "|---|" + "---|" * len(STAGES)]
    for t, oks in enumerate(analysis.oks_thresholds):
        lines.append(f"| {oks:.2f} | " + " | ".join(f"{ap:.3f}" for ap in analysis.ap[:, t]) + " |")
    lines.append("| 0.50:0.95 | " + " | ".join(f"{ap:.3f}" for ap in analysis.ap_mean) + " |")

    counts = analysis.keypoint_counts()
    total = max(sum(counts.values()), 1)
    lines += [
        "",
        f"Keypoint classes of the {len(analysis.keypoint_labels)} results matched at OKS >= {MATCH_OKS}, "
        "results (BckgFP) and ground-truth persons (FN) removed in the last two stages:",
        "",
        "| " + " | ".join(name.capitalize() for name in KEYPOINT_CLASSES) + " | BckgFP results | FN persons |",
        "|" + "---|" * (len(KEYPOINT_CLASSES) + 2),
        "| "
        + " | ".join(f"{n} ({100 * n / total:.1f}%)" for n in counts.values())
        + f" | {analysis.num_background_fp} | {analysis.num_false_negatives} |",
        "",
        f"Ground-truth images without any result: {analysis.num_images_without_results} of {analysis.num_images} "
        "(their persons count as misses, FN).",
    ]
    return "\n".join(lines)


def bins_table(bins: Dict[str, Dict[str, Dict[str, Any]]]) -> str:
    """Markdown table of :func:`~depotr.evaluation.error_analysis.analyze_bins`: per bin the
    persons, AP, the baseline's AP and the share of each keypoint class (%)."""

    def number(value: Optional[float]) -> str:
        return "-" if value is None else f"{value:.1f}"

    lines = [
        "| attribute | bin | persons | AP | mean-pose AP | " + " | ".join(KEYPOINT_CLASSES) + " |",
        "|" + "---|" * (5 + len(KEYPOINT_CLASSES)),
    ]
    for attribute, rows in bins.items():
        for name, row in rows.items():
            cells = [attribute, name, str(row["persons"]), number(row["AP"]), number(row.get("baseline_AP"))]
            cells += [number(row[c]) if row["keypoints"] else "-" for c in KEYPOINT_CLASSES]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _figure(width: float, height: float):
    """A matplotlib ``Figure`` (no pyplot state)."""
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height))


def plot_pr_curves(precision: np.ndarray, oks_thresholds: np.ndarray, recall_thresholds: np.ndarray, path: str) -> None:
    """PNG of the (T, R) precision-recall curves, one per OKS threshold, labelled with their AP."""
    from matplotlib import colormaps

    fig = _figure(8, 6)
    ax = fig.add_subplot(1, 1, 1)
    colours = colormaps["viridis"](np.linspace(0, 0.9, len(oks_thresholds)))
    for t, oks in enumerate(oks_thresholds):
        label = f"OKS {oks:.2f}: AP {mean_valid(precision[t]):.3f}"
        ax.plot(recall_thresholds, np.clip(precision[t], 0, None), color=colours[t], label=label)
    _finish_pr_axes(ax, "Precision-recall, area all, maxDets 20")
    ax.legend(loc="lower left", fontsize=8)
    _save(fig, path)


def plot_error_breakdown(analysis: ResultsAnalysis, path: str) -> None:
    """PNG: per OKS threshold of ``PLOTTED_OKS``, the PR curve of each stage with the area
    each correction adds filled (coco-analyze style), and a bar chart of the 0.50:0.95 APs."""
    panels = [t for t, oks in enumerate(analysis.oks_thresholds) if np.isclose(PLOTTED_OKS, oks).any()]
    fig = _figure(5 * (len(panels) + 1), 5)
    recall = analysis.recall_thresholds
    for column, t in enumerate(panels):
        ax = fig.add_subplot(1, len(panels) + 1, column + 1)
        curves = np.clip(analysis.precision[:, t], 0, None)  # (S, R)
        for s, stage in enumerate(STAGES):
            lower = curves[s - 1] if s else np.zeros_like(recall)
            label = f"{stage}: {analysis.ap[s, t]:.3f}"
            ax.fill_between(recall, lower, curves[s], where=curves[s] >= lower, color=STAGE_COLOURS[s], label=label)
            ax.plot(recall, curves[s], color="k", linewidth=0.8)
        _finish_pr_axes(ax, f"OKS {analysis.oks_thresholds[t]:.2f}")
        ax.legend(loc="lower left", fontsize=8)
    ax = fig.add_subplot(1, len(panels) + 1, len(panels) + 1)
    ax.bar(np.arange(len(STAGES)), np.clip(analysis.ap_mean, 0, None), color=STAGE_COLOURS, edgecolor="k")
    ax.set_xticks(np.arange(len(STAGES)), STAGES, rotation=45, ha="right")
    ax.set(ylim=(0, 1), ylabel="AP", title="AP OKS 0.50:0.95 after each correction")
    _save(fig, path)


def _save(fig, path: str) -> None:
    """Saves ``fig`` (laid out, 100 dpi) to ``path`` in its extension's format, whole or not at all."""
    fig.tight_layout()
    with atomic_output_path(path) as tmp_path:  # same extension: the format matplotlib infers
        fig.savefig(tmp_path, dpi=100)


def _finish_pr_axes(ax, title: str) -> None:
    ax.set(xlim=(0, 1), ylim=(0, 1.01), xlabel="recall", ylabel="precision", title=title)
    ax.grid(True, alpha=0.3)


def write_report(
    analysis: ResultsAnalysis, output_dir: str, bins: Optional[Dict[str, Dict[str, Dict[str, Any]]]] = None
) -> Dict[str, str]:
    """Writes metrics.{json,md}, pr_curves.png and error_breakdown.{json,md,png} (and, given the
    per-bin analysis ``bins``, bins.{json,md}) into ``output_dir`` (created if needed), each whole
    or not at all (a crash leaves no half-written file); returns their paths by name."""
    os.makedirs(output_dir, exist_ok=True)
    texts: Dict[str, Optional[str]] = {  # file name -> text; None: a plot
        "metrics.json": json.dumps(analysis.metrics, indent=2),
        "metrics.md": metrics_table(analysis.metrics) + "\n",
        "pr_curves.png": None,
        "error_breakdown.json": json.dumps(analysis.to_dict(), indent=2),
        "error_breakdown.md": breakdown_table(analysis) + "\n",
        "error_breakdown.png": None,
    }
    if bins is not None:
        texts.update({"bins.json": json.dumps(bins, indent=2), "bins.md": bins_table(bins) + "\n"})
    paths = {name: os.path.join(output_dir, name) for name in texts}
    for name, text in texts.items():
        if text is not None:
            atomic_write(paths[name], lambda f, text=text: f.write(text.encode()))
    plot_pr_curves(analysis.precision[0], analysis.oks_thresholds, analysis.recall_thresholds, paths["pr_curves.png"])
    plot_error_breakdown(analysis, paths["error_breakdown.png"])
    return paths
