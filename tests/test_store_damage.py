"""Damaged, lost, missing and read-only stores: one line and exit 5, never a traceback, never a deletion.

Each case damages a filled store the way a disk, a sync tool or a user can, then
runs commands through the same entry point as ``rap``. ``rap check`` must name
what is wrong, and ``rap check --repair`` must rebuild what SQLite (the source of
truth) allows, and nothing else.
"""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from conftest import read_only_folder

from rap.cli import run
from rap.errors import StoreDamaged
from rap.store.local import LocalConceptStore

FLAGS = ["--encoder", "tiny", "--faces", "none", "--detector", "none"]
BO_INFO = "my shiba with a brown collar"


def cli(capsys, db: Path, *args: object) -> tuple[int, str, str]:
    code = run(["--db", str(db), *FLAGS, *map(str, args)])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def filled(tmp_path, photos, capsys) -> Path:
    """A closed store with two concepts whose image files are old enough to be collected as orphans."""
    db = tmp_path / "store"
    assert cli(capsys, db, "concept", "add", "bo", "-i", photos / "dog_00.jpg", "-c", "dog", "--info", BO_INFO)[0] == 0
    assert cli(capsys, db, "concept", "add", "kit", "-i", photos / "cat_00.jpg", "-c", "cat")[0] == 0
    for image in (db / "images").glob("*/*"):
        os.utime(image, (1, 1))
    return db


def image_files(db: Path) -> list[Path]:
    return sorted((db / "images").glob("*/*"))


def one_line_error(code: int, err: str, *needles: str) -> None:
    assert code == 5 and err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    for needle in needles:
        assert needle in err, err


# -- a database lost or damaged: refused, and the folder left as it is ----------------
def lose_database(db: Path) -> None:
    (db / "rap.sqlite").write_bytes(b"")


def garbage_database(db: Path) -> None:
    (db / "rap.sqlite").write_bytes(np.random.default_rng(0).bytes(8192))


def damage_btree_page(db: Path) -> None:
    """Overwrite the root page of the concepts table (a b-tree page) with garbage."""
    with sqlite3.connect(db / "rap.sqlite") as connection:
        page_size = connection.execute("PRAGMA page_size").fetchone()[0]
        root = connection.execute("SELECT rootpage FROM sqlite_master WHERE name = 'concepts'").fetchone()[0]
    connection.close()
    with (db / "rap.sqlite").open("r+b") as handle:
        handle.seek((root - 1) * page_size)
        handle.write(b"\xa5" * page_size)


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lose_database, "database was lost"),
        (garbage_database, "not a readable rap store"),
        (damage_btree_page, "is damaged"),
    ],
    ids=["empty-database", "garbage-database", "damaged-btree-page"],
)
@pytest.mark.parametrize(
    "command", [["concept", "list"], ["concept", "show", "bo"], ["retrieve", "{photo}"]], ids=lambda c: " ".join(c)
)
def test_a_lost_or_damaged_database_is_refused_and_nothing_deleted(filled, capsys, photos, damage, message, command):
    before = image_files(filled)
    damage(filled)
    code, out, err = cli(capsys, filled, *[a.format(photo=photos / "dog_00.jpg") for a in command])
    one_line_error(code, err, message, "rap.sqlite")
    assert image_files(filled) == before and out == ""


@pytest.mark.parametrize("damage", [lose_database, garbage_database, damage_btree_page], ids=["empty", "garbage", "btree"])
def test_check_names_a_damaged_database_and_repair_leaves_it_alone(filled, capsys, damage):
    damage(filled)
    before = (filled / "rap.sqlite").read_bytes(), image_files(filled)
    for args in (["check", "--json"], ["check", "--repair", "--json"]):
        code, out, _ = cli(capsys, filled, *args)
        report = json.loads(out)
        assert code == 5 and not report["ok"] and report["problems"][0]["part"] == "database"
        assert not report["problems"][0]["repairable"] and "backup" in report["problems"][0]["detail"]
    assert ((filled / "rap.sqlite").read_bytes(), image_files(filled)) == before


# -- damage rap check finds, and repairs where the store holds what it takes ------------
def overwrite_a_vector(db: Path) -> None:
    """64 bytes in the middle of a stored vector, as a disk or a sync tool might."""
    with sqlite3.connect(db / "rap.sqlite") as connection:
        blob = connection.execute("SELECT vector FROM vectors ORDER BY id LIMIT 1").fetchone()[0]
    connection.close()
    data = bytearray((db / "rap.sqlite").read_bytes())
    offset = data.index(blob) + len(blob) // 2
    data[offset : offset + 64] = np.random.default_rng(1).bytes(64)
    (db / "rap.sqlite").write_bytes(bytes(data))


def overwrite_in_file(db: Path, old: bytes, new: bytes) -> None:
    """Bytes of the database file overwritten in place, leaving SQLite's structure as it was."""
    data = (db / "rap.sqlite").read_bytes()
    assert data.count(old) == 1 and len(new) == len(old)
    (db / "rap.sqlite").write_bytes(data.replace(old, new))


def change_a_description(db: Path) -> None:
    overwrite_in_file(db, BO_INFO.encode(), BO_INFO.replace("brown", "black").encode())


def garble_a_description(db: Path) -> None:
    """Bytes that are no longer UTF-8, as random damage leaves text."""
    overwrite_in_file(db, BO_INFO.encode(), b"\xff" * len(BO_INFO))


def change_an_image_row(db: Path) -> None:
    """One hex digit of an image row's sha256 (stored right after its file name)."""
    with sqlite3.connect(db / "rap.sqlite") as connection:
        file, sha = connection.execute("SELECT file, sha256 FROM images ORDER BY id LIMIT 1").fetchone()
    connection.close()
    flipped = sha[:-1] + ("0" if sha[-1] != "0" else "1")
    overwrite_in_file(db, f"{file}{sha}".encode(), f"{file}{flipped}".encode())


def garbage_index(db: Path) -> None:
    (db / "index" / "image.faiss").write_bytes(b"not faiss")


def stale_index(db: Path) -> None:
    """The vectors table changed behind the index's back (as by a writer killed before its checkpoint)."""
    with sqlite3.connect(db / "rap.sqlite") as connection:
        connection.execute("PRAGMA foreign_keys = ON")
        connection.execute("DELETE FROM concepts WHERE name = 'kit'")
    connection.close()


def change_an_image(db: Path) -> None:
    image_files(db)[0].write_bytes(b"other bytes")


def remove_an_image(db: Path) -> None:
    image_files(db)[0].unlink()


@pytest.mark.parametrize(
    ("damage", "part", "repairable"),
    [
        (overwrite_a_vector, "vector", True),
        (garbage_index, "index", True),
        (stale_index, "file index", True),  # the removed concept's image file is left too
        (change_an_image, "image", False),
        (remove_an_image, "image", False),
    ],
    ids=["vector-overwritten", "index-garbage", "index-stale", "image-changed", "image-missing"],
)
def test_check_finds_damage_and_repair_rebuilds_what_it_can(filled, capsys, photos, damage, part, repairable):
    damage(filled)
    code, out, _ = cli(capsys, filled, "check", "--json")
    report = json.loads(out)
    assert code == 5 and [p["part"] for p in report["problems"]] == part.split()
    assert report["problems"][0]["repairable"] is repairable
    code, out, _ = cli(capsys, filled, "check", "--repair", "--json")
    assert (code == 0) is repairable and json.loads(out)["ok"] is repairable
    if repairable:
        assert cli(capsys, filled, "check")[0] == 0
        code, out, _ = cli(capsys, filled, "retrieve", photos / "dog_00.jpg", "-k", "1", "--json")
        assert json.loads(out)["concepts"][0]["name"] == "bo"
    else:  # the command the report suggests runs as printed, and leaves a whole store
        detail = report["problems"][0]["detail"]
        assert "restore it from a backup" in detail
        suggested = detail.split("or 'rap ")[1].rstrip("'").split()
        assert cli(capsys, filled, *suggested)[0] == 0
        assert cli(capsys, filled, "check")[0] == 0


def test_a_damaged_vector_read_for_the_index_is_one_line(filled, capsys, photos):
    overwrite_a_vector(filled)
    (filled / "index" / "image.faiss").unlink()  # the index must be rebuilt from the vectors
    code, _, err = cli(capsys, filled, "retrieve", photos / "dog_00.jpg")
    one_line_error(code, err, "damaged", "rap check --repair")


# -- content overwritten inside SQLite's intact structure: caught by the row digests -----
CONTENT_DAMAGE = [overwrite_a_vector, change_a_description, garble_a_description, change_an_image_row]
CONTENT_IDS = ["vector", "concept-description", "garbled-description", "image-row"]


@pytest.mark.parametrize("damage", CONTENT_DAMAGE, ids=CONTENT_IDS)
@pytest.mark.parametrize(
    "command",
    [["concept", "list"], ["retrieve", "{photo}"], ["concept", "add", "rex", "-i", "{photo}"]],
    ids=lambda c: " ".join(c[:2]),
)
def test_overwritten_content_is_refused_before_anything_is_written(filled, capsys, photos, damage, command):
    damage(filled)
    before = (filled / "rap.sqlite").read_bytes(), image_files(filled)
    code, out, err = cli(capsys, filled, *[a.format(photo=photos / "dog_01.jpg") for a in command])
    one_line_error(code, err, "rap.sqlite is damaged", "'rap check'", "--repair", "backup")
    assert out == "" and ((filled / "rap.sqlite").read_bytes(), image_files(filled)) == before


def test_an_overwritten_vector_is_reported_per_row_and_repaired(filled, capsys, photos):
    overwrite_a_vector(filled)
    code, out, _ = cli(capsys, filled, "check")
    assert code == 5 and "of <bo> is damaged (changed since it was written" in out and "repairable" in out
    assert cli(capsys, filled, "check", "--repair")[0] == 0
    assert cli(capsys, filled, "check")[0] == 0
    assert cli(capsys, filled, "concept", "add", "rex", "-i", photos / "dog_01.jpg", "-c", "dog")[0] == 0
    code, out, _ = cli(capsys, filled, "concept", "list", "--json")
    assert code == 0 and [c["name"] for c in json.loads(out)] == ["bo", "kit", "rex"]
    code, out, _ = cli(capsys, filled, "retrieve", photos / "dog_00.jpg", "-k", "1", "--json")
    assert json.loads(out)["concepts"][0]["name"] == "bo"


@pytest.mark.parametrize(
    ("damage", "part", "needle"),
    [
        (change_a_description, "concept", "concept 1 ('bo')"),
        (garble_a_description, "concept", "concept 1 ('bo')"),
        (change_an_image_row, "image", "image 1 of <bo>"),
    ],
    ids=["concept-description", "garbled-description", "image-row"],
)
def test_a_changed_concept_or_image_row_is_reported_and_left_alone(filled, capsys, damage, part, needle):
    damage(filled)
    before = (filled / "rap.sqlite").read_bytes(), image_files(filled)
    for args in (["check", "--json"], ["check", "--repair", "--json"]):
        code, out, _ = cli(capsys, filled, *args)
        report = json.loads(out)
        assert code == 5 and [(p["part"], p["repairable"], p["repaired"]) for p in report["problems"]] == [(part, False, False)]
        assert needle in report["problems"][0]["detail"] and "restore the store from a backup" in report["problems"][0]["detail"]
    assert ((filled / "rap.sqlite").read_bytes(), image_files(filled)) == before


def reverse_a_vector(db: sqlite3.Connection) -> str:
    """Another unit vector in place of the first: only its digest tells."""
    vector_id, blob = db.execute("SELECT id, vector FROM vectors ORDER BY id LIMIT 1").fetchone()
    db.execute("UPDATE vectors SET vector = ? WHERE id = ?", (np.frombuffer(blob, np.float32)[::-1].tobytes(), vector_id))
    return f"vector {vector_id} changed"


def garble_a_description_row(db: sqlite3.Connection) -> str:
    db.execute("UPDATE concepts SET info = CAST(x'ffff' AS TEXT) WHERE name = 'bo'")
    return "decode"


@pytest.mark.parametrize("change", [reverse_a_vector, garble_a_description_row], ids=["vector", "garbled-description"])
def test_a_store_left_open_notices_a_changed_row_and_writes_no_more(filled, photos, change):
    """A long-running process (the server) reads rows for use after the open-time check: each is checked again."""
    store = LocalConceptStore(filled, create=False)
    with sqlite3.connect(filled / "rap.sqlite") as other:
        needle = change(other)
    other.close()
    with pytest.raises(StoreDamaged, match=f"rap.sqlite is damaged .*{needle}"):  # by whichever read meets it
        store.get("bo")
        store.concept_vectors("bo", "image")
    with pytest.raises(StoreDamaged):
        store.add("rex", [photos / "dog_01.jpg"])
    assert len(store) == 2
    store.close()


# -- a store from before row digests ----------------------------------------------------
def before_digests(db: Path) -> None:
    """The store as schema 1 wrote it: no digest columns."""
    with sqlite3.connect(db / "rap.sqlite") as connection:
        for table in ("concepts", "images", "vectors"):
            connection.execute(f"ALTER TABLE {table} DROP COLUMN digest")
        connection.execute("PRAGMA user_version = 1")
    connection.close()


def test_a_store_from_before_digests_is_migrated_and_then_verified(filled, capsys, photos):
    before_digests(filled)
    code, out, _ = cli(capsys, filled, "concept", "list", "--json")
    assert code == 0 and [c["name"] for c in json.loads(out)] == ["bo", "kit"]
    with sqlite3.connect(filled / "rap.sqlite") as connection:
        assert connection.execute("PRAGMA user_version").fetchone()[0] == 2
        assert connection.execute("SELECT count(*) FROM vectors WHERE digest IS NULL").fetchone()[0] == 0
    connection.close()
    assert cli(capsys, filled, "check")[0] == 0
    assert cli(capsys, filled, "concept", "add", "rex", "-i", photos / "dog_01.jpg", "-c", "dog")[0] == 0
    overwrite_a_vector(filled)  # the digests the migration wrote now guard the rows
    code, _, err = cli(capsys, filled, "concept", "list")
    one_line_error(code, err, "rap.sqlite is damaged")


def test_a_read_only_store_from_before_digests_is_read_unverified(filled, capsys, photos, tmp_path):
    before_digests(filled)
    with read_only_folder(filled, tmp_path / "mounted") as folder:
        code, out, err = cli(capsys, folder, "concept", "list", "--json")
        assert code == 0 and [c["name"] for c in json.loads(out)] == ["bo", "kit"], err
        code, out, _ = cli(capsys, folder, "retrieve", photos / "dog_00.jpg", "-k", "1", "--json")
        assert code == 0 and json.loads(out)["concepts"][0]["name"] == "bo"
        assert cli(capsys, folder, "check")[0] == 0
        code, _, err = cli(capsys, folder, "concept", "edit", "bo", "--info", "x")
        one_line_error(code, err, "is read-only")


def test_check_on_a_whole_store(filled, capsys):
    code, out, _ = cli(capsys, filled, "check")
    assert code == 0 and "whole" in out


# -- read commands on a store that is not there create nothing ----------------------------
@pytest.mark.parametrize(
    "command",
    [["concept", "list"], ["concept", "show", "bo"], ["info"], ["check"], ["retrieve", "{photo}"], ["export", "{out}"]],
    ids=lambda c: " ".join(c),
)
def test_a_read_command_on_a_missing_store_creates_nothing(tmp_path, capsys, photos, command):
    typo = tmp_path / "typo"
    args = [a.format(photo=photos / "dog_00.jpg", out=tmp_path / "out") for a in command]
    code, _, err = cli(capsys, typo, *args)
    one_line_error(code, err, f"no store at {typo}")
    assert not typo.exists() and not (tmp_path / "out").exists()


# -- a store on a read-only folder can be read, and says why it cannot be changed --------
@pytest.fixture
def read_only(filled, tmp_path):
    """The filled store on a read-only file system (root, whom modes do not stop), else made unwritable."""
    with read_only_folder(filled, tmp_path / "mounted") as folder:
        yield folder


def test_a_read_only_store_is_listed_and_refuses_writes(read_only, capsys, photos):
    code, out, err = cli(capsys, read_only, "concept", "list", "--json")
    assert code == 0 and [c["name"] for c in json.loads(out)] == ["bo", "kit"], err
    code, out, _ = cli(capsys, read_only, "retrieve", photos / "dog_00.jpg", "-k", "1", "--json")
    assert code == 0 and json.loads(out)["concepts"][0]["name"] == "bo"
    assert cli(capsys, read_only, "check")[0] == 0
    writes = (["concept", "edit", "bo", "--info", "x"], ["concept", "add", "rex", "-i", photos / "dog_01.jpg"], ["check", "--repair"])
    for write in writes:
        code, _, err = cli(capsys, read_only, *write)
        one_line_error(code, err, "is read-only")
    assert sorted(p.name for p in read_only.iterdir()) == ["images", "index", "rap.sqlite"]
