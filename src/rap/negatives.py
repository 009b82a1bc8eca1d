"""Negatives: regions a user said are *not* a concept ("Not bo" on a wrong match).

Each is the image-space vector of the region that was wrongly matched, kept
with the store's per-owner records (:meth:`ConceptStore.record`), under the
concept's name key and with the encoder that made it, so a re-embedded store
ignores stale ones. The retriever reads them as evidence: a region nearer to
one of a concept's negatives than to every one of its reference images is not
that concept (:func:`refuses`).
"""

from __future__ import annotations

import base64
import json

import numpy as np

from rap.concepts import name_key
from rap.store.base import ConceptStore


def _key(name: str) -> str:
    return f"negatives:{name_key(name)}"


def vectors(store: ConceptStore, name: str) -> np.ndarray:
    """The concept's negatives made by the store's encoder, one row each (none: an empty array)."""
    raw = store.recorded(_key(name))
    kept = json.loads(raw) if raw else {}
    if kept.get("encoder") != store.encoder_id or not kept.get("vectors"):
        return np.zeros((0, 0), np.float32)
    return np.stack([np.frombuffer(base64.b64decode(v), np.float32) for v in kept["vectors"]])


def add(store: ConceptStore, name: str, vector: np.ndarray) -> int:
    """Record one more negative of ``name``; how many it now has."""
    rows = [*vectors(store, name), np.asarray(vector, np.float32).ravel()]
    encoded = [base64.b64encode(row.astype(np.float32).tobytes()).decode() for row in rows]
    store.record(_key(name), json.dumps({"encoder": store.encoder_id, "vectors": encoded}))
    return len(rows)


def forget(store: ConceptStore, name: str) -> None:
    """Drop a concept's negatives (it was deleted: a new concept of that name starts clean)."""
    store.record(_key(name), None)


def move(store: ConceptStore, old: str, new: str) -> None:
    """Carry a renamed concept's negatives to its new name."""
    if name_key(old) != name_key(new) and (raw := store.recorded(_key(old))):
        store.record(_key(new), raw)
        store.record(_key(old), None)


def refuses(negatives: np.ndarray, vector: np.ndarray, distance: float) -> bool:
    """Whether a region (``vector``, at ``distance`` from its nearest reference image) is nearer a negative."""
    return bool(len(negatives)) and float(np.linalg.norm(negatives - vector[None, :], axis=1).min()) < distance
