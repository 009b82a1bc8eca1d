"""The avatar protocol: a retrieval set of a different character, kept for reporting only.

Today's DreamBooth protocol (``hard_retrieval.py``) remembers a subject from a
whole photo in which it is large and queries it with other whole photos in
which it is large too: the constants fitted there need not hold for a user who
remembers a concept from a tight crop (an avatar) and asks about phone photos
in which it fills a moderate part of a cluttered scene. This set is built that
way, from the same photos:

* each **remembered** subject is keyed by one tight crop of its ``00.jpg``, the
  box drawn once by eye and committed in ``avatar_crops.json``;
* each of its other photos is a **query**, pasted whole, at a random 10 to 30 %
  of the frame's area and a random place, into a photo of a subject that is
  never remembered (an unrelated cluttered background with its own subject);
* every photo of a **never-remembered** subject, pasted likewise into another
  never-remembered subject's photo, is a query that should match nothing;
* **distractor** concepts (for N of about 630) are cut from the third part of
  the subjects as ``hard_retrieval.distractor`` cuts them.

The roles rotate as in ``hard_retrieval.roles`` so every subject is remembered
once over three rotations. Everything is drawn from ``random.Random`` seeded by
the seed and the rotation, and the files are written in a fixed order, so one
seed always gives the same bytes. Nothing here is ever used to fit a constant.

    python benchmarks/avatar_set.py ../shared/data/dreambooth-full OUT --rotation 0
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from dreambooth_retrieval import subjects  # noqa: E402

CROPS = Path(__file__).resolve().parent / "avatar_crops.json"
#: the share of the frame's area the pasted photo covers
AREA = (0.10, 0.30)
JPEG_QUALITY = 92


@dataclass(frozen=True)
class Query:
    """One composited query photo: which remembered subject it shows (None: a stranger's photo)."""

    path: str
    truth: str | None
    #: the subject's photo that was pasted, and the background photo it was pasted into
    source: str
    background: str
    #: where the pasted photo lies, in the query's pixels
    box: tuple[int, int, int, int]


@dataclass(frozen=True)
class AvatarSet:
    """One rotation of the avatar protocol, its files written under one folder."""

    #: remembered subject -> (category, path of its reference crop)
    remembered: dict[str, tuple[str, str]]
    #: subjects whose photos distractor concepts are cut from (by the caller), and their class
    distractor_sources: dict[str, str]
    strangers: list[str]
    queries: list[Query]

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1, sort_keys=True)


def roles(names: list[str], rotation: int) -> tuple[list[str], list[str], list[str]]:
    """Remembered, distractor-source and never-remembered subjects (``hard_retrieval``'s split)."""
    parts: tuple[list[str], list[str], list[str]] = ([], [], [])
    for i, name in enumerate(names):
        parts[(i + rotation) % 3].append(name)
    return parts


def tight_crop(image: Image.Image, fractions: list[float]) -> Image.Image:
    """The subject's box, given as fractions of the photo's sides."""
    w, h = image.size
    x0, y0, x1, y1 = fractions
    return image.crop((round(x0 * w), round(y0 * h), round(x1 * w), round(y1 * h)))


def composite(subject: Image.Image, background: Image.Image, rng: random.Random) -> tuple[Image.Image, tuple[int, int, int, int]]:
    """``subject`` pasted into a copy of ``background`` over a random share of its area (see AREA)."""
    frame = background.convert("RGB").copy()
    share = rng.uniform(*AREA)
    aspect = subject.width / subject.height
    height = round((share * frame.width * frame.height / aspect) ** 0.5)
    width = round(height * aspect)
    if width > frame.width or height > frame.height:  # a very wide subject in a narrow frame
        fit = min(frame.width / width, frame.height / height)
        width, height = int(width * fit), int(height * fit)
    x, y = rng.randint(0, frame.width - width), rng.randint(0, frame.height - height)
    frame.paste(subject.convert("RGB").resize((width, height), Image.Resampling.LANCZOS), (x, y))
    return frame, (x, y, x + width, y + height)


def photos(root: Path, subject: str) -> list[Path]:
    return sorted((root / subject).glob("*.jpg"))


def build(root: Path, out: Path, rotation: int, seed: int = 0, crops: Path = CROPS) -> AvatarSet:
    """Write one rotation's reference crops and composited queries under ``out``; return its manifest."""
    classes = subjects(root)
    boxes = json.loads(crops.read_text())["boxes"]
    remembered, sources, strangers = roles(sorted(classes), rotation)
    if len(strangers) < 2:
        raise ValueError("the avatar protocol needs at least two never-remembered subjects (six subjects)")
    rng = random.Random(f"avatar-{seed}-{rotation}")
    out.mkdir(parents=True, exist_ok=True)
    references: dict[str, tuple[str, str]] = {}
    for name in remembered:
        if name not in boxes:
            raise ValueError(f"{crops} has no box for subject {name!r}")
        path = out / f"reference-{name}.jpg"
        with Image.open(photos(root, name)[0]) as image:
            tight_crop(image.convert("RGB"), boxes[name]).save(path, quality=JPEG_QUALITY)
        references[name] = (classes[name], str(path))
    queries: list[Query] = []
    wanted = [(name, p) for name in remembered for p in photos(root, name)[1:]]
    wanted += [(None, p) for name in strangers for p in photos(root, name)]
    for truth, source in wanted:
        # the background shows a never-remembered subject, never the query's own
        owner = source.parent.name
        background = rng.choice([p for name in strangers if name != owner for p in photos(root, name)])
        with Image.open(source) as subject, Image.open(background) as scene:
            image, box = composite(subject, scene, rng)
        path = out / f"query-{len(queries):03d}.jpg"
        image.save(path, quality=JPEG_QUALITY)
        queries.append(Query(str(path), truth, str(source), str(background), box))
    result = AvatarSet(references, {name: classes[name] for name in sources}, strangers, queries)
    (out / "manifest.json").write_text(result.to_json())
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path, help="the DreamBooth folder (dreambooth-full for camera-size queries)")
    parser.add_argument("out", type=Path)
    parser.add_argument("--rotation", type=int, default=0, choices=(0, 1, 2))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    built = build(args.data, args.out, args.rotation, args.seed)
    print(json.dumps({"remembered": len(built.remembered), "queries": len(built.queries), "strangers_queries": sum(q.truth is None for q in built.queries)}))


if __name__ == "__main__":
    main()
