"""One ``rap eval`` invocation: read, check, run (resumably), summarise, report.

The output folder holds ``config.json`` (what was asked, with versions and the
machine), ``items.jsonl`` (every per-item result, written as it finishes),
``results.json`` (configuration, per-item results and summary), ``report.md``
and the PNG plots. Running the same request into the same folder resumes it; a
different request into a used folder is refused rather than mixed.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from rap.concepts import DEFAULT_CATEGORY
from rap.errors import InvalidInput
from rap.evaluation import environment
from rap.evaluation.datasets import read_eval_set
from rap.evaluation.items import Task
from rap.evaluation.report import summarise, write_report
from rap.evaluation.runner import EvalConfig, ProgressFactory, run
from rap.redact import redact
from rap.settings import Settings
from rap.store.inputs import NewConcept
from rap.images import IMAGE_SUFFIXES


@dataclass(frozen=True)
class EvalRequest:
    task: Task
    data: Path
    out: Path
    images_root: Path | None = None
    database: Path | None = None
    repeats: int = 1
    seed: int | None = None
    ks: tuple[int, ...] = (1, 2, 5)
    distractors: Path | None = None
    sizes: tuple[int, ...] = ()
    recognition_modes: tuple[str, ...] = ("retriever",)
    baselines: bool = True


def _fingerprint(request: EvalRequest, settings: Settings) -> dict[str, Any]:
    keep = ("encoder", "faces", "detector", "generator", "model", "generator_options", "top_k", "per_region_k", "threshold", "max_new_tokens", "temperature")
    return {
        "request": json.loads(json.dumps(asdict(request), default=str)),
        "settings": redact({key: getattr(settings, key) for key in keep}),  # config.json and results.json hold no secret
    }


def _check_resume(out: Path, fingerprint: dict[str, Any]) -> None:
    config_file = out / "config.json"
    if config_file.exists():
        previous = json.loads(config_file.read_text(encoding="utf-8"))
        if {k: previous.get(k) for k in fingerprint} != json.loads(json.dumps(fingerprint, default=str)):
            raise InvalidInput(f"{out} holds a run with other settings; choose a new --out, or repeat that run's options to resume it")
    out.mkdir(parents=True, exist_ok=True)
    config_file.write_text(json.dumps(fingerprint | environment.describe(), indent=2, default=str), encoding="utf-8")


def _distractors(folder: Path | None) -> list[NewConcept]:
    if folder is None:
        return []
    if not folder.is_dir():
        raise InvalidInput(f"--distractors {folder}: no such folder")
    photos = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    return [NewConcept(f"distractor-{n:05d}", [photo], category=photo.parent.name or DEFAULT_CATEGORY) for n, photo in enumerate(photos)]


def evaluate(request: EvalRequest, settings: Settings, progress: ProgressFactory) -> dict[str, Any]:
    """Run the request and write its outputs; return the summary."""
    if request.sizes and request.distractors is None:
        raise InvalidInput("--sizes needs --distractors: a folder of photos to grow the database with")
    fingerprint = _fingerprint(request, settings)
    _check_resume(request.out, fingerprint)
    config = EvalConfig(
        task=request.task,
        out=request.out,
        settings=settings,
        repeats=request.repeats,
        seed=request.seed,
        ks=request.ks,
        baselines=request.baselines,
        recognition_modes=request.recognition_modes,
        distractors=_distractors(request.distractors),
        sizes=request.sizes,
    )

    def read(repeat: int):
        """Repeat 0 keeps the data's own reference photos unless a seed is given; later repeats draw others."""
        seed = None if request.seed is None and repeat == 0 else (request.seed or 0) + repeat
        return read_eval_set(request.data, task=request.task, images_root=request.images_root, database=request.database, seed=seed)

    journal, outcomes = run(config, read, progress)
    summary = summarise(config, journal, outcomes)
    write_report(config, fingerprint | environment.describe(), journal, summary)
    return summary
