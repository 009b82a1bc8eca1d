"""Does ``rap calibrate`` hold on photos it did not see? Fit on one half, report on the other.

The DreamBooth subjects are split three ways as in ``hard_retrieval.py``
(``--rotation``): a third remembered (one concept each, from ``00.jpg``), a
third remembered too but never queried (more concepts to confuse, from their
``00.jpg``), a third never remembered. Two labelled folders are built, as a
user would lay them out for ``rap calibrate``:

* **fit**: every other query photo of each remembered subject, and the photos
  of half the never-remembered subjects in ``none/``;
* **report**: the remaining query photos, and the other never-remembered
  subjects' photos (strangers the fit never saw).

Then, through the command line: ``rap calibrate report/`` (the encoder's
operating point, on the report half), ``rap calibrate fit/ --apply`` (the
fitted point, its in-sample figures and its leave-one-out estimate), and
``rap calibrate report/`` again (the fitted point on the report half). One
JSON line per figure.

    python benchmarks/calibration_holdout.py ../shared/data/dreambooth --rotation 1
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from dreambooth_retrieval import subjects  # noqa: E402
from hard_retrieval import roles  # noqa: E402

from rap.cli import run  # noqa: E402


def rap(*args: str) -> dict:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = run([str(a) for a in args])
    if code:
        raise SystemExit(f"rap {' '.join(map(str, args))} exited {code}")
    return json.loads(out.getvalue().strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path)
    parser.add_argument("--rotation", type=int, default=1, choices=(0, 1, 2))
    parser.add_argument("--max-false-matches", type=float, default=0.15)
    parser.add_argument("--min-photos", type=int, help="calibrate_min_photos (default: the setting's)")
    args = parser.parse_args()
    if args.min_photos is not None:
        os.environ["RAP_CALIBRATE_MIN_PHOTOS"] = str(args.min_photos)
    classes = subjects(args.data)
    remembered, others, never = roles(sorted(classes), args.rotation)
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        db = ["--db", root / "db", "--faces", "none"]
        for name in remembered + others:
            rap(*db, "concept", "add", name, "-i", args.data / name / "00.jpg", "-c", classes[name], "--json")
        halves = {"fit": root / "fit", "report": root / "report"}
        for name in remembered:
            queries = sorted(p for p in (args.data / name).glob("*.jpg") if p.name != "00.jpg")
            for n, photo in enumerate(queries):
                target = halves["fit" if n % 2 == 0 else "report"] / name
                target.mkdir(parents=True, exist_ok=True)
                shutil.copy(photo, target / photo.name)
        for n, name in enumerate(never):
            target = halves["fit" if n % 2 == 0 else "report"] / "none"
            target.mkdir(parents=True, exist_ok=True)
            for photo in (args.data / name).glob("*.jpg"):
                shutil.copy(photo, target / f"{name}-{photo.name}")
        target = ["--max-false-matches", args.max_false_matches, "--json"]
        before = rap(*db, "calibrate", halves["report"], *target)
        fitted = rap(*db, "calibrate", halves["fit"], *target, "--apply")
        after = rap(*db, "calibrate", halves["report"], *target)
    point = fitted["proposed"]["operating_point"]
    rows = [
        ("encoder's point", "report", before["current"]["outcome"], before["current"]["operating_point"]),
        ("fitted", "fit (in-sample)", fitted["proposed"]["outcome"], point),
        ("fitted", "fit (leave-one-out)", fitted["proposed"]["held_out"], point),
        ("fitted", "report (held out)", after["current"]["outcome"], after["current"]["operating_point"]),
    ]
    for name, photos, outcome, used in rows:
        print(json.dumps({
            "data": str(args.data), "rotation": args.rotation, "concepts": len(remembered) + len(others), "point": name,
            "image_threshold": used["image_threshold"], "distinct_ratio": used["distinct_ratio"], "photos": photos,
            "acceptance": outcome["acceptance"], "false_match_rate": outcome["false_match_rate"],
            "concept_photos": outcome["concept_photos"], "none_photos": outcome["none_photos"],
        }))  # fmt: skip


if __name__ == "__main__":
    main()
