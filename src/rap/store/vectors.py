"""A FAISS index over one vector space, exact while small and approximate past that.

The index is a cache derived from the vectors kept in SQLite: its ids are the
vector rows' ids, so it can always be checked against, and repaired from, the
metadata by comparing id sets (:meth:`VectorIndex.ids`).

Exact search (``IDMap2,Flat``) is used until ``approximate_above`` vectors; then
the index is rebuilt as ``IVF{nlist},Flat`` with ``nlist = 2 sqrt(N)``, retrained
each time it grows fourfold, and its ``nprobe`` is calibrated so that recall@5
stays at or above ``target_recall`` of exact search. IVF (not HNSW)
because a concept store is edited all the time, and IVF supports removing ids.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import faiss
import numpy as np

DEFAULT_APPROXIMATE_ABOVE = 20_000
TARGET_RECALL = 0.98


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
        self._index = index if index is not None else faiss.IndexIDMap2(faiss.IndexFlatL2(dim))

    # -- what it is -------------------------------------------------------------
    @property
    def ntotal(self) -> int:
        return int(self._index.ntotal)

    @property
    def approximate(self) -> bool:
        return isinstance(self._index, faiss.IndexIVF)

    @property
    def factory(self) -> str:
        """The FAISS factory string that rebuilds this kind of index."""
        if self.approximate:
            return f"IVF{self._index.nlist},Flat"
        return "IDMap2,Flat"

    @property
    def search_params(self) -> str:
        return f"nprobe={self._index.nprobe}" if self.approximate else ""

    def ids(self) -> np.ndarray:
        """All ids in the index (int64, unordered)."""
        if not self.approximate:
            return faiss.vector_to_array(self._index.id_map).astype(np.int64)
        lists = self._index.invlists
        chunks = [
            faiss.rev_swig_ptr(lists.get_ids(i), lists.list_size(i)).copy()
            for i in range(lists.nlist)
            if lists.list_size(i)
        ]
        return np.concatenate(chunks).astype(np.int64) if chunks else np.empty(0, np.int64)

    # -- changing it ------------------------------------------------------------
    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        if len(ids) == 0:
            return
        vectors = np.ascontiguousarray(vectors, dtype=np.float32).reshape(-1, self.dim)
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        total = self.ntotal + len(ids)
        if total > self.approximate_above and (not self.approximate or total > self._index.nlist**2):
            # Past exact search's reach, or grown well beyond what the IVF was trained for.
            old_ids, old_vectors = self._all_vectors()
            self._index = build_ivf(np.concatenate([old_vectors, vectors]), np.concatenate([old_ids, ids]))
            return
        self._index.add_with_ids(vectors, ids)

    def remove(self, ids: np.ndarray) -> None:
        if len(ids):
            self._index.remove_ids(np.ascontiguousarray(ids, dtype=np.int64))

    def _all_vectors(self) -> tuple[np.ndarray, np.ndarray]:
        """Every (id, vector) held, read back from the index itself."""
        if not self.approximate:
            flat = faiss.downcast_index(self._index.index)
            vectors = faiss.rev_swig_ptr(flat.get_xb(), self.ntotal * self.dim)
            return self.ids(), vectors.reshape(-1, self.dim).copy()
        lists = self._index.invlists
        ids, vectors = [], []
        for i in range(lists.nlist):
            size = lists.list_size(i)
            if size:
                ids.append(faiss.rev_swig_ptr(lists.get_ids(i), size).copy())
                codes = faiss.rev_swig_ptr(lists.get_codes(i), size * lists.code_size)
                vectors.append(np.frombuffer(codes.tobytes(), np.float32).reshape(size, self.dim))
        if not ids:
            return np.empty(0, np.int64), np.empty((0, self.dim), np.float32)
        return np.concatenate(ids).astype(np.int64), np.concatenate(vectors)

    # -- using it ---------------------------------------------------------------
    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Euclidean distances and ids of the ``k`` nearest, per query; id -1 pads."""
        queries = np.ascontiguousarray(queries, dtype=np.float32).reshape(-1, self.dim)
        k = max(1, min(k, self.ntotal)) if self.ntotal else 1
        if self.ntotal == 0:
            return np.full((len(queries), 1), np.inf, np.float32), np.full((len(queries), 1), -1, np.int64)
        squared, ids = self._index.search(queries, k)
        return np.sqrt(np.maximum(squared, 0.0)), ids

    # -- persistence ------------------------------------------------------------
    def save(self, path: Path) -> None:
        """Write atomically: a reader sees the old file or the new one, never half of one."""
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
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


def build_ivf(vectors: np.ndarray, ids: np.ndarray, target_recall: float = TARGET_RECALL, seed: int = 0) -> faiss.IndexIVFFlat:
    """Train an IVF index on ``vectors`` and calibrate ``nprobe`` against exact search."""
    n, dim = vectors.shape
    # 2 sqrt(N) lists, retrained once the index holds nlist^2 = 4x what it was built on.
    nlist = int(min(65536, max(64, round(2 * math.sqrt(n)))))
    rng = np.random.default_rng(seed)
    train = vectors[rng.choice(n, size=min(n, 40 * nlist), replace=False)]
    quantizer = faiss.IndexFlatL2(dim)
    index = faiss.IndexIVFFlat(quantizer, dim, nlist)
    index.cp.niter = 10  # enough for list assignment; keeps a rebuild at 1M vectors near 30 s on 2 cores
    index.train(train)
    index.add_with_ids(vectors, ids)
    index.nprobe = calibrate_nprobe(index, vectors, ids, rng, target_recall)
    return index


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
