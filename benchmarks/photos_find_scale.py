"""``rap photos find`` at scale: the region search's latency and the recall of its approximate index.

Synthetic unit vectors, clustered around ``--clusters`` centres, stand in for a library's regions (``--photos`` x
``--regions``); for each of ``--concepts`` concepts, ``--appears`` photos hold
one region near one of the concept's three keys. The index is the one
``PhotoLibrary.index`` builds (``rap.store.vectors``: exact up to 20,000
vectors, IVF past that, nprobe calibrated), searched by ``rap.photos.find.within``
at the match radius; recall is against brute force over the same vectors. Timings are CPU and wall per find on a shared machine.

    python benchmarks/photos_find_scale.py --photos 100000 --regions 12 --dim 1280
"""

from __future__ import annotations

import argparse
import json
import resource
import time

import numpy as np

from rap.photos.find import within
from rap.store.vectors import VectorIndex


def unit(rows: np.ndarray) -> np.ndarray:
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


def exact_within(vectors: np.ndarray, queries: np.ndarray, radius: float) -> set[int]:
    """Ids within ``radius`` of any query, by brute force (the truth an approximate index is held to)."""
    found: set[int] = set()
    for start in range(0, len(vectors), 200_000):
        chunk = vectors[start : start + 200_000]
        squared = 2.0 - 2.0 * chunk @ queries.T  # unit vectors
        found.update((start + np.flatnonzero((squared <= radius**2).any(axis=1))).tolist())
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--photos", type=int, default=100_000)
    parser.add_argument("--regions", type=int, default=12)
    parser.add_argument("--dim", type=int, default=1280)
    parser.add_argument("--concepts", type=int, default=20)
    parser.add_argument("--appears", type=int, default=200)
    parser.add_argument("--clusters", type=int, default=2000)
    parser.add_argument("--radius", type=float, default=0.8)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    count = args.photos * args.regions
    # regions of real photos are clustered (many photos of similar things), not uniform on the sphere
    centres = unit(rng.standard_normal((args.clusters, args.dim), dtype=np.float32))
    vectors = np.empty((count, args.dim), np.float32)
    for start in range(0, count, 100_000):  # in chunks: float64 temporaries of 1.2 M x 1280 would not fit
        stop = min(count, start + 100_000)
        around = centres[rng.integers(0, args.clusters, size=stop - start)]
        vectors[start:stop] = unit(around + 0.03 * rng.standard_normal((stop - start, args.dim), dtype=np.float32))
    keys = unit(rng.standard_normal((args.concepts * 3, args.dim), dtype=np.float32))
    for c in range(args.concepts):
        rows = rng.choice(count, size=args.appears, replace=False)
        near = keys[c * 3 + rng.integers(0, 3, size=args.appears)]
        vectors[rows] = unit(near + 0.012 * rng.standard_normal((args.appears, args.dim), dtype=np.float32))
    truths = [exact_within(vectors, keys[c * 3 : c * 3 + 3], args.radius) for c in range(args.concepts)]
    ids = np.arange(count, dtype=np.int64)
    built = time.perf_counter()
    approximate = VectorIndex.build(ids, vectors, args.dim)
    build_s = time.perf_counter() - built
    del vectors  # the index holds its own copy
    walls, cpus, recalls = [], [], []
    for c in range(args.concepts):
        query = keys[c * 3 : c * 3 + 3]
        wall, cpu = time.perf_counter(), time.process_time()
        got = within(approximate, query, args.radius)
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
        truth = truths[c]
        recalls.append(len(got & truth) / len(truth) if truth else 1.0)
    print(json.dumps({
        "photos": args.photos, "vectors": count, "dim": args.dim, "index": approximate.factory,
        "search": approximate.search_params, "build_s": round(build_s, 1),
        "p50_ms": round(1000 * float(np.median(walls)), 2), "p50_cpu_ms": round(1000 * float(np.median(cpus)), 2),
        "recall_vs_exact": round(float(np.mean(recalls)), 4), "min_recall": round(float(np.min(recalls)), 4),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024,
    }))


if __name__ == "__main__":
    main()
