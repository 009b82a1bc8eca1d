"""``rap photos find``: the photos a concept appears in, best first.

The concept's keys, as the store holds them now, are searched against every
photo's stored region vectors (FAISS): regions within the space's match
distance make a photo a candidate, and retrieval's own decision on that
photo's stored regions (:mod:`rap.photos.decision`) says whether it counts. So
adding a reference image, editing or removing the concept changes the answer at
once, with nothing re-indexed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from rap.embedding import FACE_SPACE, IMAGE_SPACE
from rap.images import Box
from rap.photos.decision import counted, label
from rap.photos.indexer import models_of
from rap.photos.library import Photo, PhotoLibrary
from rap.retrieval import Retriever
from rap.store.vectors import VectorIndex


@dataclass(frozen=True)
class FoundPhoto:
    """One photo the concept appears in, with where and how surely."""

    photo: Photo
    box: Box
    distance: float
    score: float
    region: str
    match: str

    def to_dict(self) -> dict[str, object]:
        return self.photo.to_dict() | {
            "box": list(self.box), "distance": round(self.distance, 4), "score": round(self.score, 4),
            "region": self.region, "match": self.match,
        }


def within(index: VectorIndex, queries: np.ndarray, radius: float, start: int = 256) -> set[int]:
    """Ids of every vector within ``radius`` of any query: k nearest, k doubled until the farthest is beyond it."""
    found: set[int] = set()
    k = start
    while True:
        distances, ids = index.search(queries, k)
        found.update(int(i) for i in ids[distances <= radius] if i >= 0)
        if k >= index.ntotal or not (distances[:, -1] <= radius).any():
            return found
        k *= 4


def find_photos(
    library: PhotoLibrary,
    retriever: Retriever,
    name: str,
    *,
    limit: int,
    since: str | None = None,
    until: str | None = None,
) -> list[FoundPhoto]:
    """The photos ``name`` appears in, by retrieval's decision, best (lowest score) first."""
    library.check_models(models_of(retriever))
    store = retriever.store
    concept = store.get(name)
    detector = retriever.detector.id
    candidates: set[int] = set()
    for space in (IMAGE_SPACE, FACE_SPACE):
        keys = store.concept_vectors(concept.name, space)
        index = library.index(space)
        if not len(keys) or index is None:
            continue
        radius = store.embedder.threshold(space, detector)
        if space == IMAGE_SPACE and retriever.threshold is not None:
            radius = retriever.threshold
        radius = min(radius, 4.0) if math.isinf(radius) else radius  # unit vectors are never 2 apart
        candidates |= within(index, keys, radius)
    photos = library.photos(library.region_photos(candidates).values(), since, until)
    has_faces = FACE_SPACE in store.spaces()
    found = []
    for photo in photos.values():
        mine = [c for c in counted(retriever, library.looked(photo.id), has_faces) if c.concept == concept.name]
        if mine:
            best = min(mine, key=lambda c: c.score)
            found.append(FoundPhoto(photo, best.box, best.distance, best.score, best.region, label(best)))
    found.sort(key=lambda f: (f.score, f.photo.path))
    return found[:limit]
