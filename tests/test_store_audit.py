"""The audit's store findings, closed: a plain-folder import follows no link out of its folder,
orphaned image files are found by ``rap check`` and removed by repair or a reopen, and
``rap retrieve`` says when a retrieved concept's reference image is gone."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from rap.cli import run
from rap.errors import InvalidFormat
from rap.store.interchange import read_concepts
from rap.store.local import LocalConceptStore

FLAGS = ["--encoder", "tiny", "--faces", "none", "--detector", "none"]


def cli(capsys, db: Path, *args: object) -> tuple[int, str, str]:
    code = run(["--db", str(db), *FLAGS, *map(str, args)])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("link", ["image", "subfolder", "info"])
def test_a_plain_folder_import_refuses_links_out_of_its_folder(tmp_path, photos, capsys, link):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    shutil.copy(photos / "cat_00.jpg", elsewhere / "photo.jpg")
    (elsewhere / "secret.txt").write_text("the neighbour's secret")
    folder = tmp_path / "folder"
    (folder / "bo").mkdir(parents=True)
    shutil.copy(photos / "dog_00.jpg", folder / "bo" / "a.jpg")
    if link == "image":
        (folder / "leak").mkdir()
        (folder / "leak" / "a.jpg").symlink_to(elsewhere / "photo.jpg")
    elif link == "subfolder":
        (folder / "leak").symlink_to(elsewhere)
    else:
        (folder / "bo" / "info.txt").symlink_to(elsewhere / "secret.txt")
    with pytest.raises(InvalidFormat, match="outside .*--allow-outside"):
        read_concepts(folder)
    db = tmp_path / "store"
    code, _, err = cli(capsys, db, "import", folder)
    assert code == 2 and "--allow-outside" in err and "Traceback" not in err
    assert not (db / "rap.sqlite").exists() or cli(capsys, db, "concept", "list", "--json")[1].strip() in ("", "[]")
    assert cli(capsys, db, "import", folder, "--allow-outside")[0] == 0


def test_a_link_inside_the_folder_is_followed(tmp_path, photos):
    folder = tmp_path / "folder"
    (folder / "bo").mkdir(parents=True)
    shutil.copy(photos / "dog_00.jpg", folder / "bo" / "a.jpg")
    (folder / "bo" / "b.jpg").symlink_to(folder / "bo" / "a.jpg")
    assert [len(c.images) for c in read_concepts(folder)] == [2]


def test_orphaned_image_files_are_reported_and_repaired(tmp_path, photos, capsys):
    db = tmp_path / "store"
    assert cli(capsys, db, "concept", "add", "bo", "-i", photos / "dog_00.jpg")[0] == 0
    kept = sorted((db / "images").glob("*/*"))
    # as a kill between a file's write and its commit leaves it (and a remove's commit and the file's deletion)
    orphan = db / "images" / "ab" / ("ab" + "0" * 62 + ".jpg")
    orphan.parent.mkdir()
    orphan.write_bytes((photos / "cat_00.jpg").read_bytes())
    code, out, _ = cli(capsys, db, "check", "--json")
    report = json.loads(out)
    assert code != 0 and not report["ok"]
    [problem] = report["problems"]
    assert problem["part"] == "file" and orphan.name in problem["detail"] and problem["repairable"]
    code, out, _ = cli(capsys, db, "check", "--repair", "--json")
    assert json.loads(out)["problems"][0]["repaired"] and not orphan.exists()
    assert cli(capsys, db, "check", "--json")[0] == 0 and sorted((db / "images").glob("*/*")) == kept


def test_reopening_a_store_removes_its_orphans_however_young(tmp_path, photos, capsys):
    db = tmp_path / "store"
    assert cli(capsys, db, "concept", "add", "bo", "-i", photos / "dog_00.jpg")[0] == 0
    assert cli(capsys, db, "concept", "add", "kit", "-i", photos / "cat_00.jpg")[0] == 0
    kit_file = LocalConceptStore(db, encoder="tiny", faces="none").get("kit").images[0].file
    # a remove whose file deletion was cut short: the row is gone, the file stays
    orphan = (db / kit_file).read_bytes()
    assert cli(capsys, db, "concept", "remove", "kit")[0] == 0
    (db / kit_file).parent.mkdir(exist_ok=True)
    (db / kit_file).write_bytes(orphan)
    store = LocalConceptStore(db, encoder="tiny", faces="none")
    store.close()
    assert not (db / kit_file).exists() and [c.name for c in LocalConceptStore(db, encoder="tiny", faces="none").list()] == ["bo"]


def test_retrieve_warns_once_about_a_missing_reference_image(tmp_path, photos, capsys):
    db = tmp_path / "store"
    assert cli(capsys, db, "concept", "add", "bo", "-i", photos / "dog_00.jpg", "-c", "dog")[0] == 0
    code, _, err = cli(capsys, db, "retrieve", photos / "dog_01.jpg", "--threshold", "inf")
    assert code == 0 and "missing" not in err
    for image in (db / "images").glob("*/*"):
        image.unlink()
    code, _, err = cli(capsys, db, "retrieve", photos / "dog_01.jpg", photos / "dog_00.jpg", "--threshold", "inf")
    assert code == 0 and err.count("warning:") == 1 and "'bo'" in err and "rap check" in err
