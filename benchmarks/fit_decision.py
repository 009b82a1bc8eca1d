"""Fit the match decision on the tuning set, report it on the reporting set, before and after.

Reads the JSON lines of ``decision_evidence.py``: ``--tune`` files (the
DreamBooth protocol) fit a logistic regression over the evidence of
:mod:`rap.retrieval.match_model` and the probability ``cut`` (the one that
maximises acceptance minus false matches on the tuning set); ``--report``
files (the avatar protocol) are only measured. Per set and N it prints:

* ``recall_at_1`` / ``recall_at_5``: the right concept first / in the top 5 of
  the ranking (the retriever's order; ``recall_at_1_reranked``: ordered by the
  fitted probability instead);
* ``accept``: share of remembered-subject photos whose concept is labelled a match;
* ``false_match``: share of never-remembered subjects' photos with any concept labelled a match;

for today's rule (``before``), the fitted model without verification
(``distance_only``) and with it (``after``). The last line is the fitted model
as ``Settings.match_model`` holds it.

    python benchmarks/fit_decision.py --tune tune.jsonl --report avatar.jsonl

It needs scikit-learn (the ``dev`` extra); the fitted model itself is applied
with plain arithmetic (:class:`rap.retrieval.match_model.MatchModel`).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
from sklearn.linear_model import LogisticRegression

from rap.retrieval.match_model import FEATURES, Evidence, MatchModel, other_distances
from rap.settings import default

VERIFIED = 3  # candidates per photo with verification evidence (decision_evidence.py --verify)


def read(paths: list[Path]) -> list[dict]:
    return [json.loads(line) for path in paths for line in path.read_text().splitlines() if line.strip()]


def evidence(row: dict) -> list[Evidence]:
    candidates = row["candidates"][:VERIFIED]
    others = other_distances([c["distance"] for c in candidates])
    return [Evidence(c["distance"], other, c.get("inliers"), c["region"], row["n"]) for c, other in zip(candidates, others)]


def matrix(rows: list[dict], use: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
    x, y = [], []
    for row in rows:
        for candidate, found in zip(row["candidates"], evidence(row)):
            values = found.vector()
            x.append([values[name] if name in use else 0.0 for name in FEATURES])
            y.append(candidate["name"] == row["truth"])
    return np.array(x), np.array(y)


def fit(rows: list[dict], use: tuple[str, ...], encoder: str, target: float) -> MatchModel:
    x, y = matrix(rows, use)
    model = LogisticRegression(C=1.0, max_iter=2000).fit(x, y)
    weights = dict(zip(FEATURES, model.coef_[0].tolist()))
    draft = MatchModel(weights, float(model.intercept_[0]), 0.5, encoder)
    # the cut: the best acceptance with false matches within the target on the tuning set
    best = max(np.linspace(0.05, 0.95, 91), key=lambda cut: _score(rows, MatchModel(weights, draft.bias, float(cut), encoder), target))
    return MatchModel({k: round(v, 4) for k, v in weights.items()}, round(draft.bias, 4), round(float(best), 2), encoder)


def _score(rows: list[dict], model: MatchModel, target: float) -> tuple[bool, float]:
    figures = measure(rows, lambda row: labelled(row, model))
    return figures["false_match"] <= target, figures["accept"] - (figures["false_match"] if figures["false_match"] > target else 0.0)


def separable(rows: list[dict], scores, target: float) -> float:
    """The best acceptance any one cut on ``scores(row) -> {name: score}`` (higher: more of a match)
    reaches with false matches within ``target``: how well the evidence separates, not an operating point."""
    known = [(r["truth"], scores(r)) for r in rows if r["truth"] is not None]
    strangers = sorted((max(scores(r).values(), default=-np.inf) for r in rows if r["truth"] is None), reverse=True)
    if not known or not strangers:
        return float("nan")
    allowed = int(np.floor(target * len(strangers)))  # strangers that may pass
    cut = strangers[allowed] if allowed < len(strangers) else -np.inf  # accept strictly above it
    return float(np.mean([s.get(truth, -np.inf) > cut for truth, s in known]))


def labelled(row: dict, model: MatchModel) -> list[str]:
    """The names the model labels a match, most probable first."""
    scored = [(model.probability(e), c["name"]) for c, e in zip(row["candidates"], evidence(row))]
    return [name for p, name in sorted(scored, reverse=True) if p >= model.cut]


def measure(rows: list[dict], decide) -> dict[str, float]:
    known = [r for r in rows if r["truth"] is not None]
    strangers = [r for r in rows if r["truth"] is None]
    return {
        "accept": float(np.mean([r["truth"] in decide(r) for r in known])) if known else float("nan"),
        "false_match": float(np.mean([bool(decide(r)) for r in strangers])) if strangers else float("nan"),
    }


def ranking(rows: list[dict], model: MatchModel) -> dict[str, float]:
    known = [r for r in rows if r["truth"] is not None]
    reranked = []
    for r in known:
        scored = sorted(((model.probability(e), c["name"]) for c, e in zip(r["candidates"], evidence(r))), reverse=True)
        reranked.append(bool(scored) and scored[0][1] == r["truth"])
    return {
        "recall_at_1": float(np.mean([r["candidates"][:1] and r["candidates"][0]["name"] == r["truth"] for r in known])),
        "recall_at_5": float(np.mean([r["truth"] in [c["name"] for c in r["candidates"][:5]] for r in known])),
        "recall_at_1_reranked": float(np.mean(reranked)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tune", type=Path, nargs="+", required=True)
    parser.add_argument("--report", type=Path, nargs="*", default=[])
    parser.add_argument("--encoder", default=default("encoder"))
    parser.add_argument("--target", type=float, default=0.15, help="false-match rate the cut keeps within on the tuning set")
    args = parser.parse_args()
    tune, report = read(args.tune), read(args.report)
    models = {
        "distance_only": fit(tune, ("distance", "ratio", "whole_image", "log_concepts"), args.encoder, args.target),
        "after": fit(tune, FEATURES, args.encoder, args.target),
    }
    for name, rows in (("tuning", tune), ("reporting", report)):
        by_n: dict[int, list[dict]] = defaultdict(list)
        for row in rows:
            by_n[row["n"]].append(row)
        for n, part in sorted(by_n.items()):
            line = {"set": name, "n": n, "queries": sum(r["truth"] is not None for r in part), "strangers": sum(r["truth"] is None for r in part)}
            line |= {k: round(v, 3) for k, v in ranking(part, models["after"]).items()}
            line |= {f"before_{k}": round(v, 3) for k, v in measure(part, lambda r: r["decided"]).items()}
            for label, model in models.items():
                line |= {f"{label}_{k}": round(v, 3) for k, v in measure(part, lambda r, m=model: labelled(r, m)).items()}
            top_distance = lambda r: {c["name"]: -c["distance"] for c in r["candidates"][:1]}  # noqa: E731
            line["separable_top_distance"] = round(separable(part, top_distance, args.target), 3)
            for label, model in models.items():
                probabilities = lambda r, m=model: {c["name"]: m.probability(e) for c, e in zip(r["candidates"], evidence(r))}  # noqa: E731
                line[f"separable_{label}"] = round(separable(part, probabilities, args.target), 3)
            line["verify_cpu_ms_p50"] = float(np.median([r["verify_cpu_ms"] for r in part]))
            line["retrieve_cpu_ms_p50"] = float(np.median([r["retrieve_cpu_ms"] for r in part]))
            print(json.dumps(line), flush=True)
    for label, model in models.items():
        print(json.dumps({"model": label, "weights": dict(model.weights), "bias": model.bias, "cut": model.cut, "encoder": model.encoder}))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
