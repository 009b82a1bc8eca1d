"""How well ``rap photos suggest`` groups the DreamBooth subjects when none is a concept yet.

Every photo of ../shared/data/dreambooth (30 subjects, 3 to 6 photos each) is
indexed into a library with the default models and no concept; ``suggest``
runs with ``--min-photos`` (3: the smallest subject has 3 photos). A group is
*right* when at least 80 % of its photos are one subject's; reported: groups,
right groups, and subjects with a right group of their own. The only constant
of suggest (``SAME_SUBJECT``, clusters merged when their photo sets overlap by
half) was chosen, not fitted, and not on these photos.

    python benchmarks/photos_suggest_quality.py --out /tmp/rap-photos-suggest
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
from collections import Counter
from pathlib import Path

from rap import LocalConceptStore
from rap.photos import index_photos, open_library, suggest_groups
from rap.retrieval import Retriever

SOURCE = Path(__file__).resolve().parents[1] / ".." / ".." / "shared" / "data" / "dreambooth"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--source", type=Path, default=SOURCE)
    parser.add_argument("--out", type=Path, default=Path("/tmp/rap-photos-suggest"))
    parser.add_argument("--min-photos", type=int, default=3)
    args = parser.parse_args()
    source = Path(os.path.abspath(args.source))
    shutil.rmtree(args.out, ignore_errors=True)
    with LocalConceptStore(args.out / "store") as store, open_library(store) as library:
        retriever = Retriever(store)
        summary = index_photos(library, retriever, [source])
        groups = suggest_groups(library, retriever, args.min_photos)
    right, subjects = 0, set()
    rows = []
    for group in groups:
        counts = Counter(Path(path).parent.name for path, _ in group.photos)
        subject, most = counts.most_common(1)[0]
        ok = most >= 0.8 * len(group.photos)
        right += ok
        if ok:
            subjects.add(subject)
        rows.append({"group": group.number, "space": group.space, "photos": len(group.photos), "subject": subject, "share": round(most / len(group.photos), 2)})
    print(json.dumps({
        "photos_indexed": summary.indexed, "subjects": len({p.parent.name for p in source.rglob("*.jpg")}),
        "groups": len(groups), "right_groups": right, "subjects_grouped": len(subjects), "groups_detail": rows[:40],
    }))


if __name__ == "__main__":
    main()
