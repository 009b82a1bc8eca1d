"""Model-free region proposals, for when no detector weights are available.

Offline, rap has no open-vocabulary detector, so it cannot ask "where is the
dog?". It can still offer the retriever a few crops in which a concept fills
more of the frame than in the whole image, which the retriever adds itself:

* ``multiscale[:S1,S2,...]``: fixed crops at a few scales (default ``0.75,0.5``):
  a centred crop at each, and the four corner crops at the smallest;
* ``selective-search[:N]``: OpenCV's Selective Search, the N largest distinct
  boxes (default 10);
* ``none``: no regions, whole-image queries only.

Every crop is embedded on the CPU, so each method returns about ten regions at
most. The box helpers at the bottom are shared with the open-vocabulary
detectors.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from PIL import Image

from rap._imports import require
from rap.detectors import DETECTORS
from rap.detectors.base import Region, RegionDetector
from rap.errors import InvalidInput, MissingDependency
from rap.images import MIN_SIDE, Box

DEFAULT_SCALES = (0.75, 0.5)
MAX_SCALES = 3
#: where, as a share of the free space, each crop of one scale sits: the centre
#: first, then the four corners
_ANCHORS = ((0.5, 0.5), (0.0, 0.0), (1.0, 0.0), (0.0, 1.0), (1.0, 1.0))

DEFAULT_PROPOSALS = 10
MAX_PROPOSALS = 100
#: Selective Search runs on a copy this long on its long side: ~0.2 s an image,
#: and a box of the smallest kept area is still ~40 px wide there
SEARCH_SIDE = 192
#: boxes under this share of the image are too small to hold a personal subject
MIN_AREA_SHARE = 0.05
#: slivers longer than this on one side rarely frame an object
MAX_ASPECT = 4.0
#: a box overlapping a kept one (or the whole image) more than this adds nothing
MAX_IOU = 0.7


class Multiscale(RegionDetector):
    """Fixed crops: per scale a centred crop, and the four corner crops at the ``corners`` scales.

    Personal photos, such as the DreamBooth subjects the paper evaluates on, show
    the subject large and near the centre. Crops of 3/4 and 1/2 the image's side
    give the encoder a tighter view of such a subject. The centre crops come
    first because that is where the subject most often is.

    Corners only at the smallest scale (six crops, not ten): every crop is an
    encoder run, the CPU's largest cost for a photo, and a 3/4 corner crop
    shares most of its pixels with the 3/4 centre crop and the whole image.
    Measured on DreamBooth (the tuning set; 30 subjects keyed by ``00.jpg``,
    128 queries, int8 encoder, best region against every key): recall@1 0.992
    with ten crops and 0.992 with six on the full-size photos (1.000 against
    0.992 on the 512-px ones), and as many queries within the multiscale match
    distance (0.984 and 0.984; 0.984 against 0.977). Dropping the 1/2 corners
    instead lost 3 to 5 of 128 accepted queries. A subset of the crops can only
    move a photo's best distance to a stranger away, so the calibrated
    thresholds admit no new false matches.
    """

    def __init__(self, scales: Sequence[float] = DEFAULT_SCALES, corners: Sequence[float] | None = None) -> None:
        """``corners``: the scales that also get corner crops; None: the smallest alone."""
        if not 1 <= len(scales) <= MAX_SCALES or not all(0 < s < 1 for s in scales):
            raise InvalidInput(
                f"multiscale takes 1 to {MAX_SCALES} scales between 0 and 1, "
                f"e.g. multiscale:0.75,0.5; got {list(scales)}"
            )
        self.scales = tuple(scales)
        self.corners = tuple(corners) if corners is not None else (min(self.scales),)
        self.id = "multiscale:" + ",".join(f"{s:g}" for s in self.scales)

    def boxes(self, size: tuple[int, int]) -> list[Box]:
        """The crops of an image of ``size`` (width, height), best first, without repeats."""
        width, height = size
        boxes: list[Box] = []
        for anchor_x, anchor_y in _ANCHORS:
            for scale in self.scales if (anchor_x, anchor_y) == _ANCHORS[0] else self.corners:
                w, h = round(width * scale), round(height * scale)
                if w < MIN_SIDE or h < MIN_SIDE:
                    continue  # too small to embed; see pixel_box
                x0, y0 = round((width - w) * anchor_x), round((height - h) * anchor_y)
                box = (x0, y0, x0 + w, y0 + h)
                if box not in boxes and box != (0, 0, width, height):
                    boxes.append(box)
        return boxes

    def detect(
        self, images: Sequence[Image.Image], categories: Sequence[str]
    ) -> list[list[Region]]:
        return [[Region(box) for box in self.boxes(image.size)] for image in images]


class SelectiveSearch(RegionDetector):
    """OpenCV's Selective Search (fast mode), reduced to a few large, distinct boxes.

    Selective Search returns hundreds of boxes in a randomised order, so rap sorts
    them by area, largest first (the subject of a personal photo is large), drops
    small boxes, slivers and near-duplicates, and keeps the first ``limit``. That
    makes the result deterministic, which the retriever's tests rely on.
    """

    def __init__(self, limit: int = DEFAULT_PROPOSALS) -> None:
        if not 1 <= limit <= MAX_PROPOSALS:
            raise InvalidInput(
                f"selective-search keeps 1 to {MAX_PROPOSALS} boxes, e.g. selective-search:10; got {limit}"
            )
        self.limit = limit
        self.id = f"selective-search:{limit}"
        self._cv2 = require("cv2", "offline")
        if not hasattr(self._cv2, "ximgproc"):
            raise MissingDependency(
                "selective-search needs OpenCV's contrib modules; run: "
                "pip uninstall opencv-python opencv-python-headless && pip install 'rap-mllm[offline]'"
            )
        # The search itself is single-threaded; OpenCV's thread pool would only
        # compete with torch's for the same cores while crops are embedded.
        self._cv2.setNumThreads(1)

    def boxes(self, image: Image.Image) -> list[Box]:
        """The kept boxes of ``image`` in its own pixel coordinates, largest first."""
        width, height = image.size
        scale = min(1.0, SEARCH_SIDE / max(width, height))
        small = image.convert("RGB")
        if scale < 1.0:
            small = small.resize(
                (max(1, round(width * scale)), max(1, round(height * scale))), Image.BILINEAR
            )
        search = self._cv2.ximgproc.segmentation.createSelectiveSearchSegmentation()
        search.setBaseImage(np.ascontiguousarray(np.asarray(small)[:, :, ::-1]))  # OpenCV wants BGR
        search.switchToSelectiveSearchFast()
        candidates = set()
        for x, y, w, h in search.process().tolist():
            box = pixel_box(
                (x / scale, y / scale, (x + w) / scale, (y + h) / scale), (width, height)
            )
            if box is None:
                continue
            bw, bh = box[2] - box[0], box[3] - box[1]
            if bw * bh >= MIN_AREA_SHARE * width * height and max(bw / bh, bh / bw) <= MAX_ASPECT:
                candidates.add(box)
        ranked = sorted(candidates, key=lambda b: (-area(b), b))
        keep = select_distinct(ranked, MAX_IOU, self.limit, exclude=[(0, 0, width, height)])
        return [ranked[i] for i in keep]

    def detect(
        self, images: Sequence[Image.Image], categories: Sequence[str]
    ) -> list[list[Region]]:
        return [[Region(box) for box in self.boxes(image)] for image in images]


class NoRegions(RegionDetector):
    """Proposes nothing: the retriever then queries with the whole image alone."""

    id = "none"

    def detect(
        self, images: Sequence[Image.Image], categories: Sequence[str]
    ) -> list[list[Region]]:
        return [[] for _ in images]


@DETECTORS.register(
    "multiscale",
    help="model-free crops: a centred crop per scale, four corner crops at the smallest (multiscale:0.75,0.5)",
    default_argument=",".join(f"{s:g}" for s in DEFAULT_SCALES),
)
def _multiscale(argument: str) -> RegionDetector:
    try:
        scales = [float(part) for part in argument.split(",")]
    except ValueError:
        raise InvalidInput(
            f"multiscale:{argument}: scales are numbers separated by commas, e.g. multiscale:0.75,0.5"
        ) from None
    return Multiscale(scales)


@DETECTORS.register(
    "selective-search",
    help="OpenCV Selective Search: the N largest distinct boxes (selective-search:10)",
    default_argument=str(DEFAULT_PROPOSALS),
)
def _selective_search(argument: str) -> RegionDetector:
    if not argument.isdigit():
        raise InvalidInput(
            f"selective-search:{argument}: the argument is a number of boxes, e.g. selective-search:10"
        )
    return SelectiveSearch(int(argument))


@DETECTORS.register("none", help="no regions: query with the whole image only")
def _none(argument: str) -> RegionDetector:
    if argument:
        raise InvalidInput(f"none:{argument}: the none detector takes no argument")
    return NoRegions()


def area(box: Box) -> int:
    return (box[2] - box[0]) * (box[3] - box[1])


def iou(a: Box, b: Box) -> float:
    """Intersection over union of two boxes (0 when either is empty)."""
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    if w <= 0 or h <= 0:
        return 0.0
    inter = w * h
    return inter / (area(a) + area(b) - inter)


def pixel_box(corners: Sequence[float], size: tuple[int, int]) -> Box | None:
    """Round float corners outwards to a pixel box clipped to ``size`` (width, height).

    Returns None when less than :data:`~rap.images.MIN_SIDE` pixels remain on a
    side: rap refuses images that small, so a crop that small is not worth embedding.
    """
    width, height = size
    x0, y0 = max(0, math.floor(corners[0])), max(0, math.floor(corners[1]))
    x1, y1 = min(width, math.ceil(corners[2])), min(height, math.ceil(corners[3]))
    if x1 - x0 < min(MIN_SIDE, width) or y1 - y0 < min(MIN_SIDE, height):
        return None
    return (x0, y0, x1, y1)


def select_distinct(
    boxes: Sequence[Box], max_iou: float, limit: int, exclude: Sequence[Box] = ()
) -> list[int]:
    """Greedy non-maximum suppression over ``boxes`` taken in the given (best-first) order.

    Returns the indices of up to ``limit`` boxes, each overlapping no earlier kept
    box, nor any box in ``exclude``, by an IoU above ``max_iou``.
    """
    kept: list[int] = []
    for i, box in enumerate(boxes):
        if len(kept) == limit:
            break
        if all(iou(box, other) <= max_iou for other in [*exclude, *(boxes[k] for k in kept)]):
            kept.append(i)
    return kept
