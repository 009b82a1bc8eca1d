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
from collections.abc import Mapping, Sequence
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
    #: the same, per detector scheme, for the way the retriever uses it: the best
    #: of a query's regions (the whole image among them) against every key of a
    #: store. The more crops a query is cut into, the closer its best one comes
    #: to an unrelated key by chance, so a threshold calibrated on pairs of
    #: whole images admits strangers when applied to the best of ten crops
    detector_match_thresholds: Mapping[str, float] = {}
    #: a region's nearest concept counts only if its distance is at most this
    #: share of the distance to the region's second-nearest concept (Lowe's ratio
    #: test): among hundreds of concepts, a stranger lands near several at once,
    #: the concept a region shows stands apart. None: no such test
    distinct_ratio: float | None = None
    #: images per forward pass when embedding many
    batch_size: int = 16
    #: sha256 of the model file the vectors come from, where one file makes them: two
    #: processes with the same :attr:`id` but different files (a quantization made
    #: again, another version) would key one store with different vectors, so the
    #: store records it. None: not known
    model_digest: str | None = None

    def threshold_for(self, detector: str) -> float:
        """The match distance for the best region of a query cut by ``detector`` (an id or scheme).

        A detector not calibrated with this encoder gets the strictest calibrated
        value; ``none`` (whole images alone), if not calibrated, :attr:`match_threshold`.
        """
        scheme = detector.partition(":")[0]
        if scheme in self.detector_match_thresholds:
            return self.detector_match_thresholds[scheme]
        if scheme == "none" or not self.detector_match_thresholds:
            return self.match_threshold
        return min(self.detector_match_thresholds.values())

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
    #: distance under which a face alone admits a person: below the closest
    #: pairs of different people this analyzer is known to put together
    match_threshold: float
    #: distance under which a face confirms an image match of the person, and
    #: beyond which it rejects one (see rap.retrieval.evidence)
    confirm_threshold: float

    @abstractmethod
    def faces(self, image: Image.Image) -> list[Face]:
        """All faces in ``image``, largest first."""


def l2_normalize(vectors: np.ndarray) -> np.ndarray:
    """Row-normalise to unit length (zero rows stay zero) as float32."""
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.maximum(norms, 1e-12)
