"""``rap data build`` and ``rap data stats``: personalization training sets."""

from __future__ import annotations

from pathlib import Path

import typer

from rap.cli.context import print_json, state, stdout
from rap.cli.options import field_option
from rap.data.build import BuildConfig

app = typer.Typer(help="Build and inspect personalization training sets.", no_args_is_help=True)


@app.command("build")
def build(
    ctx: typer.Context,
    sources: list[str] = typer.Argument(..., help="KIND:PATH[,images=DIR][,instances=FILE][,name=LABEL]; KIND: coco, refcoco, video, identities, folders."),
    out: Path = typer.Option(..., "--out", "-o", help="A new folder for data.jsonl, crops/ and manifest.json."),
    annotator: str | None = typer.Option(None, "--annotator", help="Who writes descriptions and answers: offline (the default; templates from class names) or generator:<backend spec>, e.g. generator:openai:gpt-4o."),
    names: str = field_option(BuildConfig, "names", "--names", help="random (pronounceable) or sks (<sks1>, <sks2>, ...)."),
    noise_ratio: float = field_option(BuildConfig, "noise_ratio", "--noise-ratio"),
    noise_k: int = field_option(BuildConfig, "noise_k", "--noise-k"),
    general: Path | None = field_option(BuildConfig, "general", "--general"),
    general_fraction: float = field_option(BuildConfig, "general_fraction", "--general-fraction"),
    workers: int = field_option(BuildConfig, "workers", "--workers"),
    limit: int | None = field_option(BuildConfig, "limit", "--limit"),
    seed: int = field_option(BuildConfig, "seed", "--seed"),
    calls_per_minute: float | None = typer.Option(None, "--calls-per-minute", help="Calls per minute a generator annotator makes at most; default: the annotator's own."),
    price: float | None = typer.Option(None, "--price-per-1k-tokens", help="For the cost report of a generator annotator."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing output folder."),
    as_json: bool = typer.Option(False, "--json", help="Print the manifest as JSON."),
) -> None:
    """Build training conversations (the paper's section 3.2) from annotated images."""
    from rap.data import build_dataset, create_annotator, open_source
    from rap.data.annotator import DEFAULT_ANNOTATOR
    from rap.generation.base import validated_options

    options = dict(names=names, noise_ratio=noise_ratio, noise_k=noise_k, general=general,
                   general_fraction=general_fraction, workers=workers, limit=limit, seed=seed)  # fmt: skip
    config = validated_options(BuildConfig, options, "data build")
    specs = [open_source(source) for source in sources]
    given = {"calls_per_minute": calls_per_minute, "price_per_1k_tokens": price}
    cache = state(ctx).resolved.settings.home / "cache" / "annotator"
    chosen = create_annotator(annotator or DEFAULT_ANNOTATOR, cache, **{k: v for k, v in given.items() if v is not None})
    report = build_dataset(specs, out, chosen, config, overwrite=overwrite)
    if as_json:
        print_json(report.manifest())
    else:
        stdout.print(
            f"built {report.samples} samples in {out} ({report.samples_per_second:.0f}/s); "
            f"tasks: {dict(report.tasks)}; skipped: {dict(report.skipped) or 'none'}"
        )


@app.command("stats")
def stats(path: Path = typer.Argument(..., help="A folder written by rap data build (or its data.jsonl)."), as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Counts per task and source, concepts per sample, noise share, missing crops."""
    from rap.data import dataset_stats

    summary = dataset_stats(path)
    if as_json:
        print_json(summary)
        return
    for key, value in summary.items():
        stdout.print(f"[bold]{key}[/bold]: {value}")
