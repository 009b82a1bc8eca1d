"""What an image encoder and a face analyzer are to the rest of rap.

The store keys every reference image by an embedding, and the retriever embeds
query regions with the same encoder. Vectors live in named *spaces*: ``image``
for the general encoder, ``face`` for face descriptors. Distances are only
compared within one space; each encoder states the distance under which two
embeddings show the same thing (``match_threshold``), which lets the retriever
rank matches from different spaces on one calibrated scale.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image

from rap.images import Box


class ImageEncoder(ABC):
    """Maps images to L2-normalised float32 vectors; Euclidean distance compares them."""

    #: canonical spec (``scheme:argument``); the store records it beside its vectors
    id: str
    #: length of each vector
    dim: int
    #: Euclidean distance (on normalised vectors, so in [0, 2]) under which two
    #: images are taken to show the same concept; calibrated per encoder
    match_threshold: float
    #: images per forward pass when embedding many
    batch_size: int = 16

    @abstractmethod
    def embed(self, images: Sequence[Image.Image]) -> np.ndarray:
        """Return an ``(len(images), dim)`` float32 array of unit-length rows."""


@dataclass(frozen=True)
class Face:
    """One face found in an image: where it is and its unit-length descriptor."""

    box: Box
    vector: np.ndarray


class FaceAnalyzer(ABC):
    """Finds faces and describes each with a vector in the ``face`` space."""

    id: str
    dim: int
    match_threshold: float

    @abstractmethod
    def faces(self, image: Image.Image) -> list[Face]:
        """All faces in ``image``, largest first."""


def l2_normalize(vectors: np.ndarray) -> np.ndarray:
    """Row-normalise to unit length (zero rows stay zero) as float32."""
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.maximum(norms, 1e-12)
