"""``rap train`` (LoRA fine-tuning) and ``rap train merge``."""

from __future__ import annotations

import contextlib
import json
import os
import sys
from pathlib import Path

import typer

from rap.cli.context import print_json, stdout
from rap.cli.options import field_option
from rap.training.trainer import TrainOptions

app = typer.Typer(
    help="Fine-tune a backend with LoRA on personalization data, and merge the adapter.",
    invoke_without_command=True,
)


@app.callback()
def train(
    ctx: typer.Context,
    base: str | None = typer.Option(None, "--base", help="The model to fine-tune: a LLaVA (llava-hf) or Qwen2-VL / Qwen2.5-VL folder or hub name."),
    data: Path | None = typer.Option(None, "--data", help="data.jsonl from rap data build (LLaVA format, RAP-260K 'extra')."),
    out: Path | None = typer.Option(None, "--out", "-o", help="Folder for checkpoints, TensorBoard logs and the adapter."),
    rank: int = field_option(TrainOptions, "rank", "--rank"),
    alpha: int = field_option(TrainOptions, "alpha", "--alpha"),
    dropout: float = field_option(TrainOptions, "dropout", "--dropout"),
    learning_rate: float = field_option(TrainOptions, "learning_rate", "--lr"),
    epochs: float = field_option(TrainOptions, "epochs", "--epochs"),
    max_steps: int | None = field_option(TrainOptions, "max_steps", "--max-steps"),
    batch_size: int = field_option(TrainOptions, "batch_size", "--batch-size"),
    accumulation: int = field_option(TrainOptions, "gradient_accumulation", "--gradient-accumulation"),
    max_concepts: int | None = field_option(TrainOptions, "max_concepts", "--max-concepts"),
    precision: str = field_option(TrainOptions, "precision", "--precision", help="auto (bf16 where CUDA supports it), bf16 or fp32."),
    checkpointing: bool = field_option(TrainOptions, "activation_checkpointing", "--gradient-checkpointing"),
    workers: int = field_option(TrainOptions, "workers", "--workers"),
    resume: bool = typer.Option(False, "--resume", help="Continue from the latest checkpoint in --out."),
    fsdp: str | None = field_option(TrainOptions, "fsdp", "--fsdp"),
    deepspeed: str | None = field_option(TrainOptions, "deepspeed", "--deepspeed"),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Train a LoRA adapter; for several GPUs run it under `accelerate launch` or torchrun."""
    if ctx.invoked_subcommand is not None:
        return
    if base is None or data is None or out is None:
        stdout.print(ctx.get_help())
        raise typer.Exit(2)
    from rap.generation.base import validated_options
    from rap.training import train as run_training

    options = validated_options(
        TrainOptions,
        dict(rank=rank, alpha=alpha, dropout=dropout, learning_rate=learning_rate, epochs=epochs, max_steps=max_steps,
             batch_size=batch_size, gradient_accumulation=accumulation, max_concepts=max_concepts,
             precision=precision, activation_checkpointing=checkpointing, workers=workers, fsdp=fsdp,
             deepspeed=deepspeed),
        "train",
    )  # fmt: skip
    with contextlib.redirect_stdout(sys.stderr):  # the trainer's log lines must not mix with --json output
        result = run_training(base, data, out, options, resume=resume)
    summary = {"adapter": str(result.adapter_dir), "steps": result.steps, "records": result.records,
               "skipped": dict(result.skipped), "first_loss": result.losses[0] if result.losses else None,
               "last_loss": result.losses[-1] if result.losses else None,
               "seconds": round(result.seconds, 1), "samples_per_second": round(result.samples_per_second, 2)}  # fmt: skip
    if int(os.environ.get("RANK", "0")) != 0:  # under torchrun / accelerate launch, the main process reports
        return
    if as_json:
        print_json(summary)
    else:
        stdout.print(
            f"trained {result.steps} steps on {result.records} conversations in {result.seconds:.0f} s "
            f"({result.samples_per_second:.2f} conversations/s); adapter in {result.adapter_dir}"
        )
        stdout.print(f"merge it with: rap train merge {base} {result.adapter_dir} MERGED")


@app.command("merge")
def merge(
    base: str = typer.Argument(..., help="The base model the adapter was trained on."),
    adapter: Path = typer.Argument(..., help="The adapter folder (rap train's --out)."),
    out: Path = typer.Argument(..., help="A new folder for the merged model."),
) -> None:
    """Merge a LoRA adapter into its base; the result loads with --backend llava (or qwen2-vl) --model OUT."""
    from rap.training import merge_adapter

    written = merge_adapter(base, adapter, out)
    model_type = json.loads((written / "config.json").read_text()).get("model_type", "")
    backend = "qwen2-vl" if model_type.startswith("qwen2") else "llava"
    stdout.print(
        f"merged into {written}; use it with: rap ask --backend {backend} --model {written} ...\n"
        f"or as a profile in config.toml (then: rap --profile my-rap ask ...):\n"
        f'[profiles.my-rap]\ngenerator = "{backend}:{written}"',
        markup=False,
        soft_wrap=True,
    )
