"""``rap users add|list|rotate|revoke``: who may use ``rap serve``, and their API keys."""

from __future__ import annotations

import typer

from rap.cli.context import print_json, state, stderr, stdout

app = typer.Typer(help="Users of 'rap serve' and their API keys.", no_args_is_help=True)
JSON = typer.Option(False, "--json", help="Print JSON.")


def _users(ctx: typer.Context):
    """The users of a server with these settings: in its PostgreSQL database with ``--store postgresql://...``."""
    from rap.server.users import open_users

    return open_users(state(ctx).resolved.settings)


@app.command("add")
def add(ctx: typer.Context, name: str = typer.Argument(..., help="The user's name."), as_json: bool = JSON) -> None:
    """Make a user and print their API key: it is shown this once and stored only as a hash."""
    with _users(ctx) as users:
        user, key = users.add(name)
    _show_key(user.name, key, as_json)


def _show_key(user_name: str, key: str, as_json: bool) -> None:
    if as_json:
        print_json({"user": user_name, "key": key})
        return
    stdout.print(key)
    stderr.print(f"[dim]the API key of {user_name}; it is not stored and cannot be shown again[/dim]")


@app.command("rotate")
def rotate(ctx: typer.Context, name: str = typer.Argument(..., help="The user who gets a new key."), as_json: bool = JSON) -> None:
    """Give a user a new API key (a revoked user too) and print it; the old key stops working at once."""
    with _users(ctx) as users:
        user, key = users.rotate(name)
    _show_key(user.name, key, as_json)


@app.command("list")
def list_(ctx: typer.Context, as_json: bool = JSON) -> None:
    """List the users (never their keys)."""
    with _users(ctx) as db:
        users = db.list()
    if as_json:
        print_json([{"user": u.name, "created_at": u.created_at, "revoked": revoked} for u, revoked in users])
        return
    for user, revoked in users:
        stdout.print(f"{user.name}\t{user.created_at}" + ("\trevoked" if revoked else ""))
    if not users:
        stdout.print("no users yet; add one with: rap users add NAME")


@app.command("revoke")
def revoke(ctx: typer.Context, name: str = typer.Argument(..., help="The user whose key stops working.")) -> None:
    """Refuse a user's key from now on; their concepts stay in the store."""
    with _users(ctx) as users:
        users.revoke(name)
    stdout.print(f"revoked the key of {name}")
