"""``rap photos``: index a folder, find concepts in it, suggest and name what recurs.

Photos are tests/photos and synthetic variants made here (flips, crops, colour
shifts); the store uses the tiny colour-layout encoder of conftest, no faces.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image, ImageOps

from rap import LocalConceptStore
from rap.cli import run
from rap.photos import find_photos, open_library
from rap.retrieval import Retriever

PHOTOS = Path(__file__).parent / "photos"


def _variants(source: Path, folder: Path, count: int, stem: str) -> list[Path]:
    """``count`` distinct photos of one subject: crops, flips and small colour shifts."""
    base = Image.open(source).convert("RGB")
    made = []
    for i in range(count):
        w, h = base.size
        d = 2 + i
        image = base.crop((d, d, w - d, h - d))
        if i % 2:
            image = ImageOps.mirror(image)
        image = Image.eval(image, lambda v, s=i: min(255, v + s))
        path = folder / f"{stem}_{i:02d}.jpg"
        image.save(path, quality=92)
        made.append(path)
    return made


@pytest.fixture
def library_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "library"
    (folder / "trip").mkdir(parents=True)
    for name in ("teapot_00.jpg", "dog_00.jpg", "cat_00.jpg", "clock_00.jpg"):
        shutil.copy(PHOTOS / name, folder / name)
    shutil.copy(PHOTOS / "teapot_01.jpg", folder / "trip" / "teapot_01.jpg")
    return folder


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "store"
    LocalConceptStore(path, encoder="tiny", faces="none").close()
    return path


def rap(db: Path, *args: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = run(["--db", str(db), *args])
    out, err = capsys.readouterr()
    return code, out, err


def index_json(db: Path, capsys, *paths: Path, extra: tuple[str, ...] = ()) -> dict:
    code, out, err = rap(db, "photos", "index", *map(str, paths), "--json", *extra, capsys=capsys)
    assert code == 0, err
    return json.loads(out)


def found(db: Path, capsys, name: str, *extra: str) -> list[str]:
    code, out, err = rap(db, "photos", "find", name, "--json", *extra, capsys=capsys)
    assert code == 0, err
    return [Path(json.loads(line)["path"]).name for line in out.splitlines()]


def test_index_then_reindex_adds_changes_and_forgets(db, library_folder, capsys):
    first = index_json(db, capsys, library_folder)
    assert (first["indexed"], first["failed"]) == (5, 0)
    again = index_json(db, capsys, library_folder)
    assert (again["indexed"], again["unchanged"]) == (0, 5)

    shutil.copy(PHOTOS / "dog_01.jpg", library_folder / "trip" / "dog_01.jpg")  # added
    (library_folder / "cat_00.jpg").unlink()  # deleted
    changed = library_folder / "clock_00.jpg"
    shutil.copy(PHOTOS / "clock_01.jpg", changed)  # changed bytes
    os.utime(library_folder / "dog_00.jpg", ns=(1, 1))  # touched, same bytes
    third = index_json(db, capsys, library_folder)
    assert (third["indexed"], third["forgotten"], third["touched"], third["unchanged"]) == (2, 1, 1, 2)

    shutil.copy(PHOTOS / "dog_01.jpg", library_folder / "dog_copy.jpg")  # same bytes elsewhere: copied
    assert index_json(db, capsys, library_folder)["copied"] == 1

    code, out, _ = rap(db, "photos", "stats", "--json", capsys=capsys)
    stats = json.loads(out)
    assert stats["photos"] == 6 and stats["regions"] > 6 and stats["bytes_on_disk"] > 0


def test_bad_files_are_listed_and_never_abort(db, library_folder, capsys, tmp_path):
    (library_folder / "notes.jpg").write_text("not an image")
    data = (PHOTOS / "dog_01.jpg").read_bytes()
    (library_folder / "truncated.jpg").write_bytes(data[: len(data) // 3])
    (library_folder / "empty.png").write_bytes(b"")
    (library_folder / "readme.txt").write_text("skipped: not an image suffix")
    Image.new("1", (9000, 8000)).save(library_folder / "enormous.png")  # 72 megapixels in a small file
    os.symlink(library_folder, library_folder / "trip" / "loop")  # a loop: walked once
    summary = index_json(db, capsys, library_folder, tmp_path / "missing")
    failed = {Path(f["path"]).name for f in summary["failures"]}
    assert {"notes.jpg", "empty.png", "enormous.png", "missing"} <= failed
    assert summary["indexed"] + summary["failed"] == 10 and summary["indexed"] >= 5
    assert all(f["reason"] and "\n" not in f["reason"] for f in summary["failures"])


def test_find_follows_concept_edits_without_reindexing(db, library_folder, capsys):
    index_json(db, capsys, library_folder)
    assert rap(db, "concept", "add", "teapot", "-i", str(PHOTOS / "teapot_00.jpg"), capsys=capsys)[0] == 0
    assert found(db, capsys, "teapot")[0] == "teapot_00.jpg"
    assert "dog_00.jpg" not in found(db, capsys, "teapot")
    assert rap(db, "concept", "add", "rex", "-i", str(PHOTOS / "dog_00.jpg"), "--category", "dog", capsys=capsys)[0] == 0
    assert found(db, capsys, "rex")[0] == "dog_00.jpg"
    assert rap(db, "concept", "remove", "rex", capsys=capsys)[0] == 0
    code, _, err = rap(db, "photos", "find", "rex", capsys=capsys)
    assert code != 0 and len(err.strip().splitlines()) == 1


def test_find_agrees_with_retrieval_and_filters_by_date(db, library_folder, capsys):
    index_json(db, capsys, library_folder)
    with LocalConceptStore(db) as store:
        store.add("teapot", [PHOTOS / "teapot_00.jpg"], category="teapot")
        retriever = Retriever(store)
        with open_library(store) as library:
            listed = {Path(f.photo.path).name for f in find_photos(library, retriever, "teapot", limit=100)}
            dated = find_photos(library, retriever, "teapot", limit=100, since="2100-01-01")
        retrieved = {
            path.name for path in sorted(library_folder.rglob("*.jpg"))
            if any(c.concept.name == "teapot" and c.match for c in retriever.retrieve(path).concepts)
        }
    assert listed == retrieved and listed
    assert dated == []  # none of these photos has an EXIF date
    assert rap(db, "photos", "find", "teapot", "--since", "yesterday", capsys=capsys)[0] != 0


def test_suggest_then_name_makes_a_concept_find_returns(db, tmp_path, capsys):
    folder = tmp_path / "many"
    folder.mkdir()
    _variants(PHOTOS / "clock_00.jpg", folder, 6, "clock")
    _variants(PHOTOS / "dog_01.jpg", folder, 6, "dog")
    index_json(db, capsys, folder)
    code, out, err = rap(db, "photos", "suggest", "--min-photos", "4", "--json", capsys=capsys)
    assert code == 0, err
    groups = [json.loads(line) for line in out.splitlines()]
    assert groups and all(g["photos"] >= 4 for g in groups)
    subjects = [{Path(s["path"]).name.split("_")[0] for s in g["sample"]} for g in groups]
    # each subject has a group of its own photos (the colour-layout test encoder also mixes some crops of the two)
    pure = [g for g, s in zip(groups, subjects) if len(s) == 1]
    assert {"clock", "dog"} <= set().union(*(s for s in subjects if len(s) == 1))
    assert all(g["photos"] == 6 for g in pure), pure
    chosen = next(g for g, s in zip(groups, subjects) if s == {"dog"})
    code, _, err = rap(db, "photos", "name", str(chosen["group"]), "rex", "--category", "dog", capsys=capsys)
    assert code == 0, err
    listed = found(db, capsys, "rex")
    assert sum(name.startswith("dog") for name in listed) >= 4 and all(name.startswith("dog") for name in listed[:4])
    assert rap(db, "photos", "name", "99", "nobody", capsys=capsys)[0] != 0


def test_a_library_of_another_encoder_is_refused_in_one_line(db, library_folder, capsys):
    index_json(db, capsys, library_folder)
    code, _, err = rap(db, "--detector", "none", "photos", "find", "anything", capsys=capsys)
    assert code != 0
    code, _, err = rap(db, "--detector", "none", "photos", "index", str(library_folder), capsys=capsys)
    assert code != 0 and "--reindex" in err and len(err.strip().splitlines()) == 1
    assert index_json(db, capsys, library_folder, extra=("--reindex",))["indexed"] == 5


_INDEX_FOREVER = """
import sys
from pathlib import Path
from rap import LocalConceptStore
from rap.photos import index_photos, open_library
from rap.retrieval import Retriever
sys.path.insert(0, sys.argv[3])
import conftest  # registers the tiny encoder
with LocalConceptStore(sys.argv[1]) as store, open_library(store) as library:
    index_photos(library, Retriever(store, cpu_threads=1), [Path(sys.argv[2])], progress=lambda n: print("one", flush=True))
"""


def test_kill_9_during_indexing_then_resume(db, tmp_path, capsys):
    folder = tmp_path / "many"
    folder.mkdir()
    made = _variants(PHOTOS / "teapot_01.jpg", folder, 30, "teapot")
    worker = subprocess.Popen(
        [sys.executable, "-c", _INDEX_FOREVER, str(db), str(folder), str(Path(__file__).parent)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=os.environ | {"PYTHONPATH": os.pathsep.join(sys.path)},
    )
    assert worker.stdout is not None
    line = worker.stdout.readline()  # blocks until the first photo is committed, or the child dies
    assert line.strip() == b"one", f"the indexing child committed no photo: {worker.stderr.read()!r}"
    time.sleep(random.uniform(0, 0.3))  # then kill it anywhere: every point must leave whole photos
    os.kill(worker.pid, signal.SIGKILL)
    worker.wait(timeout=60)
    with LocalConceptStore(db) as store, open_library(store) as library:
        partial = {path: len(library.regions_of(known.id)) for path, known in library.known().items()}
    assert 1 <= len(partial) <= len(made)
    resumed = index_json(db, capsys, folder)
    assert resumed["indexed"] == len(made) - len(partial) and resumed["unchanged"] == len(partial)
    fresh = tmp_path / "fresh"
    LocalConceptStore(fresh, encoder="tiny", faces="none").close()
    index_json(fresh, capsys, folder)
    with LocalConceptStore(fresh) as store, open_library(store) as library:
        whole = {path: len(library.regions_of(known.id)) for path, known in library.known().items()}
    assert all(partial[path] == whole[path] for path in partial)  # nothing half-indexed


def test_exif_date_and_orientation_are_kept_and_filter_find(db, tmp_path, capsys):
    folder = tmp_path / "dated"
    folder.mkdir()
    for name, when in (("teapot_00.jpg", "2023:05:06 10:00:00"), ("teapot_01.jpg", "2025:01:02 08:30:00")):
        exif = Image.Exif()
        exif[0x0132] = when
        exif[0x0112] = 1
        Image.open(PHOTOS / name).save(folder / name, exif=exif, quality=92)
    index_json(db, capsys, folder)
    assert rap(db, "concept", "add", "teapot", "-i", str(PHOTOS / "teapot_00.jpg"), capsys=capsys)[0] == 0
    code, out, _ = rap(db, "photos", "find", "teapot", "--json", capsys=capsys)
    rows = {Path(json.loads(line)["path"]).name: json.loads(line) for line in out.splitlines()}
    assert rows["teapot_00.jpg"]["taken"] == "2023-05-06T10:00:00" and rows["teapot_00.jpg"]["orientation"] == 1
    assert rows["teapot_00.jpg"]["match"] == "match" and rows["teapot_00.jpg"]["score"] <= 1
    assert found(db, capsys, "teapot", "--until", "2024-12-31") == ["teapot_00.jpg"]
    assert "teapot_00.jpg" not in found(db, capsys, "teapot", "--since", "2024-01-01")


def test_a_new_reference_image_changes_find_at_once(db, library_folder, capsys):
    index_json(db, capsys, library_folder)
    assert rap(db, "concept", "add", "pet", "-i", str(PHOTOS / "cat_00.jpg"), "--category", "cat", capsys=capsys)[0] == 0
    before = found(db, capsys, "pet")
    assert "clock_00.jpg" not in before
    assert rap(db, "concept", "edit", "pet", "--add-image", str(PHOTOS / "clock_00.jpg"), capsys=capsys)[0] == 0
    assert "clock_00.jpg" in found(db, capsys, "pet")


def test_text_output_of_every_command(db, library_folder, capsys):
    (library_folder / "bad.jpg").write_text("not an image")
    code, out, err = rap(db, "photos", "index", str(library_folder), capsys=capsys)
    assert code == 0 and "indexed 5" in out and "failed 1" in out and "bad.jpg" in out, err
    assert rap(db, "concept", "add", "teapot", "-i", str(PHOTOS / "teapot_00.jpg"), capsys=capsys)[0] == 0
    code, out, err = rap(db, "photos", "find", "teapot", capsys=capsys)
    assert code == 0 and "photos of teapot" in out and "match" in out, err
    code, out, err = rap(db, "photos", "stats", capsys=capsys)
    assert code == 0 and "photos: 5" in out, err
    code, out, err = rap(db, "photos", "suggest", capsys=capsys)
    assert code == 0 and out.strip(), err


def test_index_makes_the_store_when_there_is_none(tmp_path, library_folder, capsys):
    fresh = tmp_path / "new-store"
    code, out, err = rap(fresh, "--encoder", "tiny", "--faces", "none", "photos", "index", str(library_folder), "--json", capsys=capsys)
    assert code == 0, err
    assert json.loads(out)["indexed"] == 5 and (fresh / "photos.sqlite").exists()
