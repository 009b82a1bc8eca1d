"""Concept stores, chosen by name through the same registry as every other backend.

A store spec is ``local:PATH`` (the embedded SQLite + FAISS folder) or a
PostgreSQL URL, ``postgresql://user@host/db``: the registry splits a spec at
its first colon, so the URL's scheme is the registry scheme and the rest of the
URL its argument. A new backend plugs in by registering a factory under its
scheme, from rap itself or from a ``rap.plugins`` entry point.

Every factory receives the argument and one :class:`StoreRequest`, the same
for every backend: the resolved settings, the user the store is bound to, the
models asked for, whether to create a missing store, what to do when the models
differ from the recorded ones, and a progress display for re-embedding.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from rap.errors import InvalidInput
from rap.registry import Registry
from rap.settings import Settings
from rap.store.base import ConceptStore
from rap.store.inputs import ProgressFactory

if TYPE_CHECKING:
    from rap.encoders import FaceAnalyzer, ImageEncoder


POSTGRES_SCHEMES = ("postgresql", "postgres")
"""The schemes of a PostgreSQL store URL; a server on one keeps its users in the same database."""

STORES: Registry[ConceptStore] = Registry(
    "concept store",
    {scheme: "rap.store.registry" for scheme in ("local", *POSTGRES_SCHEMES)},
)

@dataclass(frozen=True)
class StoreRequest:
    """What every store factory receives beside its spec's argument."""

    settings: Settings
    #: the user the store is bound to; None: the single local user
    user: str | None
    #: the models asked for, by name or as loaded models a server shares between users; None: the recorded ones
    encoder: str | ImageEncoder | None
    faces: str | FaceAnalyzer | None
    #: whether a missing embedded store is made rather than refused
    create: bool
    #: ``refuse`` or ``reembed`` when the models asked for are not the recorded ones
    on_encoder_change: str
    #: opens a progress display for re-embedding
    progress: ProgressFactory | None


_USER = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}")


def validate_user(user: str) -> str:
    """A user name safe as a folder name and a database key: letters, digits, ``_.@-``; 1 to 64."""
    if not isinstance(user, str) or not _USER.fullmatch(user):
        raise InvalidInput(
            f"bad user name {user!r}: use 1 to 64 letters, digits, '_', '.', '@' or '-', starting with a letter or digit"
        )
    return user


def open_store(
    settings: Settings,
    *,
    user: str | None = None,
    encoder: str | ImageEncoder | None = None,
    faces: str | FaceAnalyzer | None = None,
    create: bool = False,
    on_encoder_change: str = "refuse",
    progress: ProgressFactory | None = None,
) -> ConceptStore:
    """Open the store ``settings.store_spec`` names, bound to ``user``.

    ``create``: a missing embedded store is made rather than refused (commands
    that add); a shared database always exists, so its backends ignore it.

    ``user`` None means the single local user: the folder itself for a local
    store, ``settings.store_user`` for a shared one. A server passes each
    request's user; a local store then keeps that user's concepts in a folder
    of their own, ``PATH/users/USER``.
    """
    request = StoreRequest(
        settings, validate_user(user) if user is not None else None, encoder, faces, create, on_encoder_change, progress
    )
    return STORES.create(settings.store_spec, request=request)


@STORES.register("local", help="embedded store in one folder: SQLite metadata, image files, FAISS indexes")
def _local(argument: str, *, request: StoreRequest) -> ConceptStore:
    from rap.store.local import LocalConceptStore

    if not argument.strip():
        raise InvalidInput("a local store needs a folder: local:PATH")
    path = Path(argument).expanduser()
    if request.user is not None:
        path = path / "users" / request.user
    settings = request.settings
    return LocalConceptStore(
        path, encoder=request.encoder, faces=request.faces, settings=settings, create=request.create,
        on_encoder_change=request.on_encoder_change, progress=request.progress,  # type: ignore[arg-type]
        image_side=settings.image_side, batch_images=settings.batch_images,
    )


@STORES.register("postgresql", help="PostgreSQL with pgvector, shared by many users and workers: postgresql://user@host/db")
@STORES.register("postgres", help="the same as postgresql (the URL scheme some hosts print)")
def _postgres(argument: str, *, request: StoreRequest) -> ConceptStore:
    from rap._imports import require

    require("psycopg", "postgres")
    require("pgvector", "postgres")
    from rap.store.postgres import PostgresConceptStore

    settings = request.settings
    return PostgresConceptStore(
        f"postgresql:{argument}",
        user=validate_user(request.user or settings.store_user),
        encoder=request.encoder or None,
        faces=request.faces,
        default_encoder=settings.encoder,
        default_faces=settings.faces,
        exact_below=settings.pgvector_exact_below,
        ef_search=settings.pgvector_ef_search,
        on_encoder_change=request.on_encoder_change,  # type: ignore[arg-type]
        progress=request.progress,
        image_side=settings.image_side,
        batch_images=settings.batch_images,
        settings=settings,
    )
