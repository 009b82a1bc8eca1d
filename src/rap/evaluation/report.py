"""Summaries, the Markdown report and the plots of a ``rap eval`` run.

Every number is computed by :mod:`rap.evaluation.metrics` from the per-item
results in the journal, per repeat; repeats are then reduced to mean and
spread (population standard deviation), as the paper reports the average of
three runs with different reference images.
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Callable
from typing import Any

from rap.answers import parse_choice
from rap.evaluation import metrics, plots
from rap.evaluation.journal import Journal
from rap.evaluation.runner import EvalConfig, RepeatOutcome, _variants


def _spread(values: list[float | None]) -> dict[str, float | None]:
    present = [v for v in values if v is not None and not math.isnan(v)]
    if not present:
        return {"mean": None, "std": None}
    mean, std = metrics.mean_and_spread(present)
    return {"mean": round(mean, 4), "std": round(std, 4)}


def _per_repeat(config: EvalConfig, journal: Journal, variant: str, score: Callable[[list[dict[str, Any]]], dict[str, float | None]]) -> dict[str, Any]:
    runs = [score(journal.select(repeat, variant)) for repeat in range(config.repeats)]
    keys = runs[0].keys() if runs else []
    return {key: _spread([run[key] for run in runs]) for key in keys}


def _retrieval(config: EvalConfig) -> Callable[[list[dict[str, Any]]], dict[str, float | None]]:
    def score(rows: list[dict[str, Any]]) -> dict[str, float | None]:
        ranked = [(r["retrieved"], r["truth"]) for r in rows if r["truth"]]
        recalls: dict[int, float | None] = dict(metrics.recall_at_k(ranked, config.ks)) if ranked else dict.fromkeys(config.ks)
        decided = [(r["matched"], r["truth"]) for r in rows if "matched" in r]  # rows of an older run have no labels
        acceptance, false = metrics.acceptance_and_false_matches(decided) if decided else (None, None)
        return {f"recall@{k}": v for k, v in recalls.items()} | {"acceptance": acceptance, "false matches": false, "n": float(rows[0]["n"]) if rows else None}

    return score


def _recognition(rows: list[dict[str, Any]]) -> dict[str, float | None]:
    report = metrics.recognition_accuracy(metrics.RecognitionResult(r["id"], bool(r["truth"]), r["present"]) for r in rows)
    return {"positive": report.positive.value, "negative": report.negative.value, "weighted": report.weighted}


def _caption(names: list[str]) -> Callable[[list[dict[str, Any]]], dict[str, float | None]]:
    def score(rows: list[dict[str, Any]]) -> dict[str, float | None]:
        overall = metrics.caption_scores([(r["id"], r["reply"], r["truth"]) for r in rows], names).overall
        return {"recall": overall.recall, "precision": overall.precision, "f1": overall.f1}

    return score


def _qa(rows: list[dict[str, Any]]) -> dict[str, float | None]:
    report = metrics.qa_accuracy(
        metrics.QAResult(r["id"], r["qa_kind"], parse_choice(r["reply"], r["options"] or {}), str(r["truth"])) for r in rows
    )
    return {"visual": report.visual.value, "text": report.text.value, "weighted": report.weighted}


def summarise(config: EvalConfig, journal: Journal, outcomes: list[RepeatOutcome]) -> dict[str, Any]:
    names = sorted({name for outcome in outcomes for name in outcome.concepts})
    scorer = {
        "retrieval": _retrieval(config),
        "recognition": _recognition,
        "caption": _caption(names),
        "qa": _qa,
    }[config.task]
    adds = [s for outcome in outcomes for s in outcome.add_seconds]
    summary: dict[str, Any] = {
        "task": config.task,
        "repeats": config.repeats,
        "concepts": len(names),
        "items": len({row["id"] for row in journal.select()}),
        "variants": {variant: _per_repeat(config, journal, variant, scorer) for variant in _variants(config)},
        "seconds_to_add_a_concept": {"median": round(statistics.median(adds), 4), "n": len(adds)} if adds else None,
    }
    if config.task == "recognition":
        rows = [r for r in journal.select(variant="retriever") if r["score"] is not None]
        if rows and len({bool(r["truth"]) for r in rows}) == 2:
            scores, labels = [r["score"] for r in rows], [bool(r["truth"]) for r in rows]
            summary["retriever_curve"] = {
                "questions": len(labels),
                "positives": sum(labels),
                "best": metrics.best_threshold(scores, labels).to_dict(),
                "average_precision": metrics.average_precision(scores, labels),
                "points": [p.to_dict() for p in metrics.precision_recall_curve(scores, labels)],
            }
    if config.task == "retrieval":
        last = _variants(config)[-1]  # both whole image and crops, at the largest size
        hits: dict[str, list[bool]] = {}
        for row in journal.select(variant=last):
            for name in row["truth"]:
                hits.setdefault(name, []).append(row["retrieved"][:1] == [name])
        summary["per_concept_recall_at_1"] = {name: sum(h) / len(h) for name, h in hits.items()}
        points = {row["variant"]: row["operating_point"] for row in journal.select() if "operating_point" in row}
        summary["operating_points"] = points
    if config.task == "caption":
        rows = journal.select(variant="rap")
        per_concept = metrics.caption_scores([(r["id"], r["reply"], r["truth"]) for r in rows], names).per_concept
        summary["per_concept_recall"] = {name: t.recall for name, t in per_concept.items() if t.recall is not None}
    return summary


def _table(summary: dict[str, Any]) -> str:
    variants = summary["variants"]
    columns = sorted({key for scores in variants.values() for key in scores}, key=lambda k: (k == "n", k))
    lines = ["| variant | " + " | ".join(columns) + " |", "| --- |" + " --- |" * len(columns)]
    for variant, scores in variants.items():
        cells = []
        for column in columns:
            value = scores.get(column, {})
            mean, std = value.get("mean"), value.get("std")
            if mean is None:
                cells.append("-")
                continue
            shown = f"{mean:.0f}" if column == "n" else f"{mean:.3f}"
            cells.append(shown + (f" ± {std:.3f}" if summary["repeats"] > 1 and column != "n" else ""))
        lines.append(f"| {variant} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_report(config: EvalConfig, meta: dict[str, Any], journal: Journal, summary: dict[str, Any]) -> None:
    out = config.out
    results = {"config": meta, "summary": summary, "items": journal.select()}
    (out / "results.json").write_text(json.dumps(results, indent=2, default=str, ensure_ascii=False), encoding="utf-8")
    figures = _plots(config, summary)
    settings = meta["settings"]
    adds = summary["seconds_to_add_a_concept"]
    lines = [
        f"# rap eval {config.task}",
        "",
        f"{summary['concepts']} concepts, {summary['items']} items, {config.repeats} repeat(s); reference photos: "
        + ("the data's own first photos" + (f", then seeds 1 to {config.repeats - 1}" if config.repeats > 1 else "") if config.seed is None else f"drawn with seeds {config.seed} to {config.seed + config.repeats - 1}")
        + ". "
        f"Encoder `{settings['encoder']}`, detector `{settings['detector']}`"
        + (f", generator `{settings['generator']}`" + (f" (model `{settings['model']}`)" if settings["model"] else "") if config.task in ("caption", "qa") or "model" in config.recognition_modes else "")
        + f", top-K {settings['top_k']}. Machine: {meta['machine']['processor']}, {meta['machine']['cpus']} CPUs"
        + (f", {meta['machine']['gpu']}" if "gpu" in meta["machine"] else "")
        + ".",
        "",
        _table(summary),
        "",
    ]
    if summary.get("operating_points"):
        shown = "; ".join(f"{variant}: {point}" for variant, point in summary["operating_points"].items())
        lines += [f"Acceptance: the share of true concepts labelled a match; false matches: the share of photos of none of the concepts with any labelled a match. Operating point in force: {shown}.", ""]
    if adds:
        lines += [f"Adding a concept took {1000 * adds['median']:.0f} ms (median of {adds['n']}).", ""]
    if "retriever_curve" in summary:
        best = summary["retriever_curve"]["best"]
        lines += [
            f"Retriever-only decision: best threshold {best['threshold']:.3f} gives positive accuracy "
            f"{best['positive_accuracy']:.3f}, negative accuracy {best['negative_accuracy']:.3f}; "
            f"average precision {summary['retriever_curve']['average_precision']:.3f}.",
            "",
        ]
    lines += [f"![{name}]({name})" for name in figures]
    (out / "report.md").write_text("\n".join(lines) + "\n", encoding="utf-8")


QUERY_MODES = {"image": "whole photo", "regions": "detector regions", "both": "whole photo and regions"}
"""The retrieval variants' query modes, as a plot's panels name them."""


def _measured_with(config: EvalConfig, summary: dict[str, Any]) -> str:
    """The end of a caption: the models, and the repeats a value is the mean of."""
    settings = config.settings
    repeats = f"; each value the mean of {summary['repeats']} repeats" if summary["repeats"] > 1 else ""
    return f"Encoder {settings.encoder}, detector {settings.detector}{repeats}."


def _plots(config: EvalConfig, summary: dict[str, Any]) -> list[str]:
    """Draw what the task has to show, each plot with a caption saying what was measured; return the file names."""
    out, drawn = config.out, []
    models = _measured_with(config, summary)
    if config.task == "retrieval" and config.sizes:
        panels: dict[str, dict[int, dict[int, float]]] = {}
        for variant, scores in summary["variants"].items():
            mode, _, size = variant.partition("@")
            for k in plots.drawn_ks(config.ks):
                value = scores.get(f"recall@{k}", {}).get("mean")
                if value is not None:
                    panels.setdefault(QUERY_MODES.get(mode, mode), {}).setdefault(k, {})[int(size)] = value
        caption = (
            f"Recall@K: the share of {summary['items']} query photos of {summary['concepts']} concepts whose concept is "
            f"among the K retrieved first, as distractor concepts grow the database to N. One panel per query: the "
            f"whole photo, the detector's regions, or both. Dashed: chance, K/N. {models}"
        )
        drawn.append(plots.recall_vs_size(out / "recall_vs_n.png", panels, "Retrieval recall@K against database size", caption).name)
    if "retriever_curve" in summary:
        curve = summary["retriever_curve"]
        points, best = curve["points"], curve["best"]
        calibrated = max((p for p in points if p["threshold"] <= 1.0), key=lambda p: p["threshold"], default=None)
        marks = {f"best here (score \u2264 {best['threshold']:.3f})": (best["recall"], best["precision"])}
        if calibrated is not None:
            marks = {"calibrated (score \u2264 1)": (calibrated["recall"], calibrated["precision"])} | marks
        caption = (
            f"Is the concept in the photo? {curve['questions']} questions, {curve['positives']} of them about a concept "
            "that is there, answered by the retriever alone: yes when the concept's best-matching region scores at or "
            "under a threshold (score: distance over the encoder's calibrated threshold); a point per threshold. "
            f"The best threshold is fitted on these same questions. Dashed: chance, the share of yes questions. {models}"
        )
        path = plots.precision_recall(
            out / "recognition_pr.png", [p["recall"] for p in points], [p["precision"] for p in points],
            chance=curve["positives"] / curve["questions"], marks=marks,
            title="Recognition by the retriever's score", caption=caption,
        )  # fmt: skip
        drawn.append(path.name)
    if summary.get("per_concept_recall_at_1"):
        largest = f" at N = {max(config.sizes)}" if config.sizes else ""
        caption = (
            "Recall@1 of each concept: the share of its query photos for which it is the concept retrieved first, "
            f"querying the whole photo and its regions together{largest}. Dashed: the mean over concepts. {models}"
        )
        drawn.append(plots.per_concept(out / "retrieval_recall_at_1_per_concept.png", summary["per_concept_recall_at_1"], "recall@1", "Retrieval recall@1 per concept", caption).name)
    if summary.get("per_concept_recall"):
        caption = (
            "Caption recall of each concept: the share of captions of photos showing it that name it, with retrieval "
            f"as configured. Dashed: the mean over concepts. {models}"
        )
        drawn.append(plots.per_concept(out / "caption_recall_per_concept.png", summary["per_concept_recall"], "recall", "Caption recall per concept", caption).name)
    return drawn
