"""Cost of checking every row's digest when a local store is opened.

Writes a store of random unit vectors (one concept and one image per vector)
through the schema's own functions, then times ``verify`` (every concept, image
and vector row against its digest, what each open does), and each table's
share, beside a plain read of the same vector blobs, warm (the file in the page cache, as on every open after
the first).

    python benchmarks/store_digests.py --vectors 3000 --dim 1280
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from rap.store.schema import DB_FILE, DIGESTED, changed_rows, connect, migrate, seal, verify


def build(db_file: Path, count: int, dim: int) -> None:
    db = connect(db_file, read_only=False)
    migrate(db)
    vectors = np.random.default_rng(0).standard_normal((count, dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    db.execute("BEGIN")
    for n, vector in enumerate(vectors):
        concept = db.execute(
            "INSERT INTO concepts (name, name_key, info, category, created_at, updated_at) VALUES (?, ?, ?, 'thing', 'now', 'now')",
            (f"c{n}", f"c{n}", f"concept number {n}"),
        ).lastrowid
        seal(db, "concepts", concept)
        image = db.execute(
            "INSERT INTO images (concept_id, file, sha256, width, height) VALUES (?, ?, ?, 512, 512)",
            (concept, f"images/{n:064x}.jpg", f"{n:064x}"),
        ).lastrowid
        seal(db, "images", image)
        seal(db, "vectors", db.execute("INSERT INTO vectors (image_id, space, vector) VALUES (?, 'image', ?)", (image, vector.tobytes())).lastrowid)
    db.execute("COMMIT")
    db.close()


def timed(action, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        action()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vectors", type=int, default=3000)
    parser.add_argument("--dim", type=int, default=1280)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        db_file = Path(scratch) / DB_FILE
        build(db_file, args.vectors, args.dim)
        db = connect(db_file, read_only=True)
        read_ms = timed(lambda: db.execute("SELECT vector FROM vectors").fetchall(), args.repeats)
        verify_ms = timed(lambda: verify(db, db_file), args.repeats)
        per_table = {f"verify_{table}_ms": round(timed(lambda: changed_rows(db, table), args.repeats), 1) for table in DIGESTED}
        db.close()
        size_mb = db_file.stat().st_size / 2**20
    print(
        json.dumps(
            {
                "machine": f"{platform.machine()}, {os.cpu_count()} cores",
                "vectors": args.vectors,
                "dim": args.dim,
                "database_mb": round(size_mb, 1),
                "read_vectors_ms": round(read_ms, 1),
                "verify_all_rows_ms": round(verify_ms, 1),
                **per_table,
            }
        )
    )


if __name__ == "__main__":
    main()
