"""Turning images into the store's vectors, with models loaded only when needed.

An :class:`Embedder` pairs the image encoder with the (optional) face analyzer.
Listing or editing text never loads a model; the first image that needs a
vector does. Every reference image gets a vector in the ``image`` space; a
reference image of a person concept also gets one in the ``face`` space when a
face is found in it, because general image encoders are weak on faces.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

import numpy as np
from PIL import Image

from rap.encoders import ENCODERS, FACE_ANALYZERS, FaceAnalyzer, ImageEncoder
from rap.images import Box
from rap.reference_views import reference_views
from rap.settings import Settings

IMAGE_SPACE = "image"
FACE_SPACE = "face"


@dataclass(frozen=True)
class SpaceVector:
    space: str
    vector: np.ndarray
    box: Box | None = None


class Embedder:
    """The models that key a store, named by spec and loaded lazily."""

    def __init__(
        self, encoder: str | ImageEncoder, faces: str | FaceAnalyzer | None, settings: Settings | None = None
    ) -> None:
        """``faces`` None (or ``"none"``) keys no face space. Models named by spec are built with
        ``settings`` (threads, runtime, cache folder, face side; None: the built-in defaults)."""
        self.settings = settings or Settings()
        if isinstance(encoder, str):
            self.encoder_id = ENCODERS.canonical(encoder)
            self._encoder_spec: str | None = encoder
        else:
            self.encoder_id, self._encoder_spec = encoder.id, None
            self.__dict__["encoder"] = encoder
        if faces is None or isinstance(faces, str):
            self.faces_id = FACE_ANALYZERS.canonical(faces or "none")
            self._faces_spec: str | None = faces or "none"
        else:
            self.faces_id, self._faces_spec = faces.id, None
            self.__dict__["face_analyzer"] = faces

    @cached_property
    def encoder(self) -> ImageEncoder:
        assert self._encoder_spec is not None
        return ENCODERS.create(self._encoder_spec, settings=self.settings)

    @cached_property
    def face_analyzer(self) -> FaceAnalyzer | None:
        assert self._faces_spec is not None
        return FACE_ANALYZERS.create(self._faces_spec, settings=self.settings)

    def load(self) -> None:
        """Load both models now rather than at first use: a store about to be made
        must not be left behind by a model that cannot load."""
        self.encoder, self.face_analyzer  # noqa: B018 (cached_property: reading loads)

    def threshold(self, space: str, detector: str = "none") -> float:
        """The distance under which a match in ``space`` counts, per the model's calibration
        for queries cut into regions by ``detector`` (faces are one region each)."""
        if space == FACE_SPACE and self.face_analyzer is not None:
            return self.face_analyzer.match_threshold
        return self.encoder.threshold_for(detector)

    def embed(self, images: Sequence[Image.Image]) -> np.ndarray:
        """Image-space vectors for many images (the encoder batches them)."""
        if not images:
            return np.empty((0, self.encoder.dim), np.float32)
        return self.encoder.embed(images)

    def reference_vectors(self, images: Sequence[Image.Image], is_person: Sequence[bool]) -> list[list[SpaceVector]]:
        """The vectors that key each reference image: one per view of it (the whole image
        first, see :mod:`rap.reference_views`), and its largest face for people."""
        views = [reference_views(image) for image in images]
        vectors = iter(self.embed([view for image_views in views for view, _ in image_views]))
        keyed: list[list[SpaceVector]] = []
        for image, image_views, person in zip(images, views, is_person):
            entry = [SpaceVector(IMAGE_SPACE, next(vectors), box) for _, box in image_views]
            if person and self.face_analyzer is not None:
                found = self.face_analyzer.faces(image)
                if found:
                    entry.append(SpaceVector(FACE_SPACE, found[0].vector, found[0].box))
            keyed.append(entry)
        return keyed
