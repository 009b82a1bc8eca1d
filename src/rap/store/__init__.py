"""Concept stores: the interface, the embedded SQLite + FAISS store, and the registry that opens any store."""

from __future__ import annotations

from rap.store.base import ConceptStore, VectorHit
from rap.store.inputs import NewConcept
from rap.store.local import LocalConceptStore
from rap.store.registry import STORES, open_store

__all__ = ["STORES", "ConceptStore", "LocalConceptStore", "NewConcept", "VectorHit", "open_store"]
