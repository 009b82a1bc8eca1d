"""Retrieval quality on real photos with the real offline models (EfficientNet-Lite0 int8, dlib)."""

import math

import pytest
from PIL import Image, ImageOps

from rap import LocalConceptStore, Retriever
from rap.cli import run

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def offline_store(tmp_path_factory):
    photos = __import__("conftest").PHOTOS
    store = LocalConceptStore(tmp_path_factory.mktemp("q") / "store", encoder="offline:efficientnet-lite0-int8", faces="dlib")
    store.add("bo", [photos / "dog_00.jpg"], category="dog")
    store.add("kit", [photos / "cat_00.jpg"], category="cat")
    store.add("tea", [photos / "teapot_00.jpg"], category="teapot")
    store.add("eileen", [photos / "astronaut.jpg"], category="person")
    yield store
    store.close()


OTHER_PHOTOS = [("dog_01.jpg", "bo"), ("dog_02.jpg", "bo"), ("cat_01.jpg", "kit"), ("teapot_01.jpg", "tea")]


@pytest.mark.parametrize(("photo", "name"), OTHER_PHOTOS)
@pytest.mark.parametrize("detector", ["none", "multiscale"])
def test_another_photo_of_a_remembered_subject_is_retrieved_first(offline_store, photos, photo, name, detector):
    result = Retriever(offline_store, detector, top_k=2, threshold=math.inf).retrieve(photos / photo)
    assert result.names()[:1] == [name]


def test_other_photos_of_remembered_subjects_are_accepted_by_the_calibrated_threshold(offline_store, photos):
    """With the default detector; the benchmarks accept 0.91 to 0.98 of such photos
    (BENCHMARKS.md), so one borderline photo in four may fall just outside (the
    teapot does, at 1.0004 times the threshold, with the int8 encoder)."""
    retriever = Retriever(offline_store, "multiscale", top_k=2)
    accepted = [retriever.retrieve(photos / photo).matches()[:1] == [name] for photo, name in OTHER_PHOTOS]
    assert sum(accepted) >= 3, accepted


def test_a_subject_never_remembered_matches_nothing(offline_store, photos):
    for photo in ("clock_00.jpg", "clock_01.jpg"):
        result = Retriever(offline_store, "multiscale", top_k=2).retrieve(photos / photo)
        assert len(result.concepts) == 2 and result.matches() == []  # the top K, each labelled no match
        assert Retriever(offline_store, "multiscale", top_k=2, strict=True).retrieve(photos / photo).concepts == []


def test_a_person_is_matched_by_face(offline_store, photos, tmp_path):
    assert offline_store.get("eileen").images[0].face_box is not None
    assert offline_store.index_info()["face"]["vectors"] == 1
    query = ImageOps.mirror(Image.open(photos / "astronaut.jpg")).resize((200, 200))
    result = Retriever(offline_store, "none", top_k=1).retrieve(query)
    [match] = result.concepts
    assert match.concept.name == "eileen" and match.region == "face" and match.match


@pytest.mark.parametrize("detector", ["none", "multiscale"])
def test_another_persons_portrait_is_not_taken_for_a_remembered_person(offline_store, photos, detector):
    retriever = Retriever(offline_store, detector, top_k=2)
    assert retriever.retrieve(photos / "hopper.jpg").matches() == []
    assert retriever.locate(photos / "hopper.jpg", "eileen").match is False
    match = retriever.locate(ImageOps.mirror(Image.open(photos / "astronaut.jpg")), "eileen")
    assert match.match and match.region == "face"


def test_photos_retrieved_on_several_threads_get_what_one_thread_gets(offline_store, photos):
    """Decoding, embedding and faces on several threads at once (rap.threads) change no result."""
    queries = [photos / name for name in ("dog_01.jpg", "astronaut.jpg", "cat_01.jpg", "hopper.jpg", "teapot_01.jpg")] * 2
    one, three = (Retriever(offline_store, "multiscale", top_k=3, cpu_threads=n, batch_images=4) for n in (1, 3))
    assert [r.to_dict() for r in three.retrieve_batch(queries)] == [r.to_dict() for r in one.retrieve_batch(queries)]


def test_demo_runs_offline(capsys):
    assert run(["demo"]) == 0
    out = capsys.readouterr().out
    assert "remembered <bo>" in out and "none of your concepts" in out
    assert "used <kit>: retrieved by text" in out and "edited the description of <tea>" in out
