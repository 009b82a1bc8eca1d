"""Import from the official RAP format and plain folders; export to the RAP format."""

import json
import os
import re
import shutil

import pytest

from conftest import read_only_folder

from rap.errors import ConceptExists, InvalidFormat, InvalidImage, InvalidInput, StoreError
from rap.store.interchange import export_rap, import_concepts, read_concepts


def rap_database(root, photos, relative_to_parent=True):
    """A folder laid out as the official repository's example_database/."""
    folder = root / "example_database"
    folder.mkdir(parents=True)
    for name in ("dog_00.jpg", "dog_01.jpg", "cat_00.jpg"):
        shutil.copy(photos / name, folder / name)
    prefix = "example_database/" if relative_to_parent else ""
    data = {
        "concept_dict": {
            "<bo>": {"name": "bo", "image": f"{prefix}dog_00.jpg", "info": "<bo> is a Shiba Inu.", "category": "dog"},
            "<mam>": {"name": "mam", "image": f"{prefix}cat_00.jpg", "info": "<mam> is a cat.", "category": "cat"},
        },
        "path_to_concept": {f"{prefix}dog_00.jpg": "<bo>", f"{prefix}dog_01.jpg": "<bo>", f"{prefix}cat_00.jpg": "<mam>"},
    }
    (folder / "database.json").write_text(json.dumps(data))
    return folder


@pytest.mark.parametrize("relative_to_parent", [True, False])
def test_import_official_format(store, photos, tmp_path, relative_to_parent):
    folder = rap_database(tmp_path, photos, relative_to_parent)
    added, skipped = import_concepts(store, read_concepts(folder))
    assert added == ["bo", "mam"] and skipped == []
    bo = store.get("bo")
    assert bo.info == "<bo> is a Shiba Inu." and bo.category == "dog" and len(bo.images) == 2


def test_export_then_import_round_trips(store, photos, tmp_path):
    store.add("bo", [photos / "dog_00.jpg", photos / "dog_01.jpg"], info="my dog", category="dog", attributes={"age": "3"})
    target = export_rap(store, tmp_path / "out")
    data = json.loads((target / "database.json").read_text())
    assert data["concept_dict"]["<bo>"]["image"] == "out/bo.jpg"
    assert data["path_to_concept"] == {"out/bo.jpg": "<bo>", "out/bo_2.jpg": "<bo>"}
    again = read_concepts(target)
    assert [(c.name, c.info, c.category, dict(c.attributes), len(c.images)) for c in again] == [
        ("bo", "my dog", "dog", {"age": "3"}, 2)
    ]
    with pytest.raises(InvalidInput, match="not an empty folder"):
        export_rap(store, target)


def test_plain_folder(store, photos, tmp_path):
    for name, files in {"rex": ["dog_00.jpg", "dog_01.jpg"], "tom": ["cat_00.jpg"]}.items():
        (tmp_path / "plain" / name).mkdir(parents=True)
        for file in files:
            shutil.copy(photos / file, tmp_path / "plain" / name / file)
    (tmp_path / "plain" / "rex" / "info.txt").write_text("<rex> is a good boy\n")
    (tmp_path / "plain" / "rex" / "category.txt").write_text("dog")
    import_concepts(store, read_concepts(tmp_path / "plain", default_category="pet"))
    assert [(c.name, c.category, c.info, len(c.images)) for c in store.list()] == [
        ("rex", "dog", "<rex> is a good boy", 2),
        ("tom", "pet", "", 1),
    ]
    with pytest.raises(ConceptExists):
        import_concepts(store, read_concepts(tmp_path / "plain"))
    added, skipped = import_concepts(store, read_concepts(tmp_path / "plain"), skip_existing=True)
    assert added == [] and skipped == ["rex", "tom"]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "not valid JSON"),
        ("[]", "database.json: should be a JSON object"),
        ("{}", "field 'concept_dict': Field required"),
        ('{"concept_dict": {"<a>": "x"}}', "field 'concept_dict.<a>': should be a JSON object"),
        ('{"concept_dict": {"<a>": {"name": "a"}}}', "field 'concept_dict.<a>.image': Field required"),
        ('{"concept_dict": {"<a>": {"name": "a", "image": []}}}', "field 'concept_dict.<a>.image': List should have at least 1 item"),
        ('{"concept_dict": {"<a>": {"name": "a", "image": [3]}}}', "field 'concept_dict.<a>.image.0': Input should be a valid string"),
        ('{"concept_dict": {"<a>": {"name": 7, "image": "a.png"}}}', "concept_dict.<a>.name"),
        ('{"concept_dict": {"<a>": {"image": "a.png", "colour": "red"}}}', "unknown field 'concept_dict.<a>.colour'"),
        ('{"concept_dict": {"<a>": {"image": "a.png", "attributes": [1]}}}', "concept_dict.<a>.attributes"),
        ('{"concept_dict": {}, "extra": 1}', "unknown field 'extra'"),
        ('{"concept_dict": {"<a>": {"name": "a", "image": "nowhere.png"}}}', "not found"),
        ('{"concept_dict": {}, "path_to_concept": {"x.png": "<ghost>"}}', "ghost"),
        ('{"concept_dict": {}, "path_to_concept": {"x.png": 3}}', "path_to_concept.x.png"),
    ],
)
def test_malformed_database_json_is_refused(store, tmp_path, content, message):
    (tmp_path / "db").mkdir()
    (tmp_path / "db" / "database.json").write_text(content)
    with pytest.raises(InvalidFormat, match=re.escape(message)) as caught:
        read_concepts(tmp_path / "db")
    assert str(caught.value).startswith(str(tmp_path / "db" / "database.json")) and "\n" not in str(caught.value)


def test_a_renamed_copy_of_the_official_folder_imports(store, photos, tmp_path):
    """Paths say example_database/..., the folder is now called renamed_db; the original may still sit beside it."""
    original = rap_database(tmp_path, photos)
    renamed = tmp_path / "renamed_db"
    shutil.copytree(original, renamed)
    (original / "dog_00.jpg").unlink()  # the copy must use its own files, not the original's
    concepts = read_concepts(renamed)
    assert [[p.parent for p in c.images] for c in concepts] == [[renamed.resolve()] * 2, [renamed.resolve()]]
    shutil.rmtree(original)
    assert import_concepts(store, read_concepts(renamed))[0] == ["bo", "mam"]


@pytest.mark.parametrize("listed", ["absolute", "../outside.jpg", "example_database/../outside.jpg", "link.jpg"])
def test_images_outside_the_folder_need_allow_outside(store, photos, tmp_path, listed):
    folder = rap_database(tmp_path, photos)
    outside = tmp_path / "outside.jpg"
    shutil.copy(photos / "cat_01.jpg", outside)
    (folder / "link.jpg").symlink_to(outside)
    listed = str(outside) if listed == "absolute" else listed
    data = json.loads((folder / "database.json").read_text())
    data["path_to_concept"][listed] = "<mam>"
    (folder / "database.json").write_text(json.dumps(data))
    with pytest.raises(InvalidFormat, match="outside .*--allow-outside"):
        read_concepts(folder)
    mam = read_concepts(folder, allow_outside=True)[1]
    assert outside.resolve() in mam.images


def test_a_bad_image_aborts_the_whole_import(store, photos, tmp_path):
    folder = rap_database(tmp_path, photos)
    (folder / "cat_00.jpg").write_bytes(b"broken")
    with pytest.raises(InvalidImage, match="cat_00"):
        import_concepts(store, read_concepts(folder))
    assert len(store) == 0


def test_empty_folder_is_refused(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(InvalidFormat, match="subfolder"):
        read_concepts(tmp_path / "empty")


def test_export_with_a_stored_image_gone_is_one_line_and_writes_nothing(store, photos, tmp_path):
    store.add("bo", [photos / "dog_00.jpg"], category="dog")
    store.image_path(store.get("bo").images[0].file).unlink()
    with pytest.raises(StoreError, match="missing from the store.*concept remove bo"):
        export_rap(store, tmp_path / "out")
    assert sorted(os.listdir(tmp_path)) == ["store"]


def test_export_into_a_read_only_folder_is_one_line(store, photos, tmp_path):
    store.add("bo", [photos / "dog_00.jpg"], category="dog")
    (tmp_path / "locked").mkdir()
    with read_only_folder(tmp_path / "locked", tmp_path / "mounted") as locked:
        with pytest.raises(InvalidInput, match="cannot write"):
            export_rap(store, locked / "out")
        assert os.listdir(locked) == []


def test_export_under_a_file_is_one_line(store, photos, tmp_path):
    store.add("bo", [photos / "dog_00.jpg"], category="dog")
    (tmp_path / "a-file").write_text("x")
    with pytest.raises(InvalidInput, match="cannot write .*a-file"):
        export_rap(store, tmp_path / "a-file" / "out")
