"""``rap retrieve``: which of my concepts are in these images?"""

from __future__ import annotations

from pathlib import Path

import typer

from rap.cli.context import print_json, progress_bar, state, stdout
from rap.render import retrieval_table
from rap.errors import InvalidInput
from rap.images import check_image
from rap.retrieval import Retriever


def retrieve_command(
    ctx: typer.Context,
    images: list[Path] = typer.Argument(None, help="Query images; none for a text-only query."),
    text: str | None = typer.Option(None, "--text", "-t", help="The user's text; concepts named in it are always retrieved."),
    k: int | None = typer.Option(None, "-k", "--top-k", min=1, max=100, help="Concepts to retrieve per image."),
    threshold: float | None = typer.Option(None, "--threshold", min=0.0, help="Max image distance for a match (inf: every candidate is a match)."),
    strict: bool | None = typer.Option(None, "--strict/--ranked", help="Keep only the matches, or the top K each labelled (default: the strict_matches setting)."),
    as_json: bool = typer.Option(False, "--json", help="One JSON object per image (JSON Lines)."),
) -> None:
    """Retrieve the top-K concepts for each image (and the text), each labelled a match or not, with distance and box."""
    images = images or []
    if not images and not text:
        raise InvalidInput("give at least one image or --text")
    st = state(ctx)
    settings = st.resolved.settings
    # Every file is checked by its header before any work; each is decoded only when its
    # batch comes, so memory stays flat however many photos are given.
    checked = [check_image(path) for path in images]
    retriever = Retriever.from_settings(st.store(), settings, top_k=k, threshold=threshold, strict=strict)
    if not checked:
        _emit(None, retriever.retrieve(text=text), as_json)
        return
    with progress_bar("retrieving", len(checked)) as advance:
        for path, retrieval in zip(images, retriever.retrieve_many(checked, [text] * len(checked))):
            _emit(path, retrieval, as_json)
            advance(1)


def _emit(path: Path | None, retrieval, as_json: bool) -> None:
    if as_json:
        print_json({"image": str(path) if path else None} | retrieval.to_dict())
    else:
        stdout.print(retrieval_table(str(path) if path else "text", retrieval))
