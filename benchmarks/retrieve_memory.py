"""Peak memory (RSS) of ``rap retrieve`` against the number of photos given.

Builds a small store from the photos' folder (one concept per subject folder,
keyed by its first photo), then runs ``rap retrieve --json`` in a fresh process
over 10, 100 and 1,000 photos (the folder's photos repeated, through symbolic
links, as often as needed) and reports each run's peak RSS. Memory must not
grow with the number of photos: each is checked by its header first and decoded
only when its batch comes.

    python benchmarks/retrieve_memory.py ../shared/data/dreambooth-full --counts 10,100,1000
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rap import LocalConceptStore, NewConcept


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("photos", type=Path, help="a folder of subject folders of photos (the DreamBooth layout)")
    parser.add_argument("--counts", default="10,100,1000", help="numbers of photos per run, comma-separated")
    parser.add_argument("--concepts", type=int, default=5, help="subjects remembered in the store")
    parser.add_argument("--detector", default=None, help="region detector (default: the settings' default)")
    args = parser.parse_args()
    photos = sorted(args.photos.rglob("*.jpg"))
    subjects = sorted({p.parent for p in photos})[: args.concepts]
    with tempfile.TemporaryDirectory() as scratch:
        db = Path(scratch) / "store"
        with LocalConceptStore(db) as store:
            store.add_many([NewConcept(s.name, [sorted(s.glob("*.jpg"))[0]]) for s in subjects])
        links = Path(scratch) / "photos"
        links.mkdir()
        for count in (int(c) for c in args.counts.split(",")):
            paths = []
            for n, photo in zip(range(count), itertools.cycle(photos)):
                link = links / f"{n:05d}.jpg"
                if not link.exists():
                    link.symlink_to(photo.resolve())
                paths.append(str(link))
            detector = ["--detector", args.detector] if args.detector else []
            command = [sys.executable, "-m", "rap", "--db", str(db), *detector, "retrieve", "--json", *paths]
            megapixels = sum(_megapixels(Path(p)) for p in paths)
            start = time.perf_counter()
            with open(os.devnull, "wb") as sink:
                process = subprocess.Popen(command, stdout=sink, stderr=subprocess.PIPE)
                _, status, usage = os.wait4(process.pid, 0)
            seconds = time.perf_counter() - start
            if status:
                sys.exit(f"rap retrieve failed: {process.stderr.read().decode()[-2000:] if process.stderr else status}")
            print(
                json.dumps(
                    {
                        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
                        "detector": args.detector or "default",
                        "photos": count,
                        "megapixels": round(megapixels),
                        "peak_rss_mb": round(usage.ru_maxrss / 1024),  # Linux reports kB
                        "seconds": round(seconds, 1),
                    }
                ),
                flush=True,
            )


def _megapixels(path: Path) -> float:
    from PIL import Image

    with Image.open(path) as image:
        return image.width * image.height / 1e6


if __name__ == "__main__":
    main()
