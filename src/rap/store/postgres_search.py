"""Nearest reference images of one user, as a pgvector query: exact while the user is small, HNSW past that.

While a user has at most ``exact_below`` vectors in a space, the query orders
by the plain distance, which no index serves: PostgreSQL scans that user's rows
through the B-tree on ``(user_id, space, dim)`` and sorts them, exactly. Past
that it orders by the distance on ``embedding::vector(dim)``, the expression
the HNSW index of that dimension is built on, and pgvector's iterative scan
(set on the connection) keeps walking the graph until ``k`` rows pass the user
filter. BENCHMARKS.md measures both and how the cutoff was chosen.
"""

from __future__ import annotations

import numpy as np
import psycopg

from rap.store.base import VectorHit
from rap.store.postgres_schema import HNSW_MAX_DIM


def nearest(
    db: psycopg.Connection, user_id: int, space: str, queries: np.ndarray, k: int, exact_below: int
) -> list[list[VectorHit]]:
    """The ``k`` nearest of the user's vectors in ``space`` to each query, nearest first."""
    queries = np.atleast_2d(np.asarray(queries, np.float32))
    dim = queries.shape[1]
    held = db.execute(
        "SELECT count(*) FROM (SELECT 1 FROM rap.vectors WHERE user_id = %s AND space = %s AND dim = %s LIMIT %s) mine",
        (user_id, space, dim, exact_below + 1),
    ).fetchone()[0]
    if held == 0 or k < 1:
        return [[] for _ in range(len(queries))]
    distance = (
        f"embedding::vector({dim}) <-> %(q)s::vector({dim})"
        if held > exact_below and dim <= HNSW_MAX_DIM
        else "embedding <-> %(q)s"
    )
    statement = (
        "SELECT c.name, i.number, hit.distance FROM ("
        f"  SELECT image_id, {distance} AS distance FROM rap.vectors"
        "   WHERE user_id = %(u)s AND space = %(s)s AND dim = %(d)s ORDER BY distance LIMIT %(k)s"
        ") hit JOIN rap.images i ON i.id = hit.image_id JOIN rap.concepts c ON c.id = i.concept_id "
        "ORDER BY hit.distance"
    )
    return [
        [
            VectorHit(name, number, float(d))
            for name, number, d in db.execute(statement, {"q": query, "u": user_id, "s": space, "d": dim, "k": k})  # type: ignore[arg-type]
        ]
        for query in queries
    ]
