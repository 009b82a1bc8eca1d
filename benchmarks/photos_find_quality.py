"""How well ``rap photos find`` answers "every photo of X" on the DreamBooth photos indexed as a library.

Every photo of ../shared/data/dreambooth (30 subjects, 4 to 6 photos each) is
indexed into one library with the default models; each subject is then
remembered from its first photo (``00.jpg``, category from
prompts_and_classes.txt) and ``find`` is asked for it at the default decision.
Precision and recall are counted over the subject's *other* photos (the
reference photo itself is left out of both). Nothing here is fitted: the
decision uses the store's calibrated distances, which were fitted elsewhere
(see BENCHMARKS.md, retrieval sections), so these photos did not tune them.

    python benchmarks/photos_find_quality.py --out /tmp/rap-photos-quality
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import time
from pathlib import Path

from rap import LocalConceptStore
from rap.photos import find_photos, index_photos, open_library
from rap.retrieval import Retriever

SOURCE = Path(__file__).resolve().parents[1] / ".." / ".." / "shared" / "data" / "dreambooth"


def categories(source: Path) -> dict[str, str]:
    """Subject folder to its class, read from the data set's own list (``subject_name,class``)."""
    found: dict[str, str] = {}
    for line in (source / "prompts_and_classes.txt").read_text().splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) == 2 and (source / parts[0]).is_dir():
            found[parts[0]] = parts[1]
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--source", type=Path, default=SOURCE)
    parser.add_argument("--out", type=Path, default=Path("/tmp/rap-photos-quality"))
    args = parser.parse_args()
    args.source = Path(os.path.abspath(args.source))  # the library keeps absolute paths
    shutil.rmtree(args.out, ignore_errors=True)
    classes = categories(args.source)
    subjects = sorted(p.name for p in args.source.iterdir() if p.is_dir())
    with LocalConceptStore(args.out / "store") as store, open_library(store) as library:
        retriever = Retriever(store)
        summary = index_photos(library, retriever, [args.source])
        for subject in subjects:
            store.add(subject, [args.source / subject / "00.jpg"], category=classes.get(subject, "object"))
        library.index("image")  # the FAISS cache is built once after indexing, not inside the first find
        rows, tp, fp, fn, walls, cpus = [], 0, 0, 0, [], []
        for subject in subjects:
            truth = {str(p) for p in (args.source / subject).glob("*.jpg") if p.name != "00.jpg"}
            wall, cpu = time.perf_counter(), time.process_time()
            answer = {f.photo.path for f in find_photos(library, retriever, subject, limit=10_000)}
            walls.append(time.perf_counter() - wall)
            cpus.append(time.process_time() - cpu)
            answer.discard(str(args.source / subject / "00.jpg"))
            hits = len(answer & truth)
            tp, fp, fn = tp + hits, fp + len(answer - truth), fn + len(truth - answer)
            rows.append({"subject": subject, "found": len(answer), "right": hits, "photos": len(truth)})
    print(json.dumps({
        "photos_indexed": summary.indexed, "failed": len(summary.failed), "subjects": len(subjects),
        "precision": round(tp / (tp + fp), 3) if tp + fp else None, "recall": round(tp / (tp + fn), 3) if tp + fn else None,
        "find_p50_ms": round(1000 * statistics.median(walls), 1), "find_p50_cpu_ms": round(1000 * statistics.median(cpus), 1),
        "per_subject": rows,
    }))


if __name__ == "__main__":
    main()
