"""The views of one reference image that key it: the whole image and its centre crops.

A user gives one photo of a concept; queries are cut into crops by the
detector, and a crop of a query is compared with the whole reference. When the
concept fills only part of the reference photo, a crop of the query showing
just the concept lies far from it. Keying the reference also by its centre
crops, at the multiscale detector's scales, puts a tighter view of the concept
on both sides (the paper augments its one reference image likewise). On the
DreamBooth photos with 620 distractor concepts this raised recall@1 from 0.86
to 0.95 (BENCHMARKS.md, "Retrieve: hard photos, and what comes back for a
stranger"). Stores keyed before this have one view per image until ``rap reembed``.
"""

from __future__ import annotations

from PIL import Image

from rap.detectors.proposals import DEFAULT_SCALES
from rap.images import MIN_SIDE, Box


MAX_VIEWS = 1 + len(DEFAULT_SCALES)
"""The most views (and so image vectors) one reference image has; small images have fewer, old stores one."""


def reference_views(image: Image.Image) -> list[tuple[Image.Image, Box | None]]:
    """The whole image (box None), then its centred crops at each scale, with their boxes."""
    views: list[tuple[Image.Image, Box | None]] = [(image, None)]
    for scale in DEFAULT_SCALES:
        width, height = round(image.width * scale), round(image.height * scale)
        if width < MIN_SIDE or height < MIN_SIDE:
            continue
        left, top = (image.width - width) // 2, (image.height - height) // 2
        box = (left, top, left + width, top + height)
        views.append((image.crop(box), box))
    return views
