"""``rap eval retrieval|recognition|caption|qa DATA``: the paper's benchmarks, resumable."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.markdown import Markdown

from rap.cli.context import print_json, progress_bar, state, stdout
from rap.cli.options import field_default
from rap.errors import InvalidInput
from rap.evaluation.session import EvalRequest

MODES = {"retriever": ("retriever",), "model": ("model",), "both": ("retriever", "model")}
"""``--mode``: the recognition modes each name runs."""
_MODE_NAMES = {modes: name for name, modes in MODES.items()}


def eval_command(
    ctx: typer.Context,
    task: str = typer.Argument(..., help="retrieval, recognition, caption or qa."),
    data: Path = typer.Argument(..., help="The data: a QA or recognition JSON file, a folder per concept (MyVLM, DreamBooth) or a JSONL manifest."),
    out: Path | None = typer.Option(None, "--out", "-o", help="Output folder; run again with the same folder to resume (default ./rap-eval-TASK)."),
    images_root: Path | None = typer.Option(None, "--images-root", help="Where the data's relative image paths really live."),
    database: Path | None = typer.Option(None, "--database", help="The concepts (a RAP database.json folder or a plain folder), for data without them."),
    repeats: int = typer.Option(field_default(EvalRequest, "repeats"), "--repeats", min=1, max=20, help="Runs with different reference images (seeds seed, seed+1, ...); the paper uses 3."),
    seed: int | None = typer.Option(None, "--seed", help="Seed for choosing reference photos; unset: the data's own first photos for the first repeat, seeds 1, 2, ... after."),
    ks: str = typer.Option(",".join(map(str, field_default(EvalRequest, "ks"))), "--ks", help="Retrieval: the K of recall@K, comma-separated."),
    distractors: Path | None = typer.Option(None, "--distractors", help="Retrieval: a folder of photos, each added as a distractor concept."),
    sizes: str = typer.Option("", "--sizes", help="Retrieval: database sizes N to measure at, e.g. 30,100,500 (needs --distractors)."),
    mode: str = typer.Option(_MODE_NAMES[field_default(EvalRequest, "recognition_modes")], "--mode", help="Recognition: retriever, model or both."),
    baselines: bool = typer.Option(field_default(EvalRequest, "baselines"), "--baselines/--no-baselines", help="Caption and QA: also run without retrieval and with whole-image retrieval."),
    k: int | None = typer.Option(None, "-k", "--top-k", min=1, max=100, help="Concepts to retrieve."),
    backend: str | None = typer.Option(None, "--backend", "-b", help="Generation backend."),
    model: str | None = typer.Option(None, "--model", "-m", help="Model for the backend."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
) -> None:
    """Evaluate with the paper's definitions; writes results JSON, a Markdown report and PNG plots."""
    from rap.evaluation.session import evaluate

    if task not in ("retrieval", "recognition", "caption", "qa"):
        raise InvalidInput(f"unknown task {task!r}; choose retrieval, recognition, caption or qa")
    if mode not in MODES:
        raise InvalidInput(f"--mode must be retriever, model or both, not {mode!r}")
    settings = state(ctx).resolved.settings
    overrides = {"top_k": k, "generator": backend, "model": model}
    settings = settings.model_copy(update={key: v for key, v in overrides.items() if v is not None})
    request = EvalRequest(
        task=task,  # type: ignore[arg-type]
        data=data,
        out=out or Path(f"rap-eval-{task}"),
        images_root=images_root,
        database=database,
        repeats=repeats,
        seed=seed,
        ks=_ints(ks, "--ks"),
        distractors=distractors,
        sizes=_ints(sizes, "--sizes") if sizes else (),
        recognition_modes=MODES[mode],
        baselines=baselines,
    )
    summary = evaluate(request, settings, progress_bar)
    if as_json:
        print_json(summary)
    else:
        stdout.print(Markdown((request.out / "report.md").read_text(encoding="utf-8")))


def _ints(text: str, option: str) -> tuple[int, ...]:
    try:
        values = tuple(sorted({int(part) for part in text.split(",") if part.strip()}))
    except ValueError:
        raise InvalidInput(f"{option} takes whole numbers separated by commas, not {text!r}") from None
    if not values or min(values) < 1:
        raise InvalidInput(f"{option} needs positive whole numbers")
    return values
