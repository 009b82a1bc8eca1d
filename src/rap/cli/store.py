"""``rap info``, ``rap check`` and ``rap reembed``: the store itself."""

from __future__ import annotations

import typer

from rap.cli.context import print_json, progress_bar, state, stdout
from rap.errors import InvalidInput
from rap.retrieval import Retriever
from rap.store.check import check_store


def info_command(ctx: typer.Context, as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Where the store is, what encoded it, and its indexes."""
    st = state(ctx)
    store = st.store()
    point = Retriever.from_settings(store, st.resolved.settings).operating_point
    info = {
        "path": store.location,
        "concepts": len(store),
        "encoder": store.encoder_id,
        "faces": store.faces_id,
        "categories": store.categories(),
        "indexes": store.index_info(),
        "operating_point": point.to_dict(),
    }
    if as_json:
        print_json(info)
    else:
        for key, value in info.items():
            stdout.print(f"[bold]{key}[/bold]: {point.describe() if key == 'operating_point' else value}")


def reembed_command(ctx: typer.Context) -> None:
    """Recompute every vector with the encoder and face analyzer in force (--encoder, --faces)."""
    store = state(ctx).store(reembed=True)
    if not store.reembedded_on_open:
        with progress_bar("re-embedding", sum(len(c.images) for c in store.list())) as advance:
            store.reembed(advance)
    stdout.print(f"re-embedded {len(store)} concept(s) with {store.encoder_id} (faces: {store.faces_id})")


def check_command(
    ctx: typer.Context,
    repair: bool = typer.Option(False, "--repair", help="Rebuild what can be rebuilt from SQLite: vectors from their images, the indexes."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Check the store: the database and each row against its digest, every image file, every vector, the indexes. Exit 5 if something is wrong."""
    settings = state(ctx).resolved.settings
    if not settings.store_spec.startswith("local:"):
        raise InvalidInput("rap check checks an embedded store (--db); a PostgreSQL server checks its own data (amcheck, pg_dump)")
    report = check_store(settings.store_path, repair=repair, settings=settings)
    if as_json:
        print_json(report.as_json())
    else:
        for problem in report.problems:
            mark = "repaired" if problem.repaired else "repairable" if problem.repairable else "problem"
            stdout.print(f"{mark}: {problem.detail}", markup=False, highlight=False, soft_wrap=True)
        counts = ", ".join(f"{n} {what}" for what, n in report.checked.items())
        if report.ok:
            stdout.print(f"{report.path}: whole ({counts})" + (f"; {len(report.problems)} problem(s) repaired" if report.problems else ""))
        else:
            fix = " 'rap check --repair' fixes those marked repairable." if any(p.repairable and not p.repaired for p in report.problems) else ""
            stdout.print(f"{report.path}: {sum(not p.repaired for p in report.problems)} problem(s).{fix}", markup=False)
    if not report.ok:
        raise typer.Exit(5)
