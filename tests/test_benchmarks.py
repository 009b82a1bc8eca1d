"""Every script in benchmarks/ runs, at toy sizes, and prints the JSON lines BENCHMARKS.md is written from.

The figures mean nothing at these sizes; what is checked is that the scripts
still work with the code they measure, so that a GPU session can run them as
they stand.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARK_S = 900
"""The longest a toy-size run may take: 6 minutes measured for the slowest (generation_latency-qwen) on 2 cores at load 15."""

pytestmark = [pytest.mark.slow, pytest.mark.timeout(BENCHMARK_S + 120)]  # each case starts a Python process that imports torch

ROOT = Path(__file__).resolve().parents[1]
PHOTOS = Path(__file__).parent / "photos"


def dreambooth_layout(root: Path) -> Path:
    """A three-subject folder laid out as the DreamBooth dataset is."""
    for subject in ("dog", "cat", "teapot"):
        (root / subject).mkdir(parents=True)
        for n in range(2):
            shutil.copy(PHOTOS / f"{subject}_0{n}.jpg", root / subject / f"0{n}.jpg")
    (root / "prompts_and_classes.txt").write_text("dog,dog\ncat,cat\nteapot,teapot\n")
    return root


def six_subjects(root: Path) -> Path:
    """Six subjects of three photos each, drawn in turn from the test photos (for the calibration hold-out)."""
    pool = sorted(PHOTOS.glob("*.jpg"))
    for n, subject in enumerate(("a", "b", "c", "d", "e", "f")):
        (root / subject).mkdir(parents=True)
        for k in range(3):
            shutil.copy(pool[(3 * n + k) % len(pool)], root / subject / f"0{k}.jpg")
    (root / "prompts_and_classes.txt").write_text("".join(f"{s},thing\n" for s in "abcdef"))
    return root


CASES = {
    "generation_latency": (["--size", "tiny", "--repeats", "1", "--new-tokens", "3", "--static-cache"], "ttft_ms"),
    "generation_latency-qwen": (["--arch", "qwen2.5-vl", "--size", "tiny", "--repeats", "1", "--new-tokens", "3"], "decode_tokens_per_s"),
    "train_throughput": (["--size", "tiny", "--steps", "1", "--warmup", "1", "--batch-size", "2"], "samples_per_s"),
    "search_scaling": (["--sizes", "300", "--dim", "32", "--queries", "20"], "p50_ms"),
    "pgvector_search": (["--sizes", "2000", "--dim", "32", "--queries", "20", "--url", "{postgres}"], "recall_at_5_vs_exact"),
    "store_ops": ([str(PHOTOS), "--singles", "2"], "add_one_median_ms"),
    "store_digests": (["--vectors", "20", "--dim", "32", "--repeats", "1"], "verify_all_rows_ms"),
    "dreambooth_retrieval": (["{dreambooth}"], "recall_at_1"),
    "photo_retrieval_speed": (["{dreambooth}", "--single", "2", "--batch", "2"], "single_p50_ms"),
    "retrieve_memory": (["{dreambooth}", "--counts", "1,3", "--concepts", "2", "--detector", "none"], "peak_rss_mb"),
    "serve_load": ([str(PHOTOS), "--clients", "4", "--seconds", "2", "--seed", "2", "--max-new-tokens", "2"], "requests_per_s"),
    "serve_load-postgres": ([str(PHOTOS), "--clients", "4", "--seconds", "2", "--seed", "2", "--max-new-tokens", "2", "--store-url", "pgserver"], "requests_per_s"),
    "hard_retrieval": (["{dreambooth}", "--sizes", "1,3", "--per-photo", "2", "--rotations", "1"], "false_match"),
    "calibration_holdout": (["{six}", "--rotation", "0", "--min-photos", "1"], "acceptance"),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(CASES))
def test_benchmark_runs_and_reports(case: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    arguments, key = CASES[case]
    if "{postgres}" in arguments:  # the session's test server (rap.store.postgres_server)
        arguments = [request.getfixturevalue("postgres_url") if a == "{postgres}" else a for a in arguments]
    if "{dreambooth}" in arguments:
        arguments = [str(dreambooth_layout(tmp_path / "dreambooth")) if a == "{dreambooth}" else a for a in arguments]
    if "{six}" in arguments:
        arguments = [str(six_subjects(tmp_path / "six")) if a == "{six}" else a for a in arguments]
    script = ROOT / "benchmarks" / f"{case.split('-')[0]}.py"
    done = subprocess.run([sys.executable, str(script), *arguments], capture_output=True, text=True, timeout=BENCHMARK_S)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    figures = [row for row in rows if "check" not in row]
    assert figures and all(key in row for row in figures), done.stdout[-2000:]
    assert all(row["same"] for row in rows if "check" in row), done.stdout[-2000:]
