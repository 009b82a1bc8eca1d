"""A bounded, thread-safe memory of concept images' vision features.

In RAP every question shows the model the reference images of the retrieved
concepts beside the query photo. The query photo is new each time, but a
concept's reference image changes only when the user edits the concept, so
running the vision tower over it again on every question is wasted work. With
two concepts this saves two of the three vision-tower passes per question; for
LLaVA-1.5 (a 0.3B-parameter CLIP tower before a 7B or 13B language model) that
is a few percent of the time to the first token, more where the language model
is small or the tower runs on a CPU. A backend keeps what
its vision tower and projector made of each concept image here, keyed by the
image's SHA-256 (:attr:`Turn.image_keys <rap.generation.prompt.Turn.image_keys>`),
and reuses it. The oldest-used entries go first once ``capacity`` is reached,
which bounds the memory: each entry is one image's features on the model's
device (576 x 5120 values for LLaVA-1.5-13B, about 6 MB in bfloat16).

Values are opaque here (torch tensors in practice), so this module needs no torch.
The map is ``cachetools``' LRU cache; this class adds the lock that a server
answering several questions at once needs, and a capacity of 0 that keeps nothing.
"""

from __future__ import annotations

import threading
from typing import Generic, TypeVar

from cachetools import LRUCache

V = TypeVar("V")


class FeatureCache(Generic[V]):
    """Least-recently-used map from image key to features; capacity 0 keeps nothing."""

    def __init__(self, capacity: int) -> None:
        if capacity < 0:
            raise ValueError("capacity must be >= 0")
        self.capacity = capacity
        self._entries: LRUCache[str, V] = LRUCache(maxsize=capacity)
        self._lock = threading.Lock()  # a server answers several questions at once

    def get(self, key: str) -> V | None:
        """The features kept for ``key``, now marked most recently used; None if absent."""
        with self._lock:
            return self._entries.get(key)

    def put(self, key: str, value: V) -> None:
        """Keep ``value`` for ``key``, dropping the least recently used entry beyond capacity."""
        if self.capacity == 0:
            return
        with self._lock:
            self._entries[key] = value

    def __contains__(self, key: object) -> bool:
        with self._lock:
            return key in self._entries

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)
