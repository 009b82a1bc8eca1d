"""How concepts and retrievals look on a terminal."""

from __future__ import annotations

from rich.table import Table

from rap.concepts import Concept
from rap.retrieval import Retrieval, RetrievedConcept


def concepts_table(concepts: list[Concept]) -> Table:
    table = Table("name", "category", "images", "info", "updated", box=None, header_style="bold")
    for c in concepts:
        info = c.info if len(c.info) <= 60 else c.info[:57] + "..."
        table.add_row(c.token, c.category, str(len(c.images)), info, c.updated_at.strftime("%Y-%m-%d %H:%M"))
    return table


def concept_table(concept: Concept) -> Table:
    table = Table(show_header=False, box=None)
    table.add_row("[bold]name", concept.token)
    table.add_row("[bold]category", concept.category)
    table.add_row("[bold]info", concept.info or "-")
    for key, value in concept.attributes.items():
        table.add_row(f"[bold]{key}", value)
    for image in concept.images:
        face = f", face at {list(image.face_box)}" if image.face_box else ""
        table.add_row(f"[bold]image {image.id}", f"{image.file} ({image.width}x{image.height}{face})")
    table.add_row("[bold]created", concept.created_at.isoformat(timespec="seconds"))
    table.add_row("[bold]updated", concept.updated_at.isoformat(timespec="seconds"))
    return table


def retrieval_table(title: str, retrieval: Retrieval) -> Table:
    table = Table("#", "concept", "match", "via", "distance", "score", "box", "region", title=title, box=None, header_style="bold")
    for n, r in enumerate(retrieval.concepts, 1):
        table.add_row(
            str(n),
            r.concept.token,
            "yes" if r.match else "[dim]no[/dim]",
            r.via,
            "-" if r.distance is None else f"{r.distance:.3f}",
            "-" if r.score is None else f"{r.score:.2f}",
            "-" if r.box is None else ",".join(map(str, r.box)),
            r.region or "-",
        )
    if not retrieval.concepts:
        table.add_row("-", "none of your concepts", "", "", "", "", "", "")
    elif not any(r.match for r in retrieval.concepts):
        table.caption = "none of your concepts is a match: these are the closest"
    return table


def concept_rows(concepts: list[RetrievedConcept]) -> str:
    """One line per concept used: why the model said what it said."""
    if not concepts:
        return "[dim](no concepts used)[/dim]"
    lines = []
    for r in concepts:
        where = f" at {','.join(map(str, r.box))}" if r.box else ""
        distance = f", distance {r.distance:.3f}" if r.distance is not None else ""
        label = ", a match" if r.match else ", a weak match" if r.distance is not None else ""
        lines.append(f"[dim]used {r.concept.token}: retrieved by {r.via}{distance}{label}{where}[/dim]")
    return "\n".join(lines)
