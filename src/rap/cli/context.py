"""What every command shares: the global options, the store, output and progress."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from rap.settings import Resolved, resolve
from rap.store.base import ConceptStore
from rap.store.registry import open_store

stdout = Console()
stderr = Console(stderr=True)


class State:
    """The resolved settings for this invocation and the store, opened on first use."""

    def __init__(self, overrides: dict[str, Any], profile: str | None, reembed: bool) -> None:
        self.overrides = overrides
        self.profile = profile
        self.reembed = reembed
        self._resolved: Resolved | None = None
        self._store: ConceptStore | None = None

    @property
    def resolved(self) -> Resolved:
        if self._resolved is None:
            self._resolved = resolve(self.overrides, self.profile)
        return self._resolved

    def store(self, create: bool = False, reembed: bool = False) -> ConceptStore:
        """The store, opened on first use; only a command that adds (``create``) may make a new one.

        An existing store keeps its own models unless the user names others (or
        ``reembed`` asks for the ones in force); a new one takes the settings'.
        """
        if self._store is None:
            resolved = self.resolved
            settings = resolved.settings
            self._store = open_store(
                settings,
                encoder=settings.encoder if reembed or resolved.explicit("encoder") else None,
                faces=settings.faces if reembed or resolved.explicit("faces") else None,
                create=create,
                on_encoder_change="reembed" if reembed or self.reembed else "refuse",
                progress=progress_bar,
            )
        return self._store

    def close(self) -> None:
        if self._store is not None:
            self._store.close()


def global_options(
    ctx: typer.Context,
    db: Path | None = typer.Option(None, "--db", help="Concept store folder (env RAP_DB; default $RAP_HOME/store)."),
    store: str | None = typer.Option(None, "--store", help="Concept store instead of the folder: postgresql://user@host/db or local:PATH (env RAP_STORE_URL)."),
    profile: str | None = typer.Option(None, "--profile", "-p", help="Settings profile: offline, paper, or one from the config file (env RAP_PROFILE)."),
    encoder: str | None = typer.Option(None, "--encoder", help="Image encoder, e.g. offline:efficientnet-lite0-int8 or clip:openai/clip-vit-large-patch14-336."),
    detector: str | None = typer.Option(None, "--detector", help="Region detector: multiscale, selective-search, owlv2[:model], grounding-dino[:model], none."),
    faces: str | None = typer.Option(None, "--faces", help="Face analyzer for person concepts: dlib or none."),
    reembed: bool = typer.Option(False, "--reembed", help="If the store was embedded by another encoder, re-embed it instead of refusing."),
) -> None:
    """Retrieval-augmented personalization: remember your concepts, find them in photos."""
    overrides = {"db": db, "store_url": store, "encoder": encoder, "detector": detector, "faces": faces}
    state = State(overrides, profile, reembed)
    ctx.obj = state
    ctx.call_on_close(state.close)


def state(ctx: typer.Context) -> State:
    obj = ctx.find_root().obj
    assert isinstance(obj, State)
    return obj


def print_json(value: Any) -> None:
    """One JSON document on one line of stdout (JSON Lines when called repeatedly)."""
    sys.stdout.write(json.dumps(value, ensure_ascii=False, default=str) + "\n")
    sys.stdout.flush()


@contextmanager
def progress_bar(description: str, total: int) -> Iterator[Callable[[int], None]]:
    """A progress bar on stderr (so --json output stays clean); yields ``advance(n)``."""
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=stderr,
        transient=True,
        disable=total < 2,
    )
    with progress:
        task = progress.add_task(description, total=total)
        yield lambda n: progress.advance(task, n)
