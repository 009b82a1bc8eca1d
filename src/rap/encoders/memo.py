"""Encoders that remember what they computed, by the image's pixels.

``rap eval retrieval`` asks each photo three ways: the whole image, the
detector's regions, and both. Each way decodes the photo and crops the same
boxes again, so the crops' pixels repeat exactly; wrapped in these, the models
embed each distinct crop, and look for faces in each distinct photo, once.
Only the last few images are remembered, so memory stays flat however many
photos are asked.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

import numpy as np
from cachetools import LRUCache
from PIL import Image

from rap.encoders.base import Face, FaceAnalyzer, ImageEncoder

REMEMBERED = 64
"""Distinct images each wrapper remembers: the crops of a few photos (a photo is
some eleven), enough for one photo's three ways asked one after another."""

T = TypeVar("T")


def pixel_key(image: Image.Image) -> bytes:
    """A digest of ``image``'s mode, size and pixels: equal only for equal images."""
    digest = hashlib.blake2b(f"{image.mode} {image.size}".encode(), digest_size=16)
    digest.update(image.tobytes())
    return digest.digest()


class _Recent(Generic[T]):
    """The last :data:`REMEMBERED` results, by pixel key: a ``cachetools`` LRU cache that
    computes what it lacks in one batch, the cache's lock released while it does."""

    def __init__(self) -> None:
        self._values: LRUCache[bytes, T] = LRUCache(maxsize=REMEMBERED)
        self._lock = threading.Lock()  # several threads may ask at once (rap.threads)

    def get_or_compute(self, keys: list[bytes], compute: Callable[[list[int]], list[T]]) -> list[T]:
        """The results for ``keys``; ``compute`` is given the positions of those not remembered."""
        first = {key: n for n, key in reversed(list(enumerate(keys)))}  # repeats computed once
        with self._lock:
            known = {key: self._values[key] for key in first if key in self._values}
        missing = sorted(n for key, n in first.items() if key not in known)
        for n, value in zip(missing, compute(missing) if missing else []):
            known[keys[n]] = value
        with self._lock:
            for key in keys:
                self._values[key] = known[key]
        return [known[key] for key in keys]


class RememberingEncoder(ImageEncoder):
    """``encoder``, embedding each distinct image once."""

    def __init__(self, encoder: ImageEncoder) -> None:
        self.encoder = encoder
        self.id, self.dim, self.match_threshold = encoder.id, encoder.dim, encoder.match_threshold
        # the calibration the retriever's decision reads, which a copy must keep
        self.detector_match_thresholds, self.distinct_ratio = encoder.detector_match_thresholds, encoder.distinct_ratio
        self.batch_size = encoder.batch_size
        self._recent: _Recent[np.ndarray] = _Recent()

    def embed(self, images: Sequence[Image.Image]) -> np.ndarray:
        keys = [pixel_key(image) for image in images]
        rows = self._recent.get_or_compute(keys, lambda missing: list(self.encoder.embed([images[n] for n in missing])))
        return np.stack(rows) if rows else np.zeros((0, self.dim), dtype=np.float32)


class RememberingFaceAnalyzer(FaceAnalyzer):
    """``analyzer``, looking for faces in each distinct image once."""

    def __init__(self, analyzer: FaceAnalyzer) -> None:
        self.analyzer = analyzer
        self.id, self.dim, self.match_threshold = analyzer.id, analyzer.dim, analyzer.match_threshold
        self.confirm_threshold = analyzer.confirm_threshold
        self._recent: _Recent[list[Face]] = _Recent()

    def faces(self, image: Image.Image) -> list[Face]:
        return self._recent.get_or_compute([pixel_key(image)], lambda missing: [self.analyzer.faces(image)])[0]
