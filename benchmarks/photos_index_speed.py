"""Indexing speed of ``rap photos index`` on full-size photos, and its peak memory at two library sizes.

Distinct photos are made from ../shared/data/dreambooth-full (camera size) by
crops, flips and colour shifts; each size is indexed by a fresh process with the
default models (``Settings``), and that process's peak RSS is read afterwards.
The machine is shared by other workers: CPU ms per photo is the steady figure,
photos/s depends on the load.

    python benchmarks/photos_index_speed.py --counts 60 180 --out /tmp/photos-bench
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
from pathlib import Path

from PIL import Image, ImageEnhance, ImageOps

SOURCE = Path(__file__).resolve().parents[1] / ".." / ".." / "shared" / "data" / "dreambooth-full"


def make_photos(source: Path, folder: Path, count: int) -> None:
    """``count`` distinct full-size photos: the i-th source photo, cropped, maybe flipped and colour-shifted."""
    originals = sorted(p for p in source.rglob("*.jpg"))
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        target = folder / f"{i:05d}.jpg"
        if target.exists():
            continue
        image = ImageOps.exif_transpose(Image.open(originals[i % len(originals)])).convert("RGB")
        w, h = image.size
        cut = 0.02 + 0.01 * (i // len(originals))
        image = image.crop((int(w * cut), int(h * cut), int(w * (1 - cut)), int(h * (1 - cut))))
        if (i // len(originals)) % 2:
            image = ImageOps.mirror(image)
        image = ImageEnhance.Color(image).enhance(0.9 + 0.05 * (i % 5))
        image.save(target, quality=90)


def index_once(store: Path, folder: Path) -> dict[str, object]:
    """One fresh process indexes ``folder`` into a new store; its summary and peak RSS."""
    code = (
        "import json, resource, sys\n"
        "from pathlib import Path\n"
        "from rap import LocalConceptStore\n"
        "from rap.photos import index_photos, open_library\n"
        "from rap.retrieval import Retriever\n"
        "with LocalConceptStore(sys.argv[1]) as store, open_library(store) as library:\n"
        "    summary = index_photos(library, Retriever(store), [Path(sys.argv[2])])\n"
        "print(json.dumps(summary.to_dict() | {'peak_rss_mb': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code, str(store), str(folder)], check=True, capture_output=True, text=True)
    return json.loads(out.stdout.splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--source", type=Path, default=SOURCE)
    parser.add_argument("--counts", type=int, nargs="+", default=[60, 180])
    parser.add_argument("--out", type=Path, default=Path("/tmp/rap-photos-bench"))
    args = parser.parse_args()
    for count in args.counts:
        folder = args.out / f"photos-{count}"
        make_photos(args.source, folder, count)
        side = Image.open(next(folder.glob("*.jpg"))).size
        result = index_once(args.out / f"store-{count}", folder)
        failures = result.pop("failures")
        print(json.dumps({"photos": count, "example_size": side, **result, "failures": failures[:3]}))
    print(json.dumps({"harness_peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


if __name__ == "__main__":
    main()
