"""What callers hand a concept store: images in any form, new concepts, progress callbacks.

These types sit below both the store interface (:mod:`rap.store.base`) and the
checks every store runs before it writes (:mod:`rap.store.prepare`), so that
neither has to import the other's types.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path

from rap.concepts import DEFAULT_CATEGORY
from rap.images import ImageFile, LoadedImage

ImageSource = str | Path | ImageFile | LoadedImage
"""A reference image: a path, a file checked by its header, or an image already decoded."""
Progress = Callable[[int], None]
"""Called with the number of items just finished, for progress bars."""
ProgressFactory = Callable[[str, int], AbstractContextManager[Progress]]
"""Opens a progress display for ``total`` items with a description; yields its ``advance``."""


@dataclass
class NewConcept:
    """What a user gives to remember a concept (used for bulk adds)."""

    name: str
    images: Sequence[ImageSource]
    info: str = ""
    category: str = DEFAULT_CATEGORY
    attributes: Mapping[str, str] = field(default_factory=dict)
