"""What a region detector is to the retriever.

The paper finds regions of interest with an open-vocabulary detector whose
classes are the categories stored in the database; each region is cropped and
embedded as a query. Offline, where no detector weights exist, regions come from
a proposal method that needs no model. Either way a detector returns
:class:`Region` objects, and the retriever adds the whole image itself.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass

from PIL import Image

from rap.images import Box


@dataclass(frozen=True)
class Region:
    """A part of a query image that may show a concept."""

    box: Box
    #: the category the detector saw there (None for model-free proposals)
    label: str | None = None
    #: the detector's confidence in [0, 1] (None for model-free proposals)
    score: float | None = None
    #: what produced it: ``image`` (the whole image), ``detector`` or ``face``
    source: str = "detector"


class RegionDetector(ABC):
    """Proposes regions of interest, optionally guided by category names."""

    id: str

    @abstractmethod
    def detect(
        self, images: Sequence[Image.Image], categories: Sequence[str]
    ) -> list[list[Region]]:
        """Regions for each image, best first. ``categories`` may be empty."""
