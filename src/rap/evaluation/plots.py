"""The PNG plots of a run, drawn to be read at a glance: recall@K against
database size (the paper's Figure 5 layout, one panel per query mode), the
recognition precision-recall curve, per-concept bars. matplotlib (the ``eval``
extra) draws them off-screen.

Every plot has at most four series a panel, one of them a baseline to compare
with (chance, or the mean over concepts), integer ticks where the axis counts
things, and a caption under it that says what was measured on what.
"""

from __future__ import annotations

import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

MAX_KS = 3
"""Values of K drawn per panel of recall against N: with the chance line, four series."""
BASELINE = {"color": "0.45", "linestyle": "--", "linewidth": 1.2}
DPI = 120


def _pyplot() -> Any:
    from rap._imports import require

    matplotlib = require("matplotlib", "eval")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _figure(panels: int, panel_size: tuple[float, float], caption: str) -> tuple[Any, list[Any], str, float]:
    """A figure of ``panels`` side by side with room under them for a legend and the wrapped caption."""
    plt = _pyplot()
    width = max(5.0, panels * panel_size[0])
    wrapped = textwrap.fill(caption, width=int(width * 15))  # about 15 characters an inch at 8 points
    under = 0.4 + 0.14 * (wrapped.count("\n") + 1)  # inches: the legend's row, then the caption's lines
    figure, axes = plt.subplots(1, panels, figsize=(width, panel_size[1] + under), sharey=True, squeeze=False)
    return figure, list(axes[0]), wrapped, under


def _finish(figure: Any, wrapped: str, under: float, path: Path, handles: Sequence[Any]) -> Path:
    """The legend in one row under the panels, the caption under it; saved, and the figure closed."""
    height = figure.get_figheight()
    figure.tight_layout(rect=(0, under / height, 1, 1))
    figure.legend(handles=handles, loc="lower center", bbox_to_anchor=(0.5, (under - 0.36) / height),
                  ncol=len(handles), fontsize=8, frameon=False)  # fmt: skip
    figure.text(0.01, 0.04 / height, wrapped, fontsize=8, va="bottom", ha="left", color="0.2")
    figure.savefig(path, dpi=DPI)
    _pyplot().close(figure)
    return path


def _integer_ticks(axes: Any, values: Sequence[int]) -> None:
    """Ticks at the measured sizes when they are few, else at whole numbers."""
    from matplotlib.ticker import MaxNLocator

    if len(values) <= 8:
        axes.set_xticks(sorted(values))
    else:
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))


def drawn_ks(ks: Sequence[int]) -> list[int]:
    """The K of recall@K that a panel shows: all of them up to :data:`MAX_KS`, else the
    smallest, the largest and the one in the middle."""
    ordered = sorted(set(ks))
    return ordered if len(ordered) <= MAX_KS else [ordered[0], ordered[len(ordered) // 2], ordered[-1]]


def recall_vs_size(
    path: Path, panels: Mapping[str, Mapping[int, Mapping[int, float]]], title: str, caption: str
) -> Path:
    """``panels``: a panel per query mode, each ``K -> {database size N: recall@K}``.

    As the paper's Figure 5: recall against N, a line per K, the same colour
    for a K in every panel; a dashed line gives chance for the largest K,
    ``K / N``, what ranking the concepts at random would reach.
    """
    figure, axes_row, wrapped, under = _figure(len(panels), (3.3, 3.2), caption)
    plt = _pyplot()
    ks = drawn_ks([k for curves in panels.values() for k in curves])
    colours = dict(zip(ks, plt.get_cmap("viridis")([0.0, 0.45, 0.8])))
    # the largest K drawn first and widest, so that lines which meet (at recall 1, say) show as nested
    widths = {k: (1.4 + 1.4 * n, 5 + 2.5 * n) for n, k in enumerate(ks)}
    handles = []
    for axes, (panel, curves) in zip(axes_row, panels.items()):
        sizes = sorted({n for points in curves.values() for n in points})
        lines = {}
        for k in reversed(ks):
            points = curves.get(k, {})
            xs = sorted(points)
            line_width, marker_size = widths[k]
            (lines[k],) = axes.plot(xs, [points[n] for n in xs], marker="o", color=colours[k], linewidth=line_width,
                                    markersize=marker_size, label=f"recall@{k}")  # fmt: skip
        handles = [lines[k] for k in ks]
        (chance,) = axes.plot(sizes, [min(1.0, ks[-1] / n) for n in sizes], label=f"chance, recall@{ks[-1]} (K/N)", **BASELINE)
        handles.append(chance)
        _integer_ticks(axes, sizes)
        axes.set(title=panel, xlabel="concepts in the database (N)", ylim=(0, 1.06))
        axes.grid(alpha=0.3)
    axes_row[0].set_ylabel("recall@K")
    figure.suptitle(title, fontsize=11)
    return _finish(figure, wrapped, under, path, handles)


def precision_recall(
    path: Path,
    recall: Sequence[float],
    precision: Sequence[float],
    *,
    chance: float,
    marks: Mapping[str, tuple[float, float]],
    title: str,
    caption: str,
) -> Path:
    """The curve; ``chance``: the precision of answering at random (the share of positives),
    drawn dashed; ``marks``: named decisions as (recall, precision), at most two."""
    figure, (axes,), wrapped, under = _figure(1, (6.4, 3.8), caption)
    (curve,) = axes.plot(recall, precision, color="C0", label="every threshold")
    (base,) = axes.plot([0, 1], [chance, chance], label=f"chance ({chance:.3f})", **BASELINE)
    handles = [curve, base]
    for (label, (r, p)), (marker, colour) in zip(marks.items(), [("o", "C3"), ("s", "C2")]):
        (mark,) = axes.plot([r], [p], marker=marker, color=colour, linestyle="none", markersize=7, label=label)
        handles.append(mark)
    axes.set(xlabel="recall (positive accuracy)", ylabel="precision", xlim=(0, 1.02), ylim=(0, 1.03), title=title)
    axes.grid(alpha=0.3)
    return _finish(figure, wrapped, under, path, handles)


def per_concept(path: Path, values: Mapping[str, float], ylabel: str, title: str, caption: str) -> Path:
    """A bar per concept, lowest first, beside a dashed line at the mean over concepts."""
    names = sorted(values, key=lambda name: (values[name], name))
    figure, (axes,), wrapped, under = _figure(1, (max(5.0, 0.28 * len(names) + 1.0), 3.6), caption)
    bars = axes.bar(range(len(names)), [values[n] for n in names], color="C0", label=ylabel)
    mean = sum(values.values()) / len(values)
    (line,) = axes.plot([-0.5, len(names) - 0.5], [mean, mean], label=f"mean over concepts ({mean:.3f})", **BASELINE)
    axes.set_xticks(range(len(names)), names, rotation=90, fontsize=7)
    axes.set(ylabel=ylabel, ylim=(0, 1.03), xlim=(-0.6, len(names) - 0.4), title=title)
    axes.grid(alpha=0.3, axis="y")
    return _finish(figure, wrapped, under, path, [bars, line])
