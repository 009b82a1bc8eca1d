"""The one place the photo library asks whether a concept is in a photo.

It asks the retriever (:meth:`Retriever.decide`, which applies
:func:`rap.retrieval.decision.decide` with the store's operating point), so a
photo is a match for ``find`` exactly when retrieval on that photo labels the
concept a match.
"""

from __future__ import annotations

from rap.photos.library import Looked
from rap.retrieval import Retriever
from rap.retrieval.evidence import Candidate

MATCH = "match"


def counted(retriever: Retriever, looked: Looked, has_face_keys: bool) -> list[Candidate]:
    """The candidates that count in a stored photo, against the store as it is now.

    Faces are given only when the store holds face vectors, as retrieval looks
    for them only then.
    """
    candidates = retriever.decide(looked.regions, looked.vectors, looked.faces if has_face_keys else None)
    return [c for c in candidates if c.match]


def label(candidate: Candidate) -> str:
    """The match label of a counted candidate: retrieval's decision labels each one."""
    return MATCH if candidate.match else "no match"
