"""Every store backend: operations, bad input leaving it untouched, repair after crashes.

Tests taking ``store`` or ``store_target`` run once per backend (ids ``local``
and ``postgres``); the others are about the embedded store's folder.
"""

import io
import json
import os
import sqlite3

import numpy as np
import pytest
from PIL import Image

from rap import LocalConceptStore, NewConcept
from rap.errors import ConceptExists, ConceptNotFound, EncoderMismatch, InvalidImage, InvalidInput, InvalidName, StoreError
from rap.images import LoadedImage, decode_image
from rap.reference_views import MAX_VIEWS, reference_views
from rap.store.schema import row_digest


@pytest.fixture
def store(any_store):
    """Here, the store of each backend."""
    return any_store


def snapshot(store):
    """Everything a user could observe: concepts, files on disk, vectors in the index."""
    folder = getattr(store, "path", None)
    files = sorted(p.relative_to(folder).as_posix() for p in (folder / "images").rglob("*") if p.is_file()) if folder else []
    return [c.model_dump() for c in store.list()], files, store.index_info()


def readable(store, image_file):
    """Whether the store can still give the image's bytes."""
    try:
        return store.image_path(image_file).exists()
    except ConceptNotFound:
        return False


def test_add_list_show_edit_remove(store, photos):
    bo = store.add("bo", [photos / "dog_00.jpg"], info="<bo> is my dog", category="Dog", attributes={"age": "3"})
    assert bo.token == "<bo>" and bo.category == "dog" and len(bo.images) == 1
    assert readable(store, bo.images[0].file)
    store.add("kit", [photos / "cat_00.jpg", photos / "cat_01.jpg"], category="cat")
    assert [c.name for c in store.list()] == ["bo", "kit"]
    assert store.get("<BO>").name == "bo" and "Bo" in store
    assert store.categories() == ["cat", "dog"]
    assert store.index_info()["image"]["vectors"] == 3 * len(reference_views(Image.new("RGB", (64, 64))))

    edited = store.edit("bo", rename="Bobo", info="changed", set_attributes={"food": "fish"}, unset_attributes=["age"])
    assert (edited.name, edited.info, edited.attributes) == ("Bobo", "changed", {"food": "fish"})
    assert edited.created_at == bo.created_at and edited.updated_at > bo.updated_at
    with pytest.raises(ConceptNotFound):
        store.get("bo")

    edited = store.edit("bobo", add_images=[photos / "dog_01.jpg"], remove_images=[bo.images[0].id])
    assert [i.sha256 for i in edited.images] != [bo.images[0].sha256] and len(edited.images) == 1
    assert not readable(store, bo.images[0].file)  # no concept refers to it any more

    store.remove("kit")
    assert [c.name for c in store.list()] == ["Bobo"]
    assert store.index_info()["image"]["vectors"] == len(reference_views(Image.new("RGB", (64, 64))))


def test_changes_are_seen_by_the_next_search(store, photos):
    query = store.embedder.embed([Image.open(photos / "cat_00.jpg")])
    assert store.search("image", query, 1) == [[]]
    store.add("kit", [photos / "cat_00.jpg"], category="cat")
    assert store.search("image", query, 1)[0][0].concept == "kit"
    store.edit("kit", rename="tom")
    assert store.search("image", query, 1)[0][0].concept == "tom"
    store.remove("tom")
    assert store.search("image", query, 1) == [[]]


def test_shared_photo_survives_removal_of_one_owner(store, photos):
    a = store.add("a", [photos / "dog_00.jpg"], category="dog")
    store.add("b", [photos / "dog_00.jpg"], category="dog")
    store.remove("a")
    assert readable(store, a.images[0].file)


def bad_images(tmp_path, photos):
    good = (photos / "dog_00.jpg").read_bytes()
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "text.jpg").write_text("not an image")
    (tmp_path / "truncated.jpg").write_bytes(good[: len(good) // 2])
    huge = io.BytesIO()
    Image.new("1", (9000, 9000)).save(huge, "PNG")  # small file, 81 megapixels
    (tmp_path / "huge.png").write_bytes(huge.getvalue())
    Image.new("RGB", (32, 32)).save(tmp_path / "icon.ico")
    Image.new("RGB", (4, 4)).save(tmp_path / "tiny.png")
    return {
        "missing": tmp_path / "missing.jpg",
        "folder": tmp_path,
        "empty": tmp_path / "empty.jpg",
        "not an image": tmp_path / "text.jpg",
        "truncated": tmp_path / "truncated.jpg",
        "enormous": tmp_path / "huge.png",
        "unsupported format": tmp_path / "icon.ico",
        "too small": tmp_path / "tiny.png",
    }


def test_bad_images_are_refused_and_leave_the_store_as_it_was(store, photos, tmp_path):
    store.add("bo", [photos / "dog_00.jpg"], category="dog")
    before = snapshot(store)
    for what, path in bad_images(tmp_path, photos).items():
        with pytest.raises(InvalidImage) as caught:
            store.add("new", [photos / "cat_00.jpg", path], category="cat")
        assert "\n" not in str(caught.value), what
        with pytest.raises(InvalidImage):
            store.edit("bo", add_images=[path], info="should not stick")
        assert snapshot(store) == before, what


@pytest.mark.parametrize(
    ("call", "error"),
    [
        (lambda s, p: s.add("BO", [p / "cat_00.jpg"]), ConceptExists),
        (lambda s, p: s.add("", [p / "cat_00.jpg"]), InvalidName),
        (lambda s, p: s.add("two words", [p / "cat_00.jpg"]), InvalidName),
        (lambda s, p: s.add("ctrl\x07", [p / "cat_00.jpg"]), InvalidName),
        (lambda s, p: s.add("noimage", []), InvalidInput),
        (lambda s, p: s.add("x", [p / "cat_00.jpg"], category=""), InvalidInput),
        (lambda s, p: s.edit("nobody", info="x"), ConceptNotFound),
        (lambda s, p: s.remove("nobody"), ConceptNotFound),
        (lambda s, p: s.edit("bo", rename="kit"), ConceptExists),
        (lambda s, p: s.edit("bo", remove_images=[999]), InvalidInput),
        (lambda s, p: s.edit("bo", remove_images=[s.get("bo").images[0].id]), InvalidInput),
        (lambda s, p: s.edit("bo", unset_attributes=["nope"]), InvalidInput),
    ],
)
def test_bad_requests_change_nothing(store, photos, call, error):
    store.add("bo", [photos / "dog_00.jpg"], category="dog")
    store.add("kit", [photos / "cat_00.jpg"], category="cat")
    before = snapshot(store)
    with pytest.raises(error):
        call(store, photos)
    assert snapshot(store) == before


def test_add_many_is_all_or_nothing(store, photos):
    from rap import NewConcept

    with pytest.raises(ConceptExists):
        store.add_many([NewConcept("a", [photos / "dog_00.jpg"]), NewConcept("A", [photos / "cat_00.jpg"])])
    assert len(store) == 0 and store.index_info() == {}


def test_foreign_or_broken_folders_are_refused(tmp_path):
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "notes.txt").write_text("mine")
    with pytest.raises(StoreError, match="other files"):
        LocalConceptStore(tmp_path / "foreign", encoder="tiny")
    (tmp_path / "file").write_text("x")
    with pytest.raises(StoreError, match="is a file"):
        LocalConceptStore(tmp_path / "file", encoder="tiny")
    (tmp_path / "corrupt").mkdir()
    (tmp_path / "corrupt" / "rap.sqlite").write_bytes(b"garbage" * 100)
    with pytest.raises(StoreError, match="not a readable rap store"):
        LocalConceptStore(tmp_path / "corrupt", encoder="tiny")
    assert (tmp_path / "foreign" / "notes.txt").read_text() == "mine"


def test_newer_schema_is_refused(tmp_path):
    LocalConceptStore(tmp_path / "s", encoder="tiny").close()
    with sqlite3.connect(tmp_path / "s" / "rap.sqlite") as db:
        db.execute("PRAGMA user_version = 99")
    with pytest.raises(StoreError, match="newer"):
        LocalConceptStore(tmp_path / "s", encoder="tiny")


@pytest.mark.parametrize(
    ("one", "other"),
    [((b"ab", b"c"), (b"a", b"bc")), ((None,), (b"",)), ((b"\0" * 8,), (b"\0" * 9,)), ((b"a", None), (None, b"a"))],
    ids=["boundary", "null", "length", "order"],
)
def test_row_digests_tell_rows_apart_that_read_alike(one, other):
    assert row_digest(*one) != row_digest(*other) and row_digest(*one) == row_digest(*one)
    assert len(row_digest(*one)) == 8


def test_encoder_is_recorded_and_never_mixed(store_target, photos):
    from rap.encoders import ENCODERS, l2_normalize

    from conftest import TinyEncoder

    class Other(TinyEncoder):
        dim = 27

        def embed(self, images):
            return l2_normalize(super().embed([image.resize((3, 3)) for image in images])[:, :27])

    ENCODERS.register("other", help="test")(lambda arg, settings: type("O", (Other,), {"id": "other"})(arg))
    with store_target.open(encoder="tiny") as store:
        store.add("bo", [photos / "dog_00.jpg"])
    with pytest.raises(EncoderMismatch, match="tiny"):
        store_target.open(encoder="other")
    with store_target.open(encoder=None) as store:  # no encoder asked: the recorded one
        assert store.encoder_id == "tiny"
    steps = []

    from contextlib import contextmanager

    @contextmanager
    def progress(description, total):
        steps.append((description, total))
        yield lambda n: steps.append(n)

    with store_target.open(encoder="other", on_encoder_change="reembed", progress=progress) as store:
        assert store.encoder_id == "other" and store.index_info()["image"]["dim"] == 27
        assert store.search("image", store.embedder.embed([Image.open(photos / "dog_00.jpg")]), 1)[0][0].concept == "bo"
    assert steps[0] == ("re-embedding", 1)


def test_missing_stale_or_corrupt_index_is_repaired_on_open(tmp_path, photos):
    path = tmp_path / "s"
    with LocalConceptStore(path, encoder="tiny") as store:
        store.add("bo", [photos / "dog_00.jpg"])
        stale = (path / "index" / "image.faiss").read_bytes()
        store.add("kit", [photos / "cat_00.jpg"])
        store.add("tea", [photos / "teapot_00.jpg"])
        store.remove("bo")
    (path / "index" / "image.faiss").write_bytes(stale)  # knows only bo, who is gone
    with LocalConceptStore(path, encoder="tiny") as store:
        assert_consistent(store)
    (path / "index" / "image.faiss").write_bytes(b"corrupt")
    with LocalConceptStore(path, encoder="tiny") as store:
        assert_consistent(store)


def assert_consistent(store):
    """Every concept retrievable by its own image; no vector without a concept."""
    if isinstance(store, LocalConceptStore):  # the FAISS index is a cache of the vectors table
        index = store._index.indexes.get("image")
        stored = {row[0] for row in store._db.execute("SELECT id FROM vectors WHERE space = 'image'")}
        assert set((index.ids() if index else np.empty(0)).tolist()) == stored
    images = sum(len(c.images) for c in store.list())
    assert images <= store.index_info().get("image", {}).get("vectors", 0) <= images * MAX_VIEWS  # views per image
    for concept in store.list():  # photos may be shared, so look among the exact matches
        query = store.embedder.embed([Image.open(store.image_path(concept.images[0].file))])
        exact = {hit.concept for hit in store.search("image", query, images)[0] if hit.distance < 1e-3}
        assert concept.name in exact
    referenced = {i.file for c in store.list() for i in c.images}
    for image in referenced:
        assert store.image_path(image).exists()


def test_a_second_process_sees_changes(store_target, photos):
    reader = store_target.open()
    with store_target.open() as writer:
        writer.add("kit", [photos / "cat_00.jpg"])
    query = reader.embedder.embed([Image.open(photos / "cat_00.jpg")])
    assert reader.search("image", query, 1)[0][0].concept == "kit"
    reader.close()


def test_concept_json_is_stable(store, photos):
    concept = store.add("bo", [photos / "dog_00.jpg"], attributes={"age": "3"})
    data = json.loads(concept.model_dump_json())
    assert set(data) == {"name", "info", "category", "attributes", "images", "created_at", "updated_at"}


def _png(seed: int) -> LoadedImage:
    pixels = np.random.default_rng(seed).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    return decode_image(buffer.getvalue())


def test_the_index_grows_into_ivf_rebuilt_from_sqlite_and_records_its_factory(tmp_path):
    path = tmp_path / "s"
    with LocalConceptStore(path, encoder="tiny", faces="none", approximate_above=100) as store:
        store.add_many([NewConcept(f"c{i}", [_png(i)]) for i in range(30)])  # each image keyed by MAX_VIEWS views
        assert store.index_info()["image"]["factory"] == "IDMap2,Flat"
        store.add_many([NewConcept(f"d{i}", [_png(1000 + i)]) for i in range(40)])
        assert store.index_info()["image"]["factory"] == "IVF64,Flat"
        assert store._meta("index:image:factory") == "IVF64,Flat"
        assert_consistent(store)
        store.remove("c3")
        assert_consistent(store)
    (path / "index" / "image.faiss").unlink()  # rebuilt from the vectors table on open
    with LocalConceptStore(path, encoder="tiny", approximate_above=100) as store:
        assert store.index_info()["image"]["factory"] == "IVF64,Flat" and store.index_info()["image"]["vectors"] == 69 * MAX_VIEWS
        assert_consistent(store)


def test_an_empty_database_beside_images_is_refused_not_cleaned(tmp_path, photos):
    path = tmp_path / "s"
    with LocalConceptStore(path, encoder="tiny") as store:
        store.add("bo", [photos / "dog_00.jpg"])
    images = sorted((path / "images").glob("*/*"))
    for image in images:
        os.utime(image, (1, 1))  # old enough to be collected, were it an orphan
    (path / "rap.sqlite").write_bytes(b"")
    with pytest.raises(StoreError, match="database was lost"):
        LocalConceptStore(path, encoder="tiny")
    assert sorted((path / "images").glob("*/*")) == images


def test_a_store_opened_to_read_is_never_created(tmp_path):
    with pytest.raises(StoreError, match="no store at"):
        LocalConceptStore(tmp_path / "typo", encoder="tiny", create=False)
    assert not (tmp_path / "typo").exists()
    (tmp_path / "empty").mkdir()
    with pytest.raises(StoreError, match="no store at"):
        LocalConceptStore(tmp_path / "empty", encoder="tiny", create=False)
    assert list((tmp_path / "empty").iterdir()) == []


def test_a_new_store_takes_its_models_from_the_settings(tmp_path, photos):
    from rap.settings import Settings

    with LocalConceptStore(tmp_path / "a") as store:  # the built-in defaults
        assert (store.encoder_id, store.faces_id) == (Settings().encoder, Settings().faces)
    with LocalConceptStore(tmp_path / "b", settings=Settings(encoder="tiny", faces="none")) as store:
        assert (store.encoder_id, store.faces_id) == ("tiny", "none")
    with LocalConceptStore(tmp_path / "b", settings=Settings(encoder="other-default")) as store:  # recorded wins
        assert store.encoder_id == "tiny"


def test_a_store_whose_encoder_cannot_load_is_not_left_behind(tmp_path, monkeypatch):
    """The models of a new store load before it is recorded; if they cannot, nothing stays."""
    from rap.errors import ConfigError
    from rap.settings import Settings

    torch = Settings(encoder_runtime="torch", home=tmp_path / "home")  # the int8 encoder runs on ONNX Runtime only
    with pytest.raises(ConfigError, match="ONNX Runtime only"):
        LocalConceptStore(tmp_path / "new" / "store", encoder="offline:efficientnet-lite0-int8", faces="none", settings=torch)
    assert not (tmp_path / "new").exists()


def test_records_are_kept_per_store_and_seen_by_another_process(store_target, photos):
    with store_target.open() as store:
        assert store.recorded("operating-point") is None
        store.record("operating-point", '{"image": 0.8}')
        store.record("model-digest", "abc")
        store.record("model-digest", "def")
    with store_target.open() as again:
        assert again.recorded("operating-point") == '{"image": 0.8}'
        assert again.recorded("model-digest") == "def"
        again.record("model-digest", None)
        assert again.recorded("model-digest") is None
