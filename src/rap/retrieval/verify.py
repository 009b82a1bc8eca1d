"""Spatial verification: does a query photo show the very object of a reference image?

A global embedding says "a brown plush toy"; it cannot tell one brown plush toy
from another, nor a photo of the object from a photo of a similar scene.
Instance retrieval has long confirmed a candidate by geometry: local features
(SIFT) of the reference are matched to the query's, each match kept only when
clearly better than the second best (Lowe's ratio test), and a similarity
transform (rotation, scale, shift) fitted by RANSAC; the matches it explains,
its *inliers*, are evidence that the same textured surface is in both images.
Unrelated images leave a handful of inliers by chance; the same printed toy,
mug or sneaker leaves tens to hundreds.

It costs one feature extraction per query photo (on the reduced working image
the retriever already decoded) and one match per candidate verified, so it is
run for the top few candidates only; a reference's features are computed once
and kept (:class:`ReferenceFeatures`).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass

import numpy as np
from PIL import Image

from rap._imports import require
from rap.concepts import Concept
from rap.images import Box, load_image

#: Lowe's ratio: a match counts when its distance is under this share of the second best's
RATIO = 0.8
#: the most features kept per image (the strongest first): bounds time and memory
MAX_FEATURES = 500
#: the RANSAC reprojection tolerance, as a share of the query image's longer side
TOLERANCE = 0.01
#: fewer good matches than this cannot support a fitted transform: zero inliers
MIN_MATCHES = 4
#: a query region is widened by this share of its size on each side before features are found,
#: since the detector's boxes are coarse and may cut the object
REGION_MARGIN = 0.15


@dataclass(frozen=True)
class Features:
    """One image's local features: keypoint positions (N x 2) and SIFT descriptors (N x 128).

    SIFT's descriptor values are whole numbers 0 to 255, kept as bytes: a
    quarter of the memory of the float32 OpenCV returns, for the cache of references.
    """

    points: np.ndarray
    descriptors: np.ndarray
    #: the longer side of the image they were found in, in pixels
    side: int

    def __len__(self) -> int:
        return len(self.points)


def _gray(image: Image.Image, max_side: int) -> np.ndarray:
    """``image`` as 8-bit grey, reduced so that its longer side is at most ``max_side``."""
    grey = image.convert("L")
    scale = max_side / max(grey.size)
    if scale < 1:
        grey = grey.resize((max(1, round(grey.width * scale)), max(1, round(grey.height * scale))), Image.Resampling.BILINEAR)
    return np.asarray(grey)


_local = threading.local()


def _sift():  # type: ignore[no-untyped-def]
    """One SIFT extractor per thread: OpenCV's objects are not safe to share across threads."""
    if not hasattr(_local, "sift"):
        cv2 = require("cv2", "offline")
        # one photo's verification is small work; OpenCV's pool would compete with the encoder's threads
        cv2.setNumThreads(1)
        _local.sift = cv2.SIFT_create(nfeatures=MAX_FEATURES)
    return _local.sift


def features(image: Image.Image, max_side: int) -> Features:
    """SIFT keypoints and descriptors of ``image`` reduced to ``max_side`` (longer side)."""
    grey = _gray(image, max_side)
    keypoints, descriptors = _sift().detectAndCompute(grey, None)
    if descriptors is None or not keypoints:
        return Features(np.zeros((0, 2), np.float32), np.zeros((0, 128), np.uint8), max(grey.shape))
    points = np.array([k.pt for k in keypoints], np.float32)
    return Features(points, np.clip(np.rint(descriptors), 0, 255).astype(np.uint8), max(grey.shape))


def inliers(reference: Features, query: Features) -> int:
    """How many ratio-tested matches from ``reference`` to ``query`` one similarity transform explains."""
    if len(reference) < 2 or len(query) < 2:
        return 0
    cv2 = require("cv2", "offline")
    matcher = cv2.BFMatcher(cv2.NORM_L2)
    pairs = matcher.knnMatch(reference.descriptors.astype(np.float32), query.descriptors.astype(np.float32), k=2)
    good = [m for m, n in (p for p in pairs if len(p) == 2) if m.distance < RATIO * n.distance]
    if len(good) < MIN_MATCHES:
        return 0
    source = reference.points[[m.queryIdx for m in good]]
    target = query.points[[m.trainIdx for m in good]]
    _, mask = cv2.estimateAffinePartial2D(
        source, target, method=cv2.RANSAC, ransacReprojThreshold=max(2.0, TOLERANCE * query.side), maxIters=500, confidence=0.99, refineIters=0
    )
    if mask is None:
        return 0
    # one query point matched by several reference points is one piece of evidence
    return len({m.trainIdx for m, keep in zip(good, mask.ravel().tolist()) if keep})


class ReferenceFeatures:
    """Reference images' features, computed once each and kept for the most recent ``capacity``.

    ``load`` reads a reference image given its key (a store image's digest):
    a store's references do not change under a key, so a key's features never go stale.
    """

    def __init__(self, load: Callable[[Hashable], Image.Image], max_side: int, capacity: int = 256) -> None:
        self._load = load
        self.max_side = max_side
        self.capacity = capacity
        self._kept: OrderedDict[Hashable, Features] = OrderedDict()
        self._lock = threading.Lock()

    def __call__(self, key: Hashable) -> Features:
        with self._lock:
            if key in self._kept:
                self._kept.move_to_end(key)
                return self._kept[key]
        found = features(self._load(key), self.max_side)
        with self._lock:
            self._kept[key] = found
            while len(self._kept) > self.capacity:
                self._kept.popitem(last=False)
        return found


class Verifier:
    """Spatial verification against a store's concepts: the inliers of a concept's best reference image.

    Query features are found on the working image the retriever decoded (its
    shorter side ``image_side``), in the region that matched, widened by
    :data:`REGION_MARGIN`, reduced to ``query_side``; reference features on each
    reference image reduced to ``reference_side``.
    """

    def __init__(self, store: object, *, query_side: int, reference_side: int, capacity: int = 256) -> None:
        self.store = store
        self.query_side = query_side
        self._references = ReferenceFeatures(lambda file: load_image(store.image_path(str(file))).image, reference_side, capacity)  # type: ignore[attr-defined]

    def query(self, working: Image.Image, box: Box | None) -> Features:
        """Features of ``box`` (working pixels; None: the whole image), widened by the margin."""
        if box is not None:
            x0, y0, x1, y1 = box
            dx, dy = REGION_MARGIN * (x1 - x0), REGION_MARGIN * (y1 - y0)
            wide = (max(0, round(x0 - dx)), max(0, round(y0 - dy)), min(working.width, round(x1 + dx)), min(working.height, round(y1 + dy)))
            if wide[2] - wide[0] >= 8 and wide[3] - wide[1] >= 8:
                working = working.crop(wide)
        return features(working, self.query_side)

    def inliers(self, concept: Concept, query: Features) -> int:
        """The most inliers any of ``concept``'s reference images has with ``query``."""
        return max((inliers(self._references(image.file), query) for image in concept.images), default=0)
