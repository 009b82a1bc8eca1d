"""``rap db start|stop|status DIR``: the bundled PostgreSQL + pgvector on one machine, without containers.

The server (rap.store.postgres_server, the ``db`` extra) keeps its data in
DIR across restarts and listens only on a Unix socket there; ``start`` prints
the URL to give ``--store`` or ``RAP_STORE_URL`` on stdout, alone, so that
``export RAP_STORE_URL=$(rap db start DIR)`` works.
"""

from __future__ import annotations

from pathlib import Path

import typer

from rap.cli.context import print_json, stderr

app = typer.Typer(
    help="The bundled PostgreSQL + pgvector on this machine (the db extra): its data stays in DIR.",
    no_args_is_help=True,
)
FOLDER = typer.Argument(..., help="The server's folder: made on first start, kept across restarts.", show_default=False)
JSON = typer.Option(False, "--json", help="Print JSON.")


@app.command("start")
def start(folder: Path = FOLDER) -> None:
    """Start the server (making its folder on first use) unless it runs; print the URL of its rap database."""
    from rap.store import postgres_server

    url = postgres_server.start(folder)
    typer.echo(url)
    stderr.print(
        f"PostgreSQL + pgvector runs in {folder} (log: {Path(folder) / 'log'}), on that Unix socket only; "
        f"use it with: rap --store '{url}' ... (or RAP_STORE_URL); stop it with: rap db stop {folder}",
        style="dim", markup=False, highlight=False, soft_wrap=True,
    )  # fmt: skip


@app.command("stop")
def stop(folder: Path = FOLDER) -> None:
    """Stop the server cleanly (sessions end, a checkpoint is written); its data stays for the next start."""
    from rap.store import postgres_server

    was_running = postgres_server.stop(folder)
    typer.echo(f"stopped the server in {folder}" if was_running else f"the server in {folder} was not running")


@app.command("status")
def status(folder: Path = FOLDER, as_json: bool = JSON) -> None:
    """Whether the server runs, and its URL."""
    from rap.store import postgres_server

    found = postgres_server.status(folder)
    if as_json:
        print_json({"folder": str(found.folder), "running": found.running, "url": found.url, "pid": found.pid, "log": str(found.log)})
    elif found.running:
        typer.echo(f"running (pid {found.pid}): {found.url}")
    else:
        typer.echo(f"stopped; start it with: rap db start {folder}")
