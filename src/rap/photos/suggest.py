"""``rap photos suggest`` and ``name``: subjects that recur in your photos and are none of your concepts.

Faces and detector regions (never the whole image: that groups scenes, not
subjects) whose nearest concept is beyond its space's match distance are
clustered per space with scikit-learn's HDBSCAN, which needs no number of
groups and leaves what recurs nowhere as noise. A group counts its distinct
photos; each photo is represented by its region nearest the group's centre.
``name`` makes a group a concept from crops of its best photos.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np

from rap._imports import require
from rap.concepts import Concept
from rap.embedding import FACE_SPACE, IMAGE_SPACE
from rap.images import Box, LoadedImage, crop, load_image
from rap.photos.indexer import models_of
from rap.photos.library import PhotoLibrary
from rap.retrieval import Retriever

#: faces are cropped with this much of their size around them, so the store's face finder sees a head
FACE_MARGIN = 0.6
#: image regions are cropped as they were embedded
REGION_MARGIN = 0.0
#: two clusters whose photo sets overlap this much (Jaccard) are one subject seen through different
#: crops (the multiscale detector cuts one object several ways); chosen, not fitted
SAME_SUBJECT = 0.5


@dataclass(frozen=True)
class Group:
    """One recurring subject: its number (for ``name``), its space, and its photos' paths and boxes, best first."""

    number: int
    space: str
    photos: list[tuple[str, Box]]

    def to_dict(self, sample: int) -> dict[str, object]:
        return {
            "group": self.number, "space": self.space, "photos": len(self.photos),
            "sample": [{"path": p, "box": list(b)} for p, b in self.photos[:sample]],
        }


def suggest_groups(library: PhotoLibrary, retriever: Retriever, min_photos: int) -> list[Group]:
    """Groups of at least ``min_photos`` photos sharing a subject that matches no concept, largest first;
    remembered in the library so that ``name`` can take one by its number."""
    require("sklearn", "photos")
    from sklearn.cluster import HDBSCAN

    library.check_models(models_of(retriever))
    clusters: list[tuple[str, list[int]]] = []
    for space, sources in ((FACE_SPACE, ["face"]), (IMAGE_SPACE, ["detector"])):
        ids, vectors = library.vectors(space, sources)
        if len(ids) < min_photos:
            continue
        unknown = _unknown(retriever, space, vectors)
        ids, vectors = ids[unknown], vectors[unknown]
        if len(ids) < min_photos:
            continue
        labels = HDBSCAN(min_cluster_size=min_photos, copy=True).fit_predict(vectors)
        owners = library.region_photos(ids)
        for cluster in sorted(set(labels.tolist()) - {-1}):
            members = np.flatnonzero(labels == cluster)
            centre = vectors[members].mean(axis=0)
            order = members[np.argsort(np.linalg.norm(vectors[members] - centre, axis=1))]
            best: dict[int, int] = {}
            for i in order:  # the region nearest the centre stands for its photo
                best.setdefault(owners[int(ids[i])], int(ids[i]))
            if len(best) >= min_photos:
                clusters.append((space, best))
    clusters = _merged(clusters)
    library.save_groups([list(best.values()) for _, best in clusters])
    groups = []
    for number, (space, _) in enumerate(clusters, 1):
        groups.append(Group(number, space, [(photo.path, region.box) for photo, region in library.group(number)]))
    return groups


def _merged(clusters: list[tuple[str, dict[int, int]]]) -> list[tuple[str, dict[int, int]]]:
    """Clusters of one space that share most of their photos, merged, largest first; each photo
    keeps the region it has in the larger cluster."""
    merged: list[tuple[str, dict[int, int]]] = []
    for space, best in sorted(clusters, key=lambda c: -len(c[1])):
        for other_space, kept in merged:
            if other_space == space and len(kept.keys() & best.keys()) >= SAME_SUBJECT * len(kept.keys() | best.keys()):
                for photo, region in best.items():
                    kept.setdefault(photo, region)
                break
        else:
            merged.append((space, dict(best)))
    return sorted(merged, key=lambda c: -len(c[1]))


def _unknown(retriever: Retriever, space: str, vectors: np.ndarray) -> np.ndarray:
    """Which vectors are beyond their space's match distance from every concept's key."""
    store = retriever.store
    if space not in store.spaces():
        return np.ones(len(vectors), bool)
    limit = store.embedder.threshold(space, retriever.detector.id)
    hits = store.search(space, vectors, 1)
    return np.array([not row or row[0].distance > limit for row in hits], bool)


def name_group(
    library: PhotoLibrary, retriever: Retriever, number: int, name: str, *, category: str, references: int, info: str = ""
) -> Concept:
    """Make suggested group ``number`` the concept ``name``, its references cropped from the group's best photos."""
    members = library.group(number)[:references]
    images = []
    for photo, region in members:
        margin = FACE_MARGIN if region.space == FACE_SPACE else REGION_MARGIN
        loaded = load_image(photo.path)
        scale = loaded.image.width / (loaded.size[0] if loaded.size else loaded.image.width)
        box: Box = tuple(round(v * scale) for v in region.box)  # type: ignore[assignment]
        piece = crop(loaded.image, box, margin)
        buffer = io.BytesIO()
        piece.save(buffer, "PNG")
        images.append(LoadedImage(piece, buffer.getvalue(), "PNG"))
    return retriever.store.add(name, images, category=category, info=info)
