"""A store records the digest of the model file its vectors came from, and keeps adds to that file."""

from __future__ import annotations

import pytest
from conftest import TinyEncoder

from rap.cli import run
from rap.errors import EncoderMismatch
from rap.images import load_image
from rap.store.base import MODEL_DIGEST

FIRST, SECOND = "a" * 64, "b" * 64


class FiledEncoder(TinyEncoder):
    """The tiny encoder as if loaded from a model file with this digest: same id, same vectors."""

    def __init__(self, digest: str) -> None:
        super().__init__("")
        self.model_digest = digest


def test_a_process_with_another_model_file_reads_but_does_not_add(store_target, photos) -> None:
    with store_target.open(encoder=FiledEncoder(FIRST)) as store:
        store.add("bo", [photos / "dog_00.jpg"])
        assert store.recorded(MODEL_DIGEST) == FIRST
    with store_target.open(encoder=FiledEncoder(SECOND)) as other:
        assert other.get("bo").name == "bo"  # reads keep working
        vector = other.embedder.embed([load_image(photos / "dog_01.jpg").image])
        assert other.search("image", vector, 1)[0][0].concept == "bo"
        for write in (lambda: other.add("kit", [photos / "cat_00.jpg"]), lambda: other.edit("bo", info="a corgi")):
            with pytest.raises(EncoderMismatch, match="reembed") as refused:
                write()
            assert "\n" not in str(refused.value) and "bbbbbbbbbbbb" in str(refused.value)
        assert [c.name for c in other.list()] == ["bo"] and other.get("bo").info == ""
        other.reembed()  # every vector from this file now: it is the store's
        assert other.recorded(MODEL_DIGEST) == SECOND
        other.add("kit", [photos / "cat_00.jpg"])
    with store_target.open(encoder=FiledEncoder(FIRST)) as first, pytest.raises(EncoderMismatch):
        first.add("tea", [photos / "teapot_00.jpg"])


def test_a_store_whose_vectors_predate_the_record_waits_for_reembed(store_target, photos) -> None:
    with store_target.open(encoder=FiledEncoder(FIRST)) as store:
        store.add("bo", [photos / "dog_00.jpg"])
        store.record(MODEL_DIGEST, None)  # as a store made before rap recorded model files
    with store_target.open(encoder=FiledEncoder(FIRST)) as store:
        with pytest.raises(EncoderMismatch, match="before rap recorded model files.*reembed"):
            store.add("kit", [photos / "cat_00.jpg"])
        store.reembed()
        store.add("kit", [photos / "cat_00.jpg"])
        assert store.recorded(MODEL_DIGEST) == FIRST


def test_an_encoder_without_a_model_file_records_nothing(store_target, photos) -> None:
    with store_target.open() as store:
        store.add("bo", [photos / "dog_00.jpg"])
        assert store.recorded(MODEL_DIGEST) is None


def test_the_cli_refuses_in_one_line_naming_rap_reembed(tmp_path, photos, capsys, monkeypatch) -> None:
    from rap.encoders import ENCODERS

    monkeypatch.setattr(ENCODERS, "_entries", dict(ENCODERS._entries))  # the test encoder leaves with the test
    digest = {"value": FIRST}
    ENCODERS.register("filed", help="test: the tiny encoder with a model file")(lambda argument, settings: _filed(digest["value"]))
    flags = ["--db", str(tmp_path / "db"), "--encoder", "filed", "--faces", "none"]
    assert run([*flags, "concept", "add", "bo", "-i", str(photos / "dog_00.jpg")]) == 0
    digest["value"] = SECOND
    capsys.readouterr()
    code = run([*flags, "concept", "add", "kit", "-i", str(photos / "cat_00.jpg")])
    err = capsys.readouterr().err
    assert code != 0 and err.count("\n") == 1 and "reembed" in err
    assert run([*flags, "concept", "list"]) == 0


def _filed(digest: str) -> FiledEncoder:
    encoder = FiledEncoder(digest)
    encoder.id = "filed"
    return encoder

