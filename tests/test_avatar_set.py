"""The avatar protocol's set builder (benchmarks/avatar_set.py) is deterministic and keeps its roles apart."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import avatar_set  # noqa: E402

SUBJECTS = ("ant", "bee", "cow", "doe", "eel", "fox")


@pytest.fixture
def layout(tmp_path: Path) -> tuple[Path, Path]:
    """Six synthetic subjects of three photos each, laid out as DreamBooth is, and a crops file."""
    rng = np.random.default_rng(7)
    root = tmp_path / "data"
    for subject in SUBJECTS:
        (root / subject).mkdir(parents=True)
        for n in range(3):
            pixels = rng.integers(0, 256, (90 + 10 * n, 120, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / subject / f"0{n}.jpg")
    (root / "prompts_and_classes.txt").write_text("".join(f"{s},toy\n" for s in SUBJECTS))
    crops = tmp_path / "crops.json"
    crops.write_text(json.dumps({"boxes": {s: [0.1, 0.2, 0.8, 0.9] for s in SUBJECTS}}))
    return root, crops


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_one_seed_gives_the_same_bytes_and_another_seed_other_queries(layout: tuple[Path, Path], tmp_path: Path) -> None:
    root, crops = layout
    first = avatar_set.build(root, tmp_path / "a", rotation=1, seed=3, crops=crops)
    again = avatar_set.build(root, tmp_path / "b", rotation=1, seed=3, crops=crops)
    other = avatar_set.build(root, tmp_path / "c", rotation=1, seed=4, crops=crops)
    a, b = _files(tmp_path / "a"), _files(tmp_path / "b")
    assert a.keys() == b.keys() and all(a[name] == b[name] for name in a if name != "manifest.json")
    assert [(q.truth, q.box) for q in first.queries] == [(q.truth, q.box) for q in again.queries]
    assert [q.box for q in first.queries] != [q.box for q in other.queries]


def test_roles_are_apart_and_queries_are_composited_at_a_tenth_to_three_tenths_of_the_frame(layout: tuple[Path, Path], tmp_path: Path) -> None:
    root, crops = layout
    built = avatar_set.build(root, tmp_path / "set", rotation=0, seed=0, crops=crops)
    remembered, strangers = set(built.remembered), set(built.strangers)
    assert remembered and strangers and not remembered & strangers and not remembered & set(built.distractor_sources)
    # a remembered subject's other photos (not the reference's) and every stranger photo are queries
    assert sum(q.truth is not None for q in built.queries) == 2 * len(remembered)
    assert sum(q.truth is None for q in built.queries) == 3 * len(strangers)
    for query in built.queries:
        assert Path(query.background).parent.name in strangers  # backgrounds show no remembered subject
        assert Path(query.background).parent.name != Path(query.source).parent.name
        with Image.open(query.path) as image:
            x0, y0, x1, y1 = query.box
            share = (x1 - x0) * (y1 - y0) / (image.width * image.height)
        assert 0.08 <= share <= 0.32
    for name, (_, path) in built.remembered.items():
        with Image.open(path) as reference, Image.open(root / name / "00.jpg") as original:
            assert reference.size == (round(0.8 * original.width) - round(0.1 * original.width), round(0.9 * original.height) - round(0.2 * original.height))
