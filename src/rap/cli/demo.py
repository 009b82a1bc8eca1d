"""``rap demo``."""

from __future__ import annotations

import tempfile
from pathlib import Path

import typer

from rap import demo
from rap.cli.context import state, stdout


def demo_command(
    ctx: typer.Context,
    keep: Path | None = typer.Option(None, "--keep", help="Build the demo store in this new folder and keep it."),
) -> None:
    """Run the whole loop offline on bundled photos, in a throw-away store."""
    settings = state(ctx).resolved.settings
    with tempfile.TemporaryDirectory(prefix="rap-demo-") as scratch:
        path = keep or Path(scratch) / "store"
        demo.run(path, stdout, settings)
        stdout.print(f"\nthe demo store is in {path}" if keep else "")
