"""rap: retrieval-augmented personalization for multimodal LLMs.

Remember concepts (your dog, your friends, your mug) in a :class:`ConceptStore`,
and let a :class:`Retriever` find them in photos and questions::

    from rap import LocalConceptStore, Retriever

    store = LocalConceptStore("~/my-concepts")
    store.add("bo", ["bo.jpg"], info="<bo> is my Shiba Inu", category="dog")
    retrieval = Retriever(store).retrieve("park.jpg", text="Where is bo?")
    print(retrieval.names())

Importing rap is cheap: torch and the models load when first needed.
"""

from __future__ import annotations

from rap.concepts import Concept, ConceptImage
from rap.errors import RapError
from rap.retrieval import Retrieval, RetrievedConcept, Retriever
from rap.settings import Settings, resolve
from rap.store import ConceptStore, LocalConceptStore, NewConcept

__version__ = "0.1.0"

__all__ = [
    "Concept",
    "ConceptImage",
    "ConceptStore",
    "LocalConceptStore",
    "NewConcept",
    "RapError",
    "Retrieval",
    "RetrievedConcept",
    "Retriever",
    "Settings",
    "resolve",
    "open_store",
]


def open_store(
    settings: Settings | None = None, *, user: str | None = None, create: bool = True, **overrides: object
) -> ConceptStore:
    """Open the store the settings in force name (``RAP_STORE_URL``, ``RAP_DB``, ``RAP_HOME``, the config file).

    ``user`` binds the store to one user's concepts (a server passes each
    request's user); None is the single local user. ``create`` False refuses a
    missing store instead of making one. ``overrides`` are settings,
    as ``resolve`` takes them: ``open_store(store_url="postgresql://...")``.
    """
    from rap.store.registry import open_store as open_named

    resolved = settings or resolve(overrides).settings
    return open_named(resolved, user=user, encoder=resolved.encoder, faces=resolved.faces, create=create)
