"""Search latency and memory of the concept index at N = 1k, 100k and 1M vectors.

Synthetic unit vectors shaped like a concept store's stand in for embeddings
(see ``concept_like``; uniform random vectors would be the worst case for an
approximate index, and unlike real embeddings). Queries are new images of
stored concepts. Reports p50/p95 latency of one query with k=5, the
index kind chosen automatically, recall@5 against exact search, and memory per
vector.

    python benchmarks/search_scaling.py --sizes 1000 100000 1000000 --dim 768
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import faiss
import numpy as np

from rap.store.vectors import VectorIndex


def rss_bytes() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * 4096


def concept_like(n: int, queries: int, dim: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Stored vectors and query vectors shaped like a concept store's.

    Three levels, as real embeddings are: categories (dog, mug, ...), concepts
    within a category, reference images of a concept. Spreads are set so that
    distances match what the offline encoder gives on real photos: same concept
    about 0.75 apart, other concepts of the category about 1.0, other
    categories about 1.3. A query is a *new* image of a stored concept.
    """
    categories = rng.normal(size=(max(1, n // 1000), dim)).astype(np.float32)
    concepts = categories[rng.integers(0, len(categories), n // 2)] + 0.75 * rng.normal(size=(n // 2, dim)).astype(np.float32)
    owner = np.arange(n) % len(concepts)
    images = concepts[owner] + 0.78 * rng.normal(size=(n, dim)).astype(np.float32)
    asked = rng.integers(0, len(concepts), queries)
    new_images = concepts[asked] + 0.78 * rng.normal(size=(queries, dim)).astype(np.float32)
    unit = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)  # noqa: E731
    return unit(images), unit(new_images)


def bench(n: int, dim: int, queries: int, seed: int = 0) -> dict[str, object]:
    rng = np.random.default_rng(seed)
    vectors, noisy = concept_like(n, queries, dim, rng)
    before = rss_bytes()
    start = time.perf_counter()
    index = VectorIndex(dim)
    step = max(1, n // 20)
    for begin in range(0, n, step):  # added in chunks, as a store grows
        end = min(n, begin + step)
        if index.needs_rebuild(end):  # as the store does: rebuilt from every stored vector
            index = VectorIndex.build(np.arange(end), vectors[:end], dim)
        else:
            index.add(np.arange(begin, end), vectors[begin:end])
    build_s = time.perf_counter() - start
    memory = rss_bytes() - before
    latencies = []
    found = []
    for query in noisy:
        start = time.perf_counter()
        _, ids = index.search(query[None], 5)
        latencies.append((time.perf_counter() - start) * 1000)
        found.append(ids[0])
    exact = faiss.IndexFlatL2(dim)
    exact.add(vectors)
    _, truth = exact.search(noisy, 5)
    recall = float(np.mean([len(set(t) & set(f)) / 5 for t, f in zip(truth.tolist(), np.array(found).tolist())]))
    return {
        "n": n,
        "dim": dim,
        "index": index.factory,
        "search_params": index.search_params,
        "build_s": round(build_s, 2),
        "p50_ms": round(float(np.percentile(latencies, 50)), 3),
        "p95_ms": round(float(np.percentile(latencies, 95)), 3),
        "recall_at_5_vs_exact": round(recall, 4),
        "bytes_per_vector": int(memory / n),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000, 100_000, 1_000_000])
    parser.add_argument("--dim", type=int, default=768, help="768: CLIP ViT-L/14; 1280: EfficientNet-Lite0")
    parser.add_argument("--queries", type=int, default=500)
    args = parser.parse_args()
    machine = f"{platform.processor() or platform.machine()}, {faiss.omp_get_max_threads()} threads"
    for n in args.sizes:
        result = bench(n, args.dim, args.queries) | {"machine": machine}
        print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
