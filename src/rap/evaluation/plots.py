"""The PNG plots of a run: recall@K against database size, the recognition
precision-recall curve, per-concept bars. matplotlib (the ``eval`` extra) draws
them off-screen."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path


def _pyplot():
    from rap._imports import require

    matplotlib = require("matplotlib", "eval")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def recall_vs_size(path: Path, curves: Mapping[str, Mapping[int, float]], title: str) -> Path:
    """``curves``: label -> {database size N: recall}."""
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(6, 4))
    for label, points in curves.items():
        sizes = sorted(points)
        axes.plot(sizes, [points[n] for n in sizes], marker="o", label=label)
    axes.set(xlabel="concepts in the database (N)", ylabel="recall", ylim=(0, 1.02), title=title)
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


def precision_recall(path: Path, recall: Sequence[float], precision: Sequence[float], title: str) -> Path:
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(5, 4))
    axes.plot(recall, precision, marker=".")
    axes.set(xlabel="recall", ylabel="precision", xlim=(0, 1.02), ylim=(0, 1.02), title=title)
    axes.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


def per_concept(path: Path, values: Mapping[str, float], ylabel: str, title: str) -> Path:
    plt = _pyplot()
    names = sorted(values)
    figure, axes = plt.subplots(figsize=(max(5, 0.3 * len(names)), 4))
    axes.bar(range(len(names)), [values[n] for n in names])
    axes.set_xticks(range(len(names)), names, rotation=90, fontsize=7)
    axes.set(ylabel=ylabel, ylim=(0, 1.02), title=title)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path
