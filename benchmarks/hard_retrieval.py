"""Retrieval on hard, realistic data: recall@1/5 against the number of concepts,
and how often a subject never remembered comes back as some concept.

The DreamBooth subjects (30; use the full-size photos to see what a phone
delivers) are split three ways, and the split is rotated so that every subject
plays every part once:

* **remembered** (a third): one concept each, keyed by its first photo (00.jpg)
  alone, as a user who adds one photo would; its other photos are the queries
  that measure recall;
* **distractor sources** (a third): their photos are cut into *distractor
  concepts*, each one random crop (35 to 80 % of the side, any aspect from
  0.7 to 1.4) of one photo, mirrored at random, turned up to 20 degrees,
  with colour and brightness changed. They are distinct objects and scenes of
  the same classes (other dogs, toys, sneakers), not copies of any query;
  crops of one photo resemble each other, so they are harder together than
  independent concepts would be, not easier;
* **never remembered** (a third): every photo is a query that should retrieve
  nothing; the share that comes back as some concept under the calibrated
  threshold is the *false-match rate*.

The store grows from the remembered concepts by distractors to each size in
``--sizes`` (N, concepts in the store). Each query is retrieved with the
whole image only, the detector's regions only, and both (the default).
Recall is measured with every match kept (the paper's always-K ranking);
``accept`` is the share of remembered queries whose right concept the retriever
returns first with its calibrated threshold, ``false_match`` the share of
never-remembered queries for which it returns anything. Faces are measured apart (``--face-photos``): DreamBooth
has no people.

    python benchmarks/hard_retrieval.py ../shared/data/dreambooth-full --sizes 30,130,630

Crops are embedded once per run (they are cached by their pixels), so the
three modes and every store size cost one pass over the photos; ``--cache``
keeps those vectors in a file for the next run, to compare retrieval logic
without embedding again (the encoder must not change in between).
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import math
import random
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance, ImageOps

sys.path.insert(0, str(Path(__file__).resolve().parent))
from dreambooth_retrieval import subjects  # noqa: E402

from rap import LocalConceptStore, NewConcept, Retriever  # noqa: E402
from rap.encoders import ImageEncoder, create_encoder, create_face_analyzer  # noqa: E402
from rap.images import decode_image, load_image  # noqa: E402
from rap.settings import default, resolve  # noqa: E402

MODES = ("image", "regions", "both")


class CachedEncoder(ImageEncoder):
    """The benchmark's encoder: the real one, remembering each crop's vector by its pixels."""

    def __init__(self, inner: ImageEncoder, cache: Path | None = None) -> None:
        self.inner = inner
        self.id, self.dim = inner.id, inner.dim
        # the calibration the retriever reads (ImageEncoder's class defaults would hide the inner one's)
        for name in ("match_threshold", "detector_match_thresholds", "distinct_ratio"):
            if hasattr(inner, name):
                setattr(self, name, getattr(inner, name))
        self.cache = cache
        self._vectors: dict[bytes, np.ndarray] = {}
        if cache is not None and cache.exists():
            with np.load(cache) as saved:
                self._vectors = dict(zip((k.tobytes() for k in saved["keys"]), saved["vectors"]))

    def save(self) -> None:
        if self.cache is not None and self._vectors:
            keys = np.frombuffer(b"".join(self._vectors), np.uint8).reshape(-1, 16)
            np.savez(self.cache, keys=keys, vectors=np.stack(list(self._vectors.values())))

    def __getattr__(self, name: str) -> object:
        return getattr(self.__dict__["inner"], name)

    def embed(self, images: Sequence[Image.Image]) -> np.ndarray:
        keys = [hashlib.blake2b(image.tobytes(), digest_size=16, key=repr(image.size).encode()).digest() for image in images]
        missing = {key: image for key, image in zip(keys, images) if key not in self._vectors}
        if missing:
            for key, vector in zip(missing, self.inner.embed(list(missing.values()))):
                self._vectors[key] = vector
        return np.stack([self._vectors[key] for key in keys]) if keys else np.empty((0, self.dim), np.float32)


def distractor(image: Image.Image, rng: random.Random) -> Image.Image:
    """One distractor concept's image: a random, recoloured crop of ``image``."""
    width, height = image.size
    side, aspect = rng.uniform(0.35, 0.8), rng.uniform(0.7, 1.4)
    w, h = min(width, round(width * side * aspect**0.5)), min(height, round(height * side / aspect**0.5))
    x, y = rng.randint(0, width - w), rng.randint(0, height - h)
    out = image.crop((x, y, x + w, y + h))
    if rng.random() < 0.5:
        out = ImageOps.mirror(out)
    out = out.rotate(rng.uniform(-20, 20), resample=Image.Resampling.BICUBIC)
    out = ImageEnhance.Color(out).enhance(rng.uniform(0.3, 1.6))
    return ImageEnhance.Brightness(out).enhance(rng.uniform(0.7, 1.3))


def as_loaded(image: Image.Image):
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=92)
    return decode_image(buffer.getvalue())


def roles(names: list[str], rotation: int) -> tuple[list[str], list[str], list[str]]:
    """Remembered, distractor-source and never-remembered subjects for one rotation."""
    parts: tuple[list[str], list[str], list[str]] = ([], [], [])
    for i, name in enumerate(names):
        parts[(i + rotation) % 3].append(name)
    return parts


def grow(store: LocalConceptStore, size: int, pool: list, classes: dict[str, str]) -> list:
    """Add distractor concepts from ``pool`` ((source subject, image) pairs) until the store holds
    ``size`` concepts; the pool's rest, for the next size."""
    extra = size - len(store)
    if extra > len(pool):
        raise SystemExit(f"--sizes {size}: only {len(pool)} distractors; raise --per-photo")
    if extra > 0:
        batch, pool = pool[:extra], pool[extra:]
        offset = len(store)
        store.add_many([NewConcept(f"distractor-{offset + i:04d}", [as_loaded(image)], category=classes[src]) for i, (src, image) in enumerate(batch)])
    return pool


def measure(store, detector: str, mode: str, remembered, never, k: int, image_side: int) -> dict[str, list]:
    """Recall with every match kept (the paper's ranking), then the retriever's own decision."""
    kwargs = {"top_k": k, "whole_image": mode != "regions", "image_side": image_side}
    detector = "none" if mode == "image" else detector
    ranking, deciding = Retriever(store, detector, threshold=math.inf, **kwargs), Retriever(store, detector, **kwargs)
    rows: dict[str, list] = {"hit1": [], "hit5": [], "accept": [], "false": []}
    for truth, path in [*remembered, *never]:
        decided = deciding.retrieve(path).matches()
        if truth is None:
            rows["false"].append(bool(decided))
            continue
        names = ranking.retrieve(path).names()
        rows["hit1"].append(names[:1] == [truth])
        rows["hit5"].append(truth in names[:5])
        rows["accept"].append(decided[:1] == [truth])
    return rows


def run_photos(args: argparse.Namespace) -> None:
    classes = subjects(args.data)
    names = sorted(classes)
    encoder = CachedEncoder(create_encoder(args.encoder, resolve().settings), args.cache)
    sizes = sorted(int(s) for s in args.sizes.split(","))
    totals: dict[tuple[int, str], dict[str, list]] = {}
    start = time.perf_counter()
    for rotation in range(args.rotations):
        remembered, sources, never = roles(names, rotation)
        rng = random.Random(rotation)
        pool = [
            (name, distractor(load_image(photo).image, rng))
            for name in sources
            for photo in sorted((args.data / name).glob("*.jpg"))
            for _ in range(args.per_photo)
        ]
        rng.shuffle(pool)
        queries = [(s, p) for s in remembered for p in sorted((args.data / s).glob("*.jpg")) if p.name != "00.jpg"]
        unknown = [(None, p) for s in never for p in sorted((args.data / s).glob("*.jpg"))]
        with tempfile.TemporaryDirectory() as scratch, LocalConceptStore(Path(scratch) / "s", encoder=encoder, faces="none", image_side=args.image_side, settings=resolve().settings) as store:
            store.add_many([NewConcept(s, [args.data / s / "00.jpg"], category=classes[s]) for s in remembered])
            for size in sizes:
                pool = grow(store, size, pool, classes)
                for mode in args.modes.split(","):
                    rows = measure(store, args.detector, mode, queries, unknown, 5, args.image_side)
                    total = totals.setdefault((size, mode), {key: [] for key in rows})
                    for key, values in rows.items():
                        total[key] += values
                encoder.save()
    seconds = round(time.perf_counter() - start, 1)
    for (size, mode), rows in sorted(totals.items()):
        print(
            json.dumps(
                {
                    "encoder": args.encoder,
                    "detector": "none" if mode == "image" else args.detector,
                    "image_side": args.image_side,
                    "queries": mode,
                    "concepts": size,
                    "rotations": args.rotations,
                    "n_queries": len(rows["hit1"]),
                    "n_never_remembered": len(rows["false"]),
                    "recall_at_1": round(float(np.mean(rows["hit1"])), 3),
                    "recall_at_5": round(float(np.mean(rows["hit5"])), 3),
                    "accept": round(float(np.mean(rows["accept"])), 3),
                    "false_match": round(float(np.mean(rows["false"])), 3),
                    "run_seconds": seconds,
                }
            ),
            flush=True,
        )


def run_faces(paths: Sequence[Path]) -> None:
    """Face-descriptor distances between augmented copies of one person and across people."""
    analyzer = create_face_analyzer("dlib", resolve().settings)
    assert analyzer is not None
    vectors: list[tuple[int, np.ndarray]] = []
    for person, path in enumerate(paths):
        image = load_image(path).image
        w, h = image.size
        variants = [
            image,
            ImageOps.mirror(image),
            image.resize((w * 2 // 3, h * 2 // 3)),
            ImageEnhance.Brightness(image).enhance(0.6),
            ImageOps.grayscale(image).convert("RGB"),
            image.rotate(8, resample=Image.Resampling.BICUBIC),
        ]
        for variant in variants:
            faces = analyzer.faces(variant)
            if faces:
                vectors.append((person, faces[0].vector))
    same, different = [], []
    for i, (p, a) in enumerate(vectors):
        for q, b in vectors[i + 1 :]:
            (same if p == q else different).append(float(np.linalg.norm(a - b)))
    print(
        json.dumps(
            {
                "analyzer": analyzer.id,
                "match_threshold": analyzer.match_threshold,
                "same_person_augmented": [round(min(same), 3), round(max(same), 3), len(same)] if same else None,
                "different_people": [round(min(different), 3), round(max(different), 3), len(different)] if different else None,
            }
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path)
    parser.add_argument("--encoder", default=default("encoder"))
    parser.add_argument("--detector", default=default("detector"))
    parser.add_argument("--image-side", type=int, default=default("image_side"), help="shorter side photos are decoded to")
    parser.add_argument("--sizes", default="30,130,630", help="store sizes N (concepts) to measure, comma-separated")
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--rotations", type=int, default=3, choices=(1, 2, 3))
    parser.add_argument("--per-photo", type=int, default=13, help="distractor crops cut from each source photo")
    parser.add_argument("--cache", type=Path, help="file (.npz) that keeps crop vectors between runs")
    parser.add_argument("--face-photos", type=Path, nargs="*", default=(), help="one photo per person: face distances")
    args = parser.parse_args()
    if args.face_photos:
        run_faces(args.face_photos)
    run_photos(args)


if __name__ == "__main__":
    main()
