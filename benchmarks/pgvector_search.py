"""Search latency and recall of the PostgreSQL + pgvector store, all users in one table.

N vectors are shared out among users the way a service holds them: one large
user with ``--share`` of them, one typical user with ``--small``, and many
others with about a thousand each, who are only there to be filtered out. Each
user is searched both ways the store can: exact (a scan of that user's rows)
and through the HNSW index with iterative scans (as when the user holds more
than ``pgvector_exact_below`` vectors), which is what that cutoff is chosen
from. Each search goes through ``PostgresConceptStore.search`` (user filter,
join to images and concepts) with k=5; recall@5 is against exact search over
that user's vectors. Beside it, the embedded store's index (FAISS, one store
per user) over the large user's vectors, on one thread (on a shared machine
FAISS's thread pool costs a single query more than it saves). Vectors are ``concept_like`` (see
search_scaling.py); a query is a stored vector of the user's plus noise of
norm 0.7, normalized: a new photo of a remembered concept.

The rows are loaded in bulk (COPY) and the HNSW index built after them, as a
migration of an existing library would; a store that grows by adds keeps the
same index up to date instead.

    python benchmarks/pgvector_search.py --sizes 10000 100000 1000000 --dim 768

Without ``--url`` it starts a throwaway server: the bundled one that ``rap db`` runs (the ``db`` extra).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import faiss
import numpy as np
import psycopg

sys.path.insert(0, str(Path(__file__).parent))
from search_scaling import concept_like  # noqa: E402

from rap.encoders import ENCODERS, ImageEncoder  # noqa: E402
from rap.settings import resolve  # noqa: E402
from rap.store.postgres_schema import ensure_hnsw_index, hnsw_index_name  # noqa: E402
from rap.store.postgres_server import new_database, throwaway_server  # noqa: E402
from rap.store.registry import open_store  # noqa: E402
from rap.store.vectors import VectorIndex  # noqa: E402

OTHERS_SIZE = 1000


class Unused(ImageEncoder):
    """Stands in for the encoder the store records; the benchmark writes vectors itself."""

    def __init__(self, argument: str, settings: object = None) -> None:
        self.id, self.dim, self.match_threshold = f"bench:{argument}", int(argument), 1.0

    def embed(self, images):  # pragma: no cover - never called
        raise NotImplementedError


ENCODERS.register("bench", help="benchmark stand-in")(Unused)


@contextmanager
def server(url: str | None) -> Iterator[str]:
    """The server at ``url``, or a throwaway one started for this run."""
    if url:
        yield url
        return
    with throwaway_server() as started:
        yield started


def load(url: str, vectors: np.ndarray, owners: np.ndarray, users: list[str]) -> float:
    """Write users, one concept and image per vector, the vectors; build the HNSW index. Returns its build time."""
    from pgvector.psycopg import register_vector

    dim = vectors.shape[1]
    with psycopg.connect(url, autocommit=True) as db:
        register_vector(db)
        ids = dict(db.execute("SELECT name, id FROM rap.users").fetchall())
        with db.cursor().copy("COPY rap.users (name) FROM STDIN") as copy:
            for name in users:
                if name not in ids:
                    copy.write_row((name,))
        ids = dict(db.execute("SELECT name, id FROM rap.users").fetchall())
        user_ids = np.array([ids[name] for name in users])[owners]
        db.execute("CREATE UNLOGGED TABLE staging (n bigint, user_id bigint, embedding vector)")
        with db.cursor().copy("COPY staging (n, user_id, embedding) FROM STDIN WITH (FORMAT BINARY)") as copy:
            copy.set_types(["int8", "int8", "vector"])
            for n in range(len(vectors)):
                copy.write_row((n, int(user_ids[n]), vectors[n]))
        db.execute(f"DROP INDEX IF EXISTS rap.{hnsw_index_name(dim)}")
        db.execute(
            "INSERT INTO rap.concepts (user_id, name, name_key, category, created_at, updated_at) "
            "SELECT user_id, 'c' || n, 'c' || n, 'object', now(), now() FROM staging"
        )
        db.execute(
            "INSERT INTO rap.images (user_id, number, concept_id, file, sha256, width, height, data) "
            "SELECT s.user_id, s.n + 1, c.id, 'images/x', 'x', 1, 1, '\\x00' FROM staging s "
            "JOIN rap.concepts c ON c.user_id = s.user_id AND c.name_key = 'c' || s.n"
        )
        db.execute(
            "INSERT INTO rap.vectors (user_id, image_id, space, dim, embedding) "
            f"SELECT s.user_id, i.id, 'image', {dim}, s.embedding FROM staging s "
            "JOIN rap.images i ON i.user_id = s.user_id AND i.number = s.n + 1"
        )
        db.execute("DROP TABLE staging")
        db.execute("SET maintenance_work_mem = '4GB'")
        db.execute(f"SET max_parallel_maintenance_workers = {max(0, (os.cpu_count() or 1) - 1)}")
        start = time.perf_counter()
        ensure_hnsw_index(db, dim)
        build_s = time.perf_counter() - start
        db.execute("VACUUM ANALYZE rap.vectors")
    return build_s


def measure(search, queries: np.ndarray, truth: list[set[int]]) -> dict[str, float]:
    latencies, hits = [], 0
    for query, expected in zip(queries, truth):
        start = time.perf_counter()
        found = search(query)
        latencies.append((time.perf_counter() - start) * 1000)
        hits += len(set(found) & expected)
    return {
        "p50_ms": round(float(np.percentile(latencies, 50)), 3),
        "p95_ms": round(float(np.percentile(latencies, 95)), 3),
        "recall_at_5_vs_exact": round(hits / (5 * len(queries)), 4),
    }


def bench(url: str, n: int, dim: int, queries: int, share: float, small: int, seed: int = 0) -> Iterator[dict[str, object]]:
    rng = np.random.default_rng(seed)
    vectors, _ = concept_like(n, 1, dim, rng)
    big = max(1, int(n * share))
    others = max(1, (n - big - small) // OTHERS_SIZE)
    users = ["big", "small", *(f"other{u}" for u in range(others))]
    owners = np.concatenate([np.zeros(big, int), np.ones(small, int), 2 + np.arange(n - big - small) % others])
    rng.shuffle(owners)
    database = new_database(url, f"bench_{n}")
    settings = resolve({"store_url": database}).settings
    cutoffs = {"pgvector exact": 10**12, "pgvector hnsw": 0}
    with open_store(settings, user="big", encoder=f"bench:{dim}", faces="none"):
        pass  # migrates the database and records the encoder
    build_s = load(database, vectors, owners, users)
    for user in ("big", "small"):
        mine = np.flatnonzero(owners == users.index(user))
        asked = vectors[rng.choice(mine, size=queries)]
        noisy = asked + rng.normal(scale=0.7 / np.sqrt(dim), size=asked.shape).astype(np.float32)
        noisy /= np.linalg.norm(noisy, axis=1, keepdims=True)
        truth = exact_truth(vectors[mine], mine, noisy)
        row: dict[str, object] = {"n": n, "dim": dim, "store": "postgres", "user": user, "user_vectors": len(mine)}
        for path, cutoff in cutoffs.items():
            forced = settings.model_copy(update={"pgvector_exact_below": cutoff})
            with open_store(forced, user=user, encoder=f"bench:{dim}", faces="none") as store:
                assert store.index_info()["image"]["factory"] == path
                figures = measure(
                    lambda q: [int(hit.concept[1:]) for hit in store.search("image", q[None], 5)[0]], noisy, truth
                )
            tuning = {"ef_search": settings.pgvector_ef_search} if cutoff == 0 else {}
            yield row | {"search": path, **tuning, "hnsw_build_s": round(build_s, 1)} | figures
        if user == "big":
            index = VectorIndex(dim)
            index.add(mine, vectors[mine])
            figures = measure(lambda q: index.search(q[None], 5)[1][0].tolist(), noisy, truth)
            yield {"n": len(mine), "dim": dim, "store": "embedded", "user": user, "user_vectors": len(mine), "search": index.factory} | figures


def exact_truth(vectors: np.ndarray, ids: np.ndarray, queries: np.ndarray) -> list[set[int]]:
    """The ids of the 5 nearest of ``vectors`` to each query, by brute force."""
    index = faiss.IndexFlatL2(vectors.shape[1])
    index.add(vectors)
    _, rows = index.search(queries, 5)
    return [set(ids[row].tolist()) for row in rows]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--dim", type=int, default=768, help="768: CLIP ViT-L/14; 1280: EfficientNet-Lite0")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--share", type=float, default=0.1, help="the large user's share of all vectors")
    parser.add_argument("--small", type=int, default=100, help="vectors of the typical user")
    parser.add_argument("--url", help="an existing PostgreSQL server with pgvector (default: start one)")
    args = parser.parse_args()
    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores"
    faiss.omp_set_num_threads(1)
    with server(args.url) as url:
        for n in args.sizes:
            for row in bench(url, n, args.dim, args.queries, args.share, min(args.small, n // 4)):
                print(json.dumps(row | {"machine": machine}), flush=True)


if __name__ == "__main__":
    main()
