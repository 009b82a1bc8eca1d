"""The evidence the retriever gathers for one query photo, before anything is decided.

A query region's match with a concept's key is a :class:`Candidate`: the
distance, where the region is, what cut it, and how crowded the region's
neighbourhood is. The retriever gathers every region's nearest concepts as
candidates; :mod:`rap.retrieval.decision` then labels each one a match or not
under an operating point. Keeping the two apart lets ``rap calibrate`` gather a
photo's evidence once and try many operating points on it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from rap.embedding import FACE_SPACE, IMAGE_SPACE
from rap.images import Box


@dataclass(frozen=True)
class Candidate:
    """One concept matched by one query region in one space, labelled once decided."""

    concept: str
    distance: float
    box: Box
    #: what produced the region: ``image`` (whole image), ``detector`` or ``face``
    region: str
    #: the region's nearest distance over its second-nearest concept's (image space; None: one concept in reach)
    crowding: float | None = None
    #: distance over the space's match distance in the operating point (set by the decision; <= 1: within it)
    score: float = float("nan")
    #: whether the decision labels it a match
    match: bool = False

    @property
    def space(self) -> str:
        return FACE_SPACE if self.region == "face" else IMAGE_SPACE


@dataclass(frozen=True)
class PhotoEvidence:
    """Everything the decision needs about one query photo."""

    image: list[Candidate] = field(default_factory=list)
    faces: list[Candidate] = field(default_factory=list)
    #: whether faces were looked for and found (so that a face may reject a person)
    has_faces: bool = False


def crowding(distances: list[float]) -> float | None:
    """A region's nearest distance over its second-nearest (distinct concepts, nearest first)."""
    if len(distances) < 2 or distances[1] <= 0:
        return None
    return distances[0] / distances[1]
