"""The FAISS index of one vector space, exact and approximate, through FAISS's public API only."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from rap.store.vectors import EXACT_FACTORY, VectorIndex


def _unit(rows: int, dim: int, seed: int) -> np.ndarray:
    vectors = np.random.default_rng(seed).normal(size=(rows, dim)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


@pytest.mark.parametrize("approximate_above", [10_000, 500], ids=["exact", "ivf"])
def test_an_index_knows_its_ids_vectors_and_factory(tmp_path: Path, approximate_above: int) -> None:
    vectors = _unit(3000, 16, seed=0)
    ids = np.random.default_rng(1).permutation(10**6)[:3000].astype(np.int64)
    index = VectorIndex.build(ids, vectors, 16, approximate_above)
    assert index.approximate == (approximate_above < 3000)
    assert index.factory == (EXACT_FACTORY if not index.approximate else "IVF110,Flat")
    index.remove(ids[:10])
    index.add(ids[:2], vectors[:2])  # back, under the same ids
    kept = np.concatenate([ids[10:], ids[:2]])
    index.save(tmp_path / "image.faiss")
    loaded = VectorIndex.load(tmp_path / "image.faiss", 16, approximate_above)
    assert loaded is not None and loaded.factory == index.factory
    for one in (index, loaded):
        assert np.array_equal(np.sort(one.ids()), np.sort(kept))
        assert one.holds(kept, np.concatenate([vectors[10:], vectors[:2]]))
        changed = vectors[10:20].copy()
        changed[3] = _unit(1, 16, seed=2)[0]
        assert not one.holds(ids[10:20], changed)
    _, nearest = loaded.search(vectors[500:510], 1)
    assert nearest[:, 0].tolist() == ids[500:510].tolist()


def test_an_empty_index_holds_nothing() -> None:
    index = VectorIndex(8)
    assert index.ids().tolist() == [] and index.holds(np.empty(0, np.int64), np.empty((0, 8), np.float32))
