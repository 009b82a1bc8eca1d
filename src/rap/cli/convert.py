"""``rap convert llava``: official RAP checkpoints to the transformers format."""

from __future__ import annotations

from pathlib import Path

import typer

from rap.cli.context import stdout

app = typer.Typer(help="Convert model checkpoints to formats rap's backends load.", no_args_is_help=True)


@app.command("llava")
def llava(
    source: Path = typer.Argument(..., help="A checkpoint in the original LLaVA layout (Llama or Phi-3 inside), e.g. a download of Hoar012/RAP-LLaVA-13b."),
    target: Path = typer.Argument(..., help="A new folder for the llava-hf (transformers) checkpoint."),
    vision_tower: str | None = typer.Option(None, "--vision-tower", help="CLIP vision tower folder or hub name, if not in the checkpoint (default: its mm_vision_tower)."),
) -> None:
    """Convert an original-LLaVA checkpoint (RAP-LLaVA, RAP-Phi3-V) for the `llava` backend, with the chat template it was trained with."""
    from rap.generation.llava_convert import convert_llava_checkpoint

    written = convert_llava_checkpoint(source, target, vision_tower)
    stdout.print(f"converted to {written}; use it with: rap ask --backend llava --model {written} ...")
