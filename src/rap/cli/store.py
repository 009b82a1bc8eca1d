"""``rap info`` and ``rap reembed``: the store itself."""

from __future__ import annotations

import typer

from rap.cli.context import print_json, progress_bar, state, stdout


def info_command(ctx: typer.Context, as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Where the store is, what encoded it, and its indexes."""
    store = state(ctx).store()
    info = {
        "path": store.location,
        "concepts": len(store),
        "encoder": store.encoder_id,
        "faces": store.faces_id,
        "categories": store.categories(),
        "indexes": store.index_info(),
    }
    if as_json:
        print_json(info)
    else:
        for key, value in info.items():
            stdout.print(f"[bold]{key}[/bold]: {value}")


def reembed_command(ctx: typer.Context) -> None:
    """Recompute every vector with the encoder and face analyzer in force (--encoder, --faces)."""
    store = state(ctx).store(reembed=True)
    if not store.reembedded_on_open:
        with progress_bar("re-embedding", sum(len(c.images) for c in store.list())) as advance:
            store.reembed(advance)
    stdout.print(f"re-embedded {len(store)} concept(s) with {store.encoder_id} (faces: {store.faces_id})")
