"""The multimodal retriever: which remembered concepts does this image (or text) show?

Following the paper (section 3.1, appendix C): regions of interest come from a
detector whose classes are the categories in the store; each crop is embedded
and matched against every key by Euclidean distance on unit vectors (FAISS);
the ``per_region_k`` nearest reference images of each region are kept, merged
across regions by distance, de-duplicated per concept, and the top K returned.

What the official code lacks, and this adds:

* the whole image is always a query too, so a photo where the detector finds
  nothing still retrieves;
* faces are matched in their own space with a face-recognition model, because
  CLIP-like encoders are weak on faces (as MyVLM found);
* each of the top K is labelled a match or not (:mod:`rap.retrieval.decision`),
  so "none of my concepts is here" is a possible answer that hides nothing from
  a model that can look: matches come first, then the closest non-matches,
  ranked on one scale, ``score`` = distance divided by the space's match
  distance, where ``score <= 1`` means "within it"; ``strict`` keeps only the
  matches;
* concepts named in the text are always retrieved, ahead of visual matches,
  with the label their visual evidence earns.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Collection, Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

import numpy as np
from cachetools import LRUCache
from PIL import Image

from rap.concepts import Concept
from rap.detectors import Region, RegionDetector, create_detector
from rap.embedding import FACE_SPACE, IMAGE_SPACE
from rap.encoders.base import Face
from rap.images import Box, ImageInput, crop, reduced
from rap import negatives
from rap.retrieval.decision import RECORD_KEY, OperatingPoint, decide, per_concept
from rap.retrieval.evidence import Candidate, PhotoEvidence, crowding
from rap.retrieval.text import candidate_names
from rap.settings import Settings, default
from rap.store.base import ConceptStore
from rap.threads import thread_imap

Query = ImageInput


@dataclass(frozen=True)
class RetrievedConcept:
    """One retrieved concept and why it was retrieved."""

    concept: Concept
    #: ``text`` if the user named it, else ``image``
    via: Literal["text", "image"]
    #: Euclidean distance of its best visual candidate (None if no region came near it)
    distance: float | None = None
    #: distance divided by its space's match distance in the operating point (<= 1: within it)
    score: float | None = None
    #: the query region of that candidate, in pixels of the query image
    box: Box | None = None
    #: what produced that region: ``image`` (whole image), ``detector`` or ``face``
    region: str | None = None
    #: whether the retriever's decision labels it present in the photo (False: a weak candidate, or no visual evidence)
    match: bool = False

    @property
    def space(self) -> str | None:
        """The space of its visual evidence: ``image`` or ``face`` (None: none)."""
        if self.region is None:
            return None
        return FACE_SPACE if self.region == "face" else IMAGE_SPACE

    @property
    def weak(self) -> bool:
        """Retrieved for its looks alone, yet not labelled a match: the model should doubt it."""
        return self.via == "image" and not self.match

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.concept.name,
            "category": self.concept.category,
            "via": self.via,
            "match": self.match,
            "space": self.space,
            "distance": None if self.distance is None else round(self.distance, 4),
            "score": None if self.score is None else round(self.score, 4),
            "box": list(self.box) if self.box else None,
            "region": self.region,
        }


@dataclass(frozen=True)
class Retrieval:
    """What the retriever found for one query."""

    concepts: list[RetrievedConcept]
    #: every region that was embedded as a query, the whole image first
    regions: list[Region] = field(default_factory=list)
    image_size: tuple[int, int] | None = None

    def names(self) -> list[str]:
        return [r.concept.name for r in self.concepts]

    def matches(self) -> list[str]:
        """The names labelled a match, best first."""
        return [r.concept.name for r in self.concepts if r.match]

    def to_dict(self) -> dict[str, Any]:
        return {
            "concepts": [r.to_dict() for r in self.concepts],
            "regions": [asdict(r) | {"box": list(r.box)} for r in self.regions],
            "image_size": list(self.image_size) if self.image_size else None,
        }


@dataclass(frozen=True)
class _Wanted:
    """What to compute for each query photo: read from the store once for a batch."""

    #: the store's categories, for the detector; None: the store is empty, the whole image is all
    categories: tuple[str, ...] | None
    image_vectors: bool
    faces: bool


_NO_VECTORS = np.zeros((0, 0), np.float32)


@dataclass(frozen=True)
class _Looked:
    """One query photo decoded at working size, cut into regions, embedded, and searched for faces."""

    image: Image.Image
    #: the full image's size, which boxes are reported in
    size: tuple[int, int]
    #: the whole image and the detector's regions, in working pixels
    regions: list[Region]
    #: one image-space vector per region (none when the store holds no image vectors)
    vectors: np.ndarray
    #: None when not looked for (the store holds no face vectors)
    faces: list[Face] | None

    def full_box(self, box: Box) -> Box:
        """``box`` (working pixels) in the full image's pixels."""
        sx, sy = self.size[0] / self.image.width, self.size[1] / self.image.height
        if sx == sy == 1:
            return box
        return (
            math.floor(box[0] * sx),
            math.floor(box[1] * sy),
            min(self.size[0], math.ceil(box[2] * sx)),
            min(self.size[1], math.ceil(box[3] * sy)),
        )

    def face_regions(self) -> list[Region]:
        return [Region(face.box, label="face", source="face") for face in self.faces or []]


def vote_box(best: Candidate, candidates: Sequence[Candidate], margin: float) -> Box:
    """The box of ``best`` refined by the regions nearly as close to the concept as it is.

    Region proposals are coarse (fixed scales and strides), so the best one is
    rarely tight; the boxes of regions within ``margin`` of its distance, each
    weighted by how close it comes, average out to a tighter box at no extra
    embedding cost (on 40 composites with known boxes, mean IoU 0.385 to 0.427,
    with the margin chosen on those same composites).
    """
    if margin <= 0:
        return best.box
    near = [(c, 1.0 - (c.distance - best.distance) / margin) for c in candidates if c.distance <= best.distance + margin]
    total = sum(weight for _, weight in near)
    if total <= 0:
        return best.box
    x0, y0, x1, y1 = (sum(c.box[i] * weight for c, weight in near) / total for i in range(4))
    return (round(x0), round(y0), round(x1), round(y1))


class Retriever:
    """Retrieves concepts from a store for images and text."""

    def __init__(
        self,
        store: ConceptStore,
        detector: str | RegionDetector | None = None,
        *,
        top_k: int | None = None,
        per_region_k: int | None = None,
        threshold: float | None = None,
        strict: bool = default("strict_matches"),
        whole_image: bool = True,
        image_side: int = default("image_side"),
        batch_images: int = default("batch_images"),
        locate_box_vote: float = default("locate_box_vote"),
        cpu_threads: int = default("cpu_threads"),
    ) -> None:
        self.store = store
        #: query photos are decoded with their shorter side reduced to this (boxes stay in full pixels)
        self.image_side = image_side
        #: photos decoded at once by :meth:`retrieve_many`
        self.batch_images = batch_images
        #: how far from the best region :meth:`locate` still lets regions vote on the box
        self.locate_box_vote = locate_box_vote
        #: photos decoded and searched for faces at once (0: every core; see rap.threads)
        self.cpu_threads = cpu_threads
        #: whether the whole image is a query beside the detector's regions (off only to measure)
        self.whole_image = whole_image
        # None: the built-in default (rap.settings.Settings), as for every setting
        self._detector = detector if detector is not None else default("detector")
        self.top_k = top_k if top_k is not None else default("top_k")
        self.per_region_k = per_region_k if per_region_k is not None else default("per_region_k")
        #: image-space distance threshold; None: the store's calibrated operating point, else the encoder's; inf keeps all
        self.threshold = threshold
        #: keep only the candidates labelled a match (the top K otherwise, each labelled)
        self.strict = strict
        self._recent: LRUCache[tuple[str, _Wanted, str], _Looked] = LRUCache(maxsize=4)
        self._recent_lock = threading.Lock()

    @classmethod
    def from_settings(
        cls, store: ConceptStore, settings: Settings, *, detector: str | RegionDetector | None = None, **overrides: Any
    ) -> Retriever:
        """The retriever the settings in force describe; ``overrides`` given as None keep the settings' values."""
        options: dict[str, Any] = {
            "top_k": settings.top_k,
            "per_region_k": settings.per_region_k,
            "threshold": settings.threshold,
            "strict": settings.strict_matches,
            "image_side": settings.image_side,
            "batch_images": settings.batch_images,
            "locate_box_vote": settings.locate_box_vote,
            "cpu_threads": settings.cpu_threads,
        }
        options.update({name: value for name, value in overrides.items() if value is not None})
        return cls(store, detector if detector is not None else settings.detector, **options)

    @property
    def detector(self) -> RegionDetector:
        if isinstance(self._detector, str):
            self._detector = create_detector(self._detector)
        return self._detector

    @cached_property
    def operating_point(self) -> OperatingPoint:
        """How this retriever labels matches: the threshold given, else the store's calibrated point, else the encoder's."""
        detector = self._detector if isinstance(self._detector, str) else self._detector.id  # a spec names it without loading it
        return OperatingPoint.of(
            self.store.embedder, self.store.encoder_id, detector, threshold=self.threshold, recorded=self.store.recorded(RECORD_KEY)
        )

    def retrieve(self, image: Query | None = None, text: str | None = None, k: int | None = None) -> Retrieval:
        """Concepts for one query: an image, a text, or both."""
        if image is None:
            return self._merge(text or "", [], k or self.top_k)
        return self.retrieve_batch([image], [text], k)[0]

    def retrieve_batch(
        self, images: Sequence[Query], texts: Sequence[str | None] | None = None, k: int | None = None
    ) -> list[Retrieval]:
        """Concepts for many images (see :meth:`retrieve_many`, which holds fewer results)."""
        return list(self.retrieve_many(images, texts, k))

    def retrieve_many(
        self, images: Sequence[Query], texts: Sequence[str | None] | None = None, k: int | None = None
    ) -> Iterator[Retrieval]:
        """Concepts for each image in turn, with at most :attr:`batch_images` photos decoded
        at once, so memory does not grow with the number of images (give paths or
        :class:`~rap.images.ImageFile` objects, not decoded images, for that).
        Photos are decoded, embedded and searched for faces on :attr:`cpu_threads`
        threads, side by side; a single photo's crops are embedded on all of them."""
        texts = list(texts) if texts is not None else [None] * len(images)
        if len(texts) != len(images):
            raise ValueError("give one text per image, or none")
        k = k or self.top_k
        for photo, text in zip(self._looked_many(images), texts):
            yield self._retrieval(photo, text, k)

    def evidence_many(self, images: Sequence[Query]) -> Iterator[PhotoEvidence]:
        """Each photo's evidence, undecided: for trying operating points on it (``rap calibrate``)."""
        for photo in self._looked_many(images):
            yield self._evidence(photo)

    def has_face_keys(self, names: Collection[str]) -> set[str]:
        """Which of ``names`` have stored faces (only they can be rejected by a photo's faces)."""
        return {n for n in names if len(self.store.concept_vectors(n, FACE_SPACE))}

    def _looked_many(self, images: Sequence[Query]) -> Iterator[_Looked]:
        wanted = self._wanted(faces=True)
        return thread_imap(lambda image: self._look(image, wanted), images, self.cpu_threads, window=self.batch_images)

    def _wanted(self, faces: bool) -> _Wanted:
        """What to compute for each photo, asked of the store once, before any thread starts."""
        if not len(self.store):
            return _Wanted(None, False, False)
        spaces = self.store.spaces()
        self.detector  # built here, not by two threads at once
        analyzer = self.store.embedder.face_analyzer
        return _Wanted(tuple(self.store.categories()), IMAGE_SPACE in spaces, faces and FACE_SPACE in spaces and analyzer is not None)

    def _look(self, image: Query, wanted: _Wanted) -> _Looked:
        """Decode, cut into regions, embed and find faces: one photo's share of the work,
        which runs beside other photos' on the threads of :mod:`rap.threads`."""
        picture, size = reduced(image, self.image_side)
        regions = [Region((0, 0, picture.width, picture.height), source="image")] if self.whole_image else []
        if wanted.categories is not None:
            regions += self.detector.detect([picture], wanted.categories)[0]
        embedder = self.store.embedder
        vectors = embedder.embed([crop(picture, r.box) for r in regions]) if wanted.image_vectors else _NO_VECTORS
        faces = embedder.face_analyzer.faces(picture) if wanted.faces and embedder.face_analyzer is not None else None
        return _Looked(picture, size, regions, vectors, faces)

    def _retrieval(self, photo: _Looked, text: str | None, k: int) -> Retrieval:
        decided = decide(self._evidence(photo), self.operating_point, self.has_face_keys)
        return Retrieval(
            self._merge(text or "", decided, k).concepts,
            regions=[replace(r, box=photo.full_box(r.box)) for r in photo.regions + photo.face_regions()],
            image_size=photo.size,
        )

    def _evidence(self, photo: _Looked) -> PhotoEvidence:
        """The photo's regions and faces matched against the store, boxes in full pixels."""
        by_image = self._match(IMAGE_SPACE, photo.vectors, photo.regions) if len(photo.vectors) else []
        by_face = self._match(FACE_SPACE, np.stack([f.vector for f in photo.faces]), photo.face_regions()) if photo.faces else []
        full = lambda found: [replace(c, box=photo.full_box(c.box)) for c in found]  # noqa: E731
        return PhotoEvidence(full(by_image), full(by_face), bool(photo.faces))

    def _match(self, space: str, vectors: np.ndarray, regions: list[Region]) -> list[Candidate]:
        """Each region's ``per_region_k`` nearest concepts, with how crowded the region's neighbourhood is."""
        found: list[Candidate] = []
        refused: dict[str, np.ndarray] = {}  # each concept's negatives, read once ("Not bo" in the web page)
        # Ask for more neighbours than needed: several may be images of one concept.
        for region, vector, region_hits in zip(regions, vectors, self.store.search(space, vectors, self.per_region_k * 4)):
            nearest: dict[str, float] = {}
            for hit in region_hits:
                if hit.concept in nearest:
                    continue
                if space == IMAGE_SPACE:
                    if hit.concept not in refused:
                        refused[hit.concept] = negatives.vectors(self.store, hit.concept)
                    if negatives.refuses(refused[hit.concept], vector, hit.distance):
                        continue
                nearest[hit.concept] = hit.distance
                if len(nearest) == max(self.per_region_k, 2):
                    break
            crowded = crowding(list(nearest.values())) if space == IMAGE_SPACE else None
            for concept, distance in list(nearest.items())[: self.per_region_k]:
                found.append(Candidate(concept, distance, region.box, region.source, crowded))
        return found

    def _looked_once(self, image: Query, faces: bool) -> _Looked:
        """:meth:`_look`, remembered for the last few image files, since "is X here?" is
        often asked of one photo for many X."""
        wanted = self._wanted(faces)
        key = (str(image), wanted, self.store.encoder_id) if isinstance(image, (str, Path)) else None
        if key is not None:
            with self._recent_lock:
                if key in self._recent:
                    return self._recent[key]
        looked = self._look(image, wanted)
        if key is not None:
            with self._recent_lock:
                self._recent[key] = looked
        return looked

    def locate(self, image: Query, name: str) -> RetrievedConcept:
        """Where one named concept best matches in ``image``, labelled a match or not.

        Every region (and face) is compared with the concept's own reference
        vectors directly, so the answer does not depend on the other concepts
        (no ratio test); the rest of the decision is retrieval's.
        """
        concept = self.store.get(name)
        references = self.store.concept_vectors(concept.name, IMAGE_SPACE)
        faces_of_concept = self.store.concept_vectors(concept.name, FACE_SPACE)
        photo = self._looked_once(image, bool(len(faces_of_concept)))
        found: dict[str, list[Candidate]] = {IMAGE_SPACE: [], FACE_SPACE: []}
        queries: list[tuple[str, np.ndarray, np.ndarray, list[Region]]] = []
        if len(references) and len(photo.vectors):
            queries.append((IMAGE_SPACE, photo.vectors, references, photo.regions))
        if photo.faces:
            queries.append((FACE_SPACE, np.stack([face.vector for face in photo.faces]), faces_of_concept, photo.face_regions()))
        for space, vectors, keys, space_regions in queries:
            distances = np.linalg.norm(vectors[:, None, :] - keys[None, :, :], axis=2).min(axis=1)
            for region, distance in zip(space_regions, distances.tolist()):
                found[space].append(Candidate(concept.name, distance, region.box, region.source))
        if not found[IMAGE_SPACE] and not found[FACE_SPACE]:
            return RetrievedConcept(concept, "image")
        evidence = PhotoEvidence(found[IMAGE_SPACE], found[FACE_SPACE], bool(found[FACE_SPACE]))
        [best] = per_concept(decide(evidence, self.operating_point, self.has_face_keys))
        if best.region != "face":
            best = replace(best, box=vote_box(best, found[IMAGE_SPACE], self.locate_box_vote))
        return _retrieved(concept, "image", replace(best, box=photo.full_box(best.box)))

    def _merge(self, text: str, decided: list[Candidate], k: int) -> Retrieval:
        """The named concepts, then the best visual ones up to ``k`` in all: matches first, each labelled."""
        best = per_concept(decided)
        named = self.store.lookup(candidate_names(text)) if text else []
        named_keys = {c.name for c in named}
        shown = [c for c in best if c.match] if self.strict else best
        visual = [c for c in shown if c.concept not in named_keys][: max(0, k - len(named))]
        by_name = {c.concept: c for c in best}
        concepts = {c.name: c for c in self.store.lookup([*named_keys, *(c.concept for c in visual)])}
        result = [_retrieved(concepts[c.name], "text", by_name.get(c.name)) for c in named]
        result += [_retrieved(concepts[c.concept], "image", c) for c in visual if c.concept in concepts]
        return Retrieval(result)


def _retrieved(concept: Concept, via: Literal["text", "image"], match: Candidate | None) -> RetrievedConcept:
    if match is None:
        return RetrievedConcept(concept, via)
    return RetrievedConcept(concept, via, match.distance, match.score, match.box, match.region, match.match)
