"""The ``rap`` command: a thin layer over the Python API.

Every command resolves the settings in force (flags, environment, config file,
profile), calls the same functions a Python user would, and prints a rich table
or, with ``--json``, machine-readable JSON. Errors a user can cause are printed
as one line on stderr with a non-zero exit code, never as a traceback.
"""

from __future__ import annotations

import sys

import typer

from rap.cli import calibrate, concepts, config, convert, data, db, demo, evaluate, generate, retrieve, serve, store, train, transfer, users
from rap.cli.context import global_options
from rap.errors import RapError

app = typer.Typer(
    name="rap",
    help="Retrieval-augmented personalization: remember your concepts, find them in photos.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.callback()(global_options)
app.add_typer(concepts.app, name="concept")
app.add_typer(config.app, name="config")
app.add_typer(convert.app, name="convert")
app.add_typer(data.app, name="data")
app.add_typer(db.app, name="db")
app.add_typer(train.app, name="train")
app.add_typer(users.app, name="users")
app.command("import")(transfer.import_command)
app.command("export")(transfer.export_command)
app.command("retrieve")(retrieve.retrieve_command)
app.command("reembed")(store.reembed_command)
app.command("info")(store.info_command)
app.command("check")(store.check_command)
app.command("backends")(config.backends_command)
app.command("demo")(demo.demo_command)
app.command("ask")(generate.ask_command)
app.command("caption")(generate.caption_command)
app.command("chat")(generate.chat_command)
app.command("recognize")(generate.recognize_command)
app.command("locate")(generate.locate_command)
app.command("eval")(evaluate.eval_command)
app.command("calibrate")(calibrate.calibrate_command)
app.command("serve")(serve.serve_command)


def run(argv: list[str] | None = None) -> int:
    """Run one command line and return its exit code; errors become one line on stderr."""
    try:
        result = app(args=argv, prog_name="rap", standalone_mode=False)
    except RapError as exc:
        typer.echo(f"error: {exc}", err=True)
        return exc.exit_code
    except typer.Exit as exc:
        return exc.exit_code
    except typer.TyperException as exc:  # usage errors: unknown command, bad option
        exc.show()
        return exc.exit_code
    except (typer.Abort, KeyboardInterrupt):
        typer.echo("interrupted", err=True)
        return 130
    return result if isinstance(result, int) else 0


def main() -> None:
    """Console entry point."""
    sys.exit(run())
