"""Concept stores: the interface, and the embedded SQLite + FAISS implementation."""

from __future__ import annotations

from rap.store.base import ConceptStore, NewConcept, VectorHit
from rap.store.local import LocalConceptStore

__all__ = ["ConceptStore", "LocalConceptStore", "NewConcept", "VectorHit"]
