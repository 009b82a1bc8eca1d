"""``rap photos``: your photo library, searchable by your concepts (see :mod:`rap.photos`)."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, Task, TextColumn, TimeRemainingColumn
from rich.table import Table
from rich.text import Text

from rap.cli.context import print_json, state, stderr, stdout
from rap.errors import InvalidInput
from rap.photos import find_photos, index_photos, name_group, open_library, suggest_groups
from rap.retrieval import Retriever

app = typer.Typer(help="Your photo library: index it, find your concepts in it, name what recurs.", no_args_is_help=True)


class _Speed(ProgressColumn):
    """Photos per second, as the bar goes."""

    def render(self, task: Task) -> Text:
        return Text(f"{task.speed:.1f} photos/s" if task.speed else "", style="progress.data.speed")


def _open(ctx: typer.Context, create: bool = False):
    """The library beside the store, and the retriever whose work and decision it keeps."""
    st = state(ctx)
    store = st.store(create=create)
    return open_library(store), Retriever.from_settings(store, st.resolved.settings)


@app.command("index")
def index_command(
    ctx: typer.Context,
    paths: list[Path] = typer.Argument(..., help="Folders (walked recursively) and photo files."),
    reindex: bool = typer.Option(False, "--reindex", help="Forget every indexed photo first (after changing encoder or detector)."),
    as_json: bool = typer.Option(False, "--json", help="The summary as one JSON object."),
) -> None:
    """Index new and changed photos; forget the ones gone. Photos are never copied or changed."""
    library, retriever = _open(ctx, create=True)
    with library:
        progress = Progress(
            TextColumn("indexing"), BarColumn(), MofNCompleteColumn(), _Speed(), TimeRemainingColumn(),
            console=stderr, transient=True,
        )
        with progress:
            task = progress.add_task("indexing", total=None)
            summary = index_photos(
                library, retriever, paths, reindex=reindex,
                progress=lambda n: progress.advance(task, n),
                on_total=lambda total: progress.update(task, total=total),
            )
    result = summary.to_dict()
    if as_json:
        print_json(result)
        return
    stdout.print(
        f"indexed {summary.indexed} ({result['photos_per_second']} photos/s), unchanged {summary.unchanged}, "
        f"copies {summary.copied}, touched {summary.touched}, forgotten {summary.forgotten}, failed {len(summary.failed)}"
    )
    for path, reason in summary.failed:
        stdout.print(f"  failed: {reason}", markup=False, highlight=False)


def _date(value: str | None, option: str) -> str | None:
    if value is None:
        return None
    try:
        return date.fromisoformat(value).isoformat()
    except ValueError:
        raise InvalidInput(f"{option} {value!r}: give a date as YYYY-MM-DD") from None


@app.command("find")
def find_command(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="A concept's name."),
    limit: int | None = typer.Option(None, "--limit", "-n", min=1, help="Most photos to list (default: the photos_limit setting)."),
    since: str | None = typer.Option(None, "--since", help="Only photos taken on or after this date (EXIF), YYYY-MM-DD."),
    until: str | None = typer.Option(None, "--until", help="Only photos taken on or before this date (EXIF), YYYY-MM-DD."),
    as_json: bool = typer.Option(False, "--json", help="One JSON object per photo (JSON Lines)."),
) -> None:
    """The photos a concept appears in, best first, by retrieval's own decision."""
    since, until = _date(since, "--since"), _date(until, "--until")
    library, retriever = _open(ctx)
    with library:
        found = find_photos(library, retriever, name, limit=limit or state(ctx).resolved.settings.photos_limit, since=since, until=until)
    if as_json:
        for item in found:
            print_json(item.to_dict())
        return
    table = Table("photo", "box", "distance", "score", "match", "taken", title=f"photos of {name}")
    for item in found:
        table.add_row(item.photo.path, str(list(item.box)), f"{item.distance:.3f}", f"{item.score:.3f}", item.match, item.photo.taken or "")
    stdout.print(table)


@app.command("stats")
def stats_command(ctx: typer.Context, as_json: bool = typer.Option(False, "--json", help="As one JSON object.")) -> None:
    """Photos, regions and faces indexed, and the index's size on disk."""
    library, _ = _open(ctx)
    with library:
        stats = library.stats()
    if as_json:
        print_json(stats)
        return
    for key in ("photos", "regions", "faces", "bytes_on_disk"):
        stdout.print(f"{key}: {stats[key]}")


@app.command("suggest")
def suggest_command(
    ctx: typer.Context,
    min_photos: int | None = typer.Option(None, "--min-photos", min=2, help="Fewest photos a subject must recur in (default: photos_min_photos)."),
    as_json: bool = typer.Option(False, "--json", help="One JSON object per group (JSON Lines)."),
) -> None:
    """Subjects (faces, objects) that recur in your photos and match none of your concepts, largest first."""
    settings = state(ctx).resolved.settings
    library, retriever = _open(ctx)
    with library:
        groups = suggest_groups(library, retriever, min_photos or settings.photos_min_photos)
    sample = 5
    if as_json:
        for group in groups:
            print_json(group.to_dict(sample))
        return
    if not groups:
        stdout.print("no recurring subject outside your concepts")
    for group in groups:
        stdout.print(f"group {group.number}: {len(group.photos)} photos ({group.space})")
        for path, box in group.photos[:sample]:
            stdout.print(f"  {path} {list(box)}", markup=False, highlight=False)
    if groups:
        stdout.print("name one with: rap photos name GROUP NAME --category person")


@app.command("name")
def name_command(
    ctx: typer.Context,
    group: int = typer.Argument(..., help="A group number from the last 'rap photos suggest'."),
    name: str = typer.Argument(..., help="The new concept's name."),
    category: str = typer.Option("object", "--category", "-c", help="The concept's category, e.g. person, dog, mug."),
    info: str = typer.Option("", "--info", help="What to remember about it."),
    as_json: bool = typer.Option(False, "--json", help="The new concept as JSON."),
) -> None:
    """Make a suggested group a concept, its references cropped from the group's photos."""
    settings = state(ctx).resolved.settings
    library, retriever = _open(ctx)
    with library:
        concept = name_group(library, retriever, group, name, category=category, references=settings.photos_references, info=info)
    if as_json:
        print_json({"name": concept.name, "category": concept.category, "images": len(concept.images)})
    else:
        stdout.print(f"remembered <{concept.name}> from {len(concept.images)} photos of group {group}")
