"""``rap config show`` and ``rap backends``: what is in force and what is available."""

from __future__ import annotations

import typer
from rich.table import Table

from rap.cli.context import State, print_json, state, stdout
from rap.detectors import DETECTORS
from rap.encoders import ENCODERS, FACE_ANALYZERS
from rap.generation import GENERATORS
from rap.errors import StoreError
from rap.redact import redact
from rap.retrieval import OperatingPoint, Retriever
from rap.settings import Settings
from rap.store.registry import STORES

app = typer.Typer(help="Show the settings in force.", no_args_is_help=True)

REGISTRIES = {"encoder": ENCODERS, "faces": FACE_ANALYZERS, "detector": DETECTORS, "generator": GENERATORS, "store": STORES}


@app.command("show")
def show(ctx: typer.Context, as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Every setting in force and where its value came from."""
    st = state(ctx)
    resolved = st.resolved
    values = redact(resolved.settings.model_dump(mode="json"))
    values["db"] = str(resolved.settings.store_path)
    point = _operating_point(st)
    if as_json:
        print_json(
            {
                "profile": resolved.profile,
                "config_file": str(resolved.config_file) if resolved.config_file else None,
                "settings": {name: {"value": values[name], "source": resolved.sources[name]} for name in values},
                "profiles": sorted(resolved.profiles),
                "operating_point": point.to_dict() if point else None,
            }
        )
        return
    table = Table("setting", "value", "source", "help", box=None, header_style="bold")
    for name, field in Settings.model_fields.items():
        table.add_row(name, str(values[name]), resolved.sources[name], field.description or "")
    stdout.print(f"profile: [bold]{resolved.profile}[/bold]   config file: {resolved.config_file or '(none)'}")
    stdout.print(table)
    stdout.print(f"operating point: {point.describe() if point else '(no store yet: the encoder calibration will hold)'}")


def _operating_point(st: State) -> OperatingPoint | None:
    """The match decision in force for the store, which may record its own; None where there is no store yet."""
    try:
        store = st.store()
    except StoreError:
        return None
    return Retriever.from_settings(store, st.resolved.settings).operating_point


def backends_command(as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """The encoders, face analyzers, detectors, generators, stores, and the data sources,
    annotators and training families of ``rap data build`` and ``rap train``, by name."""
    from rap.data import ANNOTATORS, SOURCES  # imported here: only this listing needs the data pipeline
    from rap.training.family import FAMILIES

    registries = {**REGISTRIES, "data source": SOURCES, "annotator": ANNOTATORS, "training family": FAMILIES}
    listing = {
        kind: [{"name": e.scheme, "default": e.default_argument, "help": e.help} for e in registry.entries()]
        for kind, registry in registries.items()
    }
    if as_json:
        print_json(listing)
        return
    for kind, entries in listing.items():
        table = Table("name", "default argument", "help", title=kind, box=None, header_style="bold")
        for entry in entries:
            table.add_row(entry["name"], entry["default"] or "-", entry["help"])
        stdout.print(table)
