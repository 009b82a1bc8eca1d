"""A FAISS index over one vector space, exact while small and approximate past that.

The index is a cache derived from the vectors kept in SQLite: its ids are the
vector rows' ids, so it can always be checked against, and rebuilt from, the
metadata (:meth:`VectorIndex.ids`). Nothing is ever read back out of an index
to rebuild another: a rebuild takes the vectors from SQLite, the source of truth.

Exact search (``IDMap2,Flat``) is used until ``approximate_above`` vectors; then
the index is rebuilt as ``IVF{nlist},Flat`` with ``nlist = 2 sqrt(N)``, retrained
each time it grows fourfold, and its ``nprobe`` is calibrated so that recall@5
stays at or above ``target_recall`` of exact search. IVF (not HNSW)
because a concept store is edited all the time, and IVF supports removing ids.
Every index is made by :func:`faiss.index_factory` from its factory string,
which the store records in its ``meta`` table, read back from the built index
by FAISS's ``reverse_index_factory``. Only FAISS's public API is used: the ids
an index holds come from a search of every list, its vectors from
``reconstruct`` (exact) or ``search_and_reconstruct`` (IVF), never from its
inverted lists or id map.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import faiss
import numpy as np
from faiss.contrib.factory_tools import reverse_index_factory

from rap.settings import default
from rap.store.files import temp_path

DEFAULT_APPROXIMATE_ABOVE = 20_000
TARGET_RECALL = 0.98
EXACT_FACTORY = "IDMap2,Flat"


def factory_for(count: int, approximate_above: int = DEFAULT_APPROXIMATE_ABOVE) -> str:
    """The factory string of the index that suits ``count`` vectors."""
    if count <= approximate_above:
        return EXACT_FACTORY
    # 2 sqrt(N) lists, retrained once the index holds nlist^2 = 4x what it was built on.
    return f"IVF{int(min(65536, max(64, round(2 * math.sqrt(count)))))},Flat"


class VectorIndex:
    """Ids to unit vectors, searched by Euclidean distance."""

    def __init__(
        self,
        dim: int,
        approximate_above: int = DEFAULT_APPROXIMATE_ABOVE,
        index: faiss.Index | None = None,
    ) -> None:
        self.dim = dim
        self.approximate_above = approximate_above
        self._index = index if index is not None else faiss.index_factory(dim, EXACT_FACTORY)
        self._ids: np.ndarray | None = None  # read from the index once, then kept in step with it

    @classmethod
    def build(
        cls,
        ids: np.ndarray,
        vectors: np.ndarray,
        dim: int,
        approximate_above: int = DEFAULT_APPROXIMATE_ABOVE,
        seed: int = 0,
    ) -> VectorIndex:
        """A new index of the kind that suits this many vectors, holding them all."""
        vectors = np.ascontiguousarray(vectors, dtype=np.float32).reshape(-1, dim)
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        index = faiss.index_factory(dim, factory_for(len(ids), approximate_above))
        if isinstance(index, faiss.IndexIVF):
            rng = np.random.default_rng(seed)
            sample = vectors[rng.choice(len(vectors), size=min(len(vectors), 40 * index.nlist), replace=False)]
            # 10 k-means rounds are enough for list assignment, and keep a rebuild at 1M vectors near 30 s on 2 cores
            lists = faiss.Kmeans(dim, index.nlist, niter=10, seed=seed)
            lists.train(sample)
            index.quantizer.add(lists.centroids)
            index.train(sample)  # its quantizer holds nlist centroids already: IVF keeps them
            index.add_with_ids(vectors, ids)
            index.nprobe = calibrate_nprobe(index, vectors, ids, rng, TARGET_RECALL)
        elif len(ids):
            index.add_with_ids(vectors, ids)
        return cls(dim, approximate_above, index)

    # -- what it is -------------------------------------------------------------
    @property
    def ntotal(self) -> int:
        return int(self._index.ntotal)

    @property
    def approximate(self) -> bool:
        return isinstance(self._index, faiss.IndexIVF)

    @property
    def factory(self) -> str:
        """The FAISS factory string this index was made from."""
        return str(reverse_index_factory(self._index))

    @property
    def search_params(self) -> str:
        return f"nprobe={self._index.nprobe}" if self.approximate else ""

    def ids(self) -> np.ndarray:
        """All ids in the index (int64, unordered): a range search of unbounded radius, every list probed."""
        if self._ids is None:
            if not self.ntotal:
                self._ids = np.empty(0, np.int64)
            else:
                query = np.zeros((1, self.dim), np.float32)
                params = faiss.SearchParametersIVF(nprobe=self._index.nlist) if self.approximate else None
                _, _, found = self._index.range_search(query, float("inf"), params=params)
                self._ids = found.astype(np.int64)
        return self._ids

    def holds(self, ids: np.ndarray, vectors: np.ndarray, atol: float = 1e-6) -> bool:
        """Whether the index holds each of ``vectors`` (rows) under its id in ``ids``, to check it against SQLite.

        An IVF index is asked for each vector's nearest neighbour in the list
        the vector belongs to (its own, if it is there); an exact one, for the
        vector under each id.
        """
        if not len(ids):
            return True
        vectors = np.ascontiguousarray(vectors, dtype=np.float32).reshape(-1, self.dim)
        if not self.approximate:
            held = np.stack([self._index.reconstruct(int(i)) for i in ids])
            return bool(np.allclose(held, vectors, atol=atol))
        _, found, held = self._index.search_and_reconstruct(vectors, 1, params=faiss.SearchParametersIVF(nprobe=1))
        # a vector stored twice under two ids may come back under either: what matters is that it is there
        return bool(np.allclose(held[:, 0], vectors, atol=atol) and np.isin(found[:, 0], ids).all())

    def needs_rebuild(self, count: int) -> bool:
        """Whether ``count`` vectors call for another kind of index than this one (see the module docstring)."""
        if count <= self.approximate_above:
            return False
        return not self.approximate or count > self._index.nlist**2

    # -- changing it ------------------------------------------------------------
    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        if len(ids):
            vectors = np.ascontiguousarray(vectors, dtype=np.float32).reshape(-1, self.dim)
            ids = np.ascontiguousarray(ids, dtype=np.int64)
            self._index.add_with_ids(vectors, ids)
            if self._ids is not None:
                self._ids = np.concatenate([self._ids, ids])

    def remove(self, ids: np.ndarray) -> None:
        if len(ids):
            ids = np.ascontiguousarray(ids, dtype=np.int64)
            self._index.remove_ids(ids)
            if self._ids is not None:
                self._ids = self._ids[~np.isin(self._ids, ids)]

    # -- using it ---------------------------------------------------------------
    def search(self, queries: np.ndarray, k: int, threads: int = default("search_threads")) -> tuple[np.ndarray, np.ndarray]:
        """Euclidean distances and ids of the ``k`` nearest, per query; id -1 pads. ``threads``: the
        setting ``search_threads``, which the store hands down."""
        queries = np.ascontiguousarray(queries, dtype=np.float32).reshape(-1, self.dim)
        k = max(1, min(k, self.ntotal)) if self.ntotal else 1
        if self.ntotal == 0:
            return np.full((len(queries), 1), np.inf, np.float32), np.full((len(queries), 1), -1, np.int64)
        with _faiss_threads(threads):
            squared, ids = self._index.search(queries, k)
        return np.sqrt(np.maximum(squared, 0.0)), ids

    # -- persistence ------------------------------------------------------------
    def save(self, path: Path) -> None:
        """Write atomically: a reader sees the old file or the new one, never half of one."""
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = temp_path(path)
        faiss.write_index(self._index, str(tmp))
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: Path, dim: int, approximate_above: int = DEFAULT_APPROXIMATE_ABOVE) -> VectorIndex | None:
        """The saved index, or None if it is missing, unreadable or of another dimension."""
        try:
            index = faiss.read_index(str(path))
        except (RuntimeError, OSError):
            return None
        if index.d != dim:
            return None
        if not isinstance(index, (faiss.IndexIVF, faiss.IndexIDMap2)):
            return None
        return cls(dim, approximate_above, index)


def calibrate_nprobe(
    index: faiss.IndexIVF,
    vectors: np.ndarray,
    ids: np.ndarray,
    rng: np.random.Generator,
    target_recall: float,
    k: int = 5,
    queries: int = 500,
) -> int:
    """Twice the smallest power-of-two ``nprobe`` whose recall@k reaches ``target_recall`` of exact.

    The factor of two is a safety margin: the estimate comes from a sample of
    queries, and a query set of another shape may need a little more.

    Queries are stored vectors with noise of norm 0.7 added, so that they fall
    near, not on, the stored points, as new photos of a remembered concept do
    (and farther than most of them: the calibration errs on the safe side).
    """
    sample = vectors[rng.choice(len(vectors), size=min(queries, len(vectors)), replace=False)]
    noisy = sample + rng.normal(scale=0.7 / math.sqrt(vectors.shape[1]), size=sample.shape).astype(np.float32)
    exact = faiss.IndexFlatL2(vectors.shape[1])
    exact.add(vectors)
    _, truth_rows = exact.search(noisy, k)
    truth = ids[truth_rows]
    nprobe = 1
    while nprobe < index.nlist:
        index.nprobe = nprobe
        _, found = index.search(noisy, k)
        hits = sum(len(set(t) & set(f)) for t, f in zip(truth.tolist(), found.tolist()))
        if hits / truth.size >= target_recall:
            return min(index.nlist, 2 * nprobe)
        nprobe *= 2
    return index.nlist


def damaged(vectors: np.ndarray) -> np.ndarray:
    """A mask of the rows that cannot be what an encoder stored: encoders store unit vectors (zero stays zero)."""
    with np.errstate(over="ignore", invalid="ignore"):  # damage can be any bit pattern: inf, nan, huge
        norms = np.linalg.norm(vectors.astype(np.float64), axis=1)
    return ~np.isfinite(norms) | ((np.abs(norms - 1.0) > 1e-3) & (norms != 0.0))


@contextmanager
def _faiss_threads(count: int) -> Iterator[None]:
    """FAISS searches on ``count`` OpenMP threads inside the block (0: its default, every core)."""
    if not count:
        yield
        return
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(count)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(before)
