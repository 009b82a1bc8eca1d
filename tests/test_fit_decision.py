"""benchmarks/fit_decision.py fits on the tuning lines only and reports every set, on synthetic evidence."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _lines(path: Path, seed: int, known_distance: float) -> None:
    """Evidence lines as decision_evidence.py writes them: half remembered-subject photos, half strangers'."""
    rng = random.Random(seed)
    rows = []
    for i in range(60):
        truth = "a" if i % 2 == 0 else None
        first = ("a", known_distance if truth else 0.9) if rng.random() < 0.9 else ("b", 0.85)
        candidates = [
            {"name": first[0], "distance": first[1] + rng.uniform(-0.05, 0.05), "region": "detector", "inliers": rng.choice([1, 2, 30]) if truth and first[0] == "a" else 2},
            {"name": "c", "distance": 0.95, "region": "image", "inliers": 1},
            {"name": "d", "distance": 0.97, "region": "detector", "inliers": 0},
        ]
        rows.append({"n": 30, "truth": truth, "decided": [first[0]] if first[1] < 0.8 else [], "candidates": candidates, "verify_cpu_ms": 5.0, "retrieve_cpu_ms": 50.0})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_fit_decision_reports_both_sets_and_prints_a_model_settings_can_hold(tmp_path: Path) -> None:
    from rap.retrieval.match_model import MatchModel

    _lines(tmp_path / "tune.jsonl", 1, 0.6)
    _lines(tmp_path / "report.jsonl", 2, 0.75)
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "fit_decision.py"), "--tune", str(tmp_path / "tune.jsonl"), "--report", str(tmp_path / "report.jsonl")],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    sets = [line for line in lines if "set" in line]
    assert [(s["set"], s["n"]) for s in sets] == [("tuning", 30), ("reporting", 30)]
    assert all(0 <= s["after_accept"] <= 1 and 0 <= s["after_false_match"] <= 1 for s in sets)
    models = {line["model"]: line for line in lines if "model" in line}
    assert set(models) == {"distance_only", "after"}
    fitted = MatchModel.from_mapping(models["after"])
    assert fitted.weights["distance"] < 0 and models["distance_only"]["weights"]["inliers"] == 0
