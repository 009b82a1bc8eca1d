"""Bulk adds decode and embed a batch at a time, hold only vectors, and stay all-or-nothing."""

from __future__ import annotations

import shutil

import pytest
from PIL import Image

from rap import LocalConceptStore, NewConcept
from rap.errors import InvalidImage


def test_bulk_add_in_batches_keeps_full_sizes_and_every_image(tmp_path, photos):
    big = tmp_path / "big.jpg"
    Image.open(photos / "dog_00.jpg").resize((900, 600)).save(big)
    with LocalConceptStore(tmp_path / "s", encoder="tiny", faces="none", image_side=64, batch_images=2) as store:
        added = store.add_many(
            [NewConcept("bo", [big, photos / "dog_01.jpg", photos / "dog_02.jpg"]), NewConcept("kit", [photos / "cat_00.jpg"])]
        )
        assert [len(c.images) for c in added] == [3, 1]
        assert (added[0].images[0].width, added[0].images[0].height) == (900, 600)
        assert (store.image_path(added[0].images[0].file)).read_bytes() == big.read_bytes()
        assert store.search("image", store.concept_vectors("kit", "image"), 1)[0][0].concept == "kit"


def test_a_file_changed_during_a_bulk_add_writes_nothing(tmp_path, photos):
    first, second = tmp_path / "a.jpg", tmp_path / "b.jpg"
    shutil.copy(photos / "dog_00.jpg", first)
    shutil.copy(photos / "cat_00.jpg", second)

    def progress(done: int) -> None:  # after the first batch, someone overwrites its file
        shutil.copy(photos / "teapot_00.jpg", first)

    with LocalConceptStore(tmp_path / "s", encoder="tiny", faces="none", batch_images=1) as store:
        with pytest.raises(InvalidImage, match="changed while it was being added"):
            store.add_many([NewConcept("bo", [first]), NewConcept("kit", [second])], progress)
        assert len(store) == 0 and not list((tmp_path / "s").glob("images/*/*"))


def test_a_bad_file_anywhere_fails_before_any_embedding(tmp_path, photos):
    bad = tmp_path / "bad.jpg"
    bad.write_text("garbage")
    calls = []
    with LocalConceptStore(tmp_path / "s", encoder="tiny", faces="none", batch_images=1) as store:
        with pytest.raises(InvalidImage, match="not an image"):
            store.add_many([NewConcept("bo", [photos / "dog_00.jpg"]), NewConcept("kit", [bad])], calls.append)
        assert calls == [] and len(store) == 0
