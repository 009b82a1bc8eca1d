"""``rap import`` and ``rap export``."""

from __future__ import annotations

from pathlib import Path

import typer

from rap.cli.context import print_json, progress_bar, state, stdout
from rap.concepts import DEFAULT_CATEGORY
from rap.images import check_image
from rap.store.interchange import export_rap, import_concepts, read_concepts


def import_command(
    ctx: typer.Context,
    path: Path = typer.Argument(..., help="A RAP database.json folder, or a folder with one subfolder per concept."),
    category: str = typer.Option(DEFAULT_CATEGORY, "--category", "-c", help="Category for plain-folder concepts without a category.txt."),
    skip_existing: bool = typer.Option(False, "--skip-existing", help="Skip concepts whose name is taken instead of failing."),
    allow_outside: bool = typer.Option(
        False, "--allow-outside", help="Let database.json name images outside its folder (absolute or ../ paths), and a plain folder link to files outside it."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Import concepts, all or nothing, with batched encoding."""
    concepts = read_concepts(path, category, allow_outside=allow_outside)
    for concept in concepts:  # every file checked by its header before a new store is made
        concept.images = [check_image(image) if isinstance(image, (str, Path)) else image for image in concept.images]
    store = state(ctx).store(create=True)
    with progress_bar("importing", sum(len(c.images) for c in concepts)) as advance:
        added, skipped = import_concepts(store, concepts, skip_existing=skip_existing, progress=advance)
    if as_json:
        print_json({"added": added, "skipped": skipped})
    else:
        stdout.print(f"imported {len(added)} concept(s)" + (f", skipped {len(skipped)} already present" if skipped else ""))


def export_command(
    ctx: typer.Context,
    path: Path = typer.Argument(..., help="A new folder to write database.json and the images into."),
) -> None:
    """Export the store in the official RAP format (database.json)."""
    target = export_rap(state(ctx).store(), path)
    stdout.print(f"exported to {target / 'database.json'}")
