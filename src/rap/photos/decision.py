"""The one place the photo library asks whether a concept is in a photo.

It asks the retriever (:meth:`Retriever.decide`), so a photo is a match for
``find`` exactly when retrieval on that photo would retrieve the concept; when
the decision moves to ``rap.retrieval.decision``, this module is what follows it.
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
    return retriever.decide(looked.regions, looked.vectors, looked.faces if has_face_keys else None)


def label(candidate: Candidate) -> str:
    """The match label of a counted candidate (the decision is yes or no today)."""
    return MATCH
