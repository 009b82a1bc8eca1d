"""``rap info`` and ``rap reembed``: the store itself."""

from __future__ import annotations

import typer

from rap.cli.context import print_json, progress_bar, state, stdout
from rap.store.local import LocalConceptStore


def info_command(ctx: typer.Context, as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Where the store is, what encoded it, and its indexes."""
    store = state(ctx).store()
    info = {
        "path": str(store.path),
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
    st = state(ctx)
    settings = st.resolved.settings
    store = LocalConceptStore(settings.store_path, encoder=settings.encoder, faces=settings.faces, on_encoder_change="reembed", progress=progress_bar)
    try:
        if not store.reembedded_on_open:
            with progress_bar("re-embedding", sum(len(c.images) for c in store.list())) as advance:
                store.reembed(advance)
        stdout.print(f"re-embedded {len(store)} concept(s) with {store.encoder_id} (faces: {store.faces_id})")
    finally:
        store.close()
