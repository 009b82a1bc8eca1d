"""``rap retrieve``: which of my concepts are in these images?"""

from __future__ import annotations

from pathlib import Path

import typer

from rap.cli.context import print_json, progress_bar, state, stderr, stdout
from rap.render import retrieval_table
from rap.errors import InvalidInput
from rap.images import check_image
from rap.retrieval import Retrieval, Retriever
from rap.store.base import ConceptStore


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
    store = st.store()
    retriever = Retriever.from_settings(store, settings, top_k=k, threshold=threshold, strict=strict)
    missing = _MissingImages(store)
    if not checked:
        retrieval = retriever.retrieve(text=text)
        _emit(None, retrieval, as_json)
        missing.look(retrieval)
        return
    with progress_bar("retrieving", len(checked)) as advance:
        for path, retrieval in zip(images, retriever.retrieve_many(checked, [text] * len(checked))):
            _emit(path, retrieval, as_json)
            missing.look(retrieval)
            advance(1)


class _MissingImages:
    """Warns once a run that a retrieved concept's reference image file is gone: retrieval needs only
    its vectors, but an answer, an export or a re-embedding needs the file."""

    def __init__(self, store: ConceptStore) -> None:
        self.store, self.warned = store, False
        self.seen: set[str] = set()

    def look(self, retrieval: Retrieval) -> None:
        for found in retrieval.concepts if not self.warned else []:
            concept = found.concept
            if concept.name in self.seen:
                continue
            self.seen.add(concept.name)
            missing = [image.file for image in concept.images if not self.store.image_path(image.file).exists()]
            if missing:
                stderr.print(
                    f"warning: {len(missing)} reference image(s) of {concept.name!r} are missing from the store "
                    f"({missing[0]}); 'rap check' says what to do",
                    markup=False,
                )
                self.warned = True
                return


def _emit(path: Path | None, retrieval, as_json: bool) -> None:
    if as_json:
        print_json({"image": str(path) if path else None} | retrieval.to_dict())
    else:
        stdout.print(retrieval_table(str(path) if path else "text", retrieval))
