"""Cost of remembering: adding one concept, and bulk import throughput.

Adds concepts from a folder of real photos (e.g. ../shared/data/dreambooth) to a
fresh store: first one at a time (encode, index, commit: what a user waits for
after `rap concept add`), then all at once through the batched import path.

    python benchmarks/store_ops.py ../shared/data/dreambooth --encoder offline:efficientnet-lite0
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

from rap import LocalConceptStore, NewConcept
from rap.settings import default, resolve


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("photos", type=Path, help="a folder of photos, searched recursively")
    parser.add_argument("--encoder", default=default("encoder"))
    parser.add_argument("--faces", default="none")
    parser.add_argument("--singles", type=int, default=30)
    args = parser.parse_args()
    photos = sorted(args.photos.rglob("*.jpg"))
    with tempfile.TemporaryDirectory() as scratch:
        start = time.perf_counter()
        store = LocalConceptStore(Path(scratch) / "one", encoder=args.encoder, faces=args.faces, settings=resolve().settings)
        store.embedder.encoder  # load the model: a one-off cost, reported apart
        load_s = time.perf_counter() - start
        times = []
        for n, photo in enumerate(photos[: args.singles]):
            start = time.perf_counter()
            store.add(f"c{n}", [photo], category="thing")
            times.append(time.perf_counter() - start)
        store.close()
        bulk = LocalConceptStore(Path(scratch) / "bulk", encoder=store.embedder.encoder, faces=args.faces)
        start = time.perf_counter()
        bulk.add_many([NewConcept(f"c{n}", [photo], category="thing") for n, photo in enumerate(photos)])
        bulk_s = time.perf_counter() - start
        bulk.close()
    print(
        json.dumps(
            {
                "encoder": args.encoder,
                "machine": f"{platform.machine()}, {__import__('os').cpu_count()} cores",
                "model_load_s": round(load_s, 2),
                "add_one_median_ms": round(1000 * statistics.median(times), 1),
                "add_one_p95_ms": round(1000 * sorted(times)[int(0.95 * (len(times) - 1))], 1),
                "bulk_images": len(photos),
                "bulk_images_per_s": round(len(photos) / bulk_s, 1),
            }
        )
    )


if __name__ == "__main__":
    main()
