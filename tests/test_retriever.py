"""The retriever, on a store keyed by the tiny test encoder."""

import math

import pytest
from PIL import Image

from rap import Retriever
from rap.errors import InvalidImage
from rap.retrieval import candidate_names


@pytest.fixture
def filled(store, photos):
    store.add("bo", [photos / "dog_00.jpg", photos / "dog_01.jpg"], info="<bo> is my dog", category="dog")
    store.add("kit", [photos / "cat_00.jpg"], category="cat")
    store.add("tea", [photos / "teapot_00.jpg"], category="teapot")
    return store


def test_whole_image_query_finds_the_concept_even_without_a_detector(filled, photos):
    result = Retriever(filled, "none", top_k=1, threshold=math.inf).retrieve(photos / "dog_00.jpg")
    [only] = result.concepts
    assert only.concept.name == "bo" and only.via == "image" and only.region == "image"
    assert only.distance == pytest.approx(0, abs=1e-3) and only.box == (0, 0, 256, 256)


def test_concepts_are_deduplicated_and_ranked_by_distance(filled, photos):
    result = Retriever(filled, "multiscale", top_k=3, threshold=math.inf).retrieve(photos / "dog_01.jpg")
    names = result.names()
    assert names[0] == "bo" and len(names) == len(set(names)) == 3
    distances = [r.distance for r in result.concepts]
    assert distances == sorted(distances)
    assert len(result.regions) > 1 and result.regions[0].source == "image"


def test_threshold_makes_none_a_possible_answer(filled, photos):
    loose = Retriever(filled, "none", top_k=2, threshold=math.inf).retrieve(photos / "clock_00.jpg")
    strict = Retriever(filled, "none", top_k=2, threshold=0.01).retrieve(photos / "clock_00.jpg")
    assert len(loose.concepts) == 2 and strict.concepts == []


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Where is <bo>?", ["bo"]),
        ("what does BO like", ["bo"]),
        ("is bo's friend kit here? bo.", ["bo", "kit"]),
        ("bob and bonnie", []),
        ("<tea> then <bo>", ["tea", "bo"]),
    ],
)
def test_named_concepts_are_always_retrieved_first(filled, photos, text, expected):
    retriever = Retriever(filled, "none", top_k=2, threshold=0.01)
    assert retriever.retrieve(text=text).names() == expected
    with_image = retriever.retrieve(photos / "clock_00.jpg", text=text)
    assert with_image.names() == expected and all(r.via == "text" for r in with_image.concepts)


def test_text_concepts_come_ahead_of_visual_ones(filled, photos):
    result = Retriever(filled, "none", top_k=2, threshold=math.inf).retrieve(photos / "cat_00.jpg", text="and <tea>?")
    assert result.names() == ["tea", "kit"]
    assert [r.via for r in result.concepts] == ["text", "image"]


def test_a_named_concept_that_also_matched_keeps_its_box(filled, photos):
    result = Retriever(filled, "none", top_k=2, threshold=math.inf).retrieve(photos / "cat_00.jpg", text="is kit here")
    assert result.concepts[0].via == "text" and result.concepts[0].box == (0, 0, 256, 256)


def test_batch_equals_one_by_one(filled, photos):
    retriever = Retriever(filled, "multiscale", top_k=2, threshold=math.inf)
    paths = [photos / "dog_02.jpg", photos / "cat_01.jpg", photos / "teapot_01.jpg"]
    batch = retriever.retrieve_batch(paths, ["", "kit?", None])
    single = [retriever.retrieve(p, text=t) for p, t in zip(paths, ["", "kit?", None])]
    assert [r.to_dict() for r in batch] == [r.to_dict() for r in single]


def test_edits_take_effect_on_the_next_retrieval(filled, photos):
    retriever = Retriever(filled, "none", top_k=1, threshold=math.inf)
    assert retriever.retrieve(photos / "cat_00.jpg").names() == ["kit"]
    filled.edit("kit", rename="tom")
    assert retriever.retrieve(photos / "cat_00.jpg").names() == ["tom"]
    filled.remove("tom")
    assert retriever.retrieve(photos / "cat_00.jpg").names() != ["tom"]


def test_empty_store_and_pil_input(store):
    assert Retriever(store, "multiscale").retrieve(Image.new("RGB", (64, 64))).concepts == []


def test_candidate_names():
    assert candidate_names("Is <Bo> with bob? bo's toy-2, Mr.Bean.") == ["Is", "Bo", "with", "bob", "bo", "s", "toy-2", "Mr.Bean"]


def test_retrieve_many_decodes_batch_by_batch(filled, photos, tmp_path):
    """A bad file late in the list fails only when its batch comes: earlier batches were
    decoded, retrieved and released without it (callers check files up front)."""
    bad = tmp_path / "bad.jpg"
    bad.write_text("garbage")
    retriever = Retriever(filled, "none", top_k=1, threshold=math.inf, batch_images=2)
    results = retriever.retrieve_many([photos / "dog_00.jpg", photos / "cat_00.jpg", bad])
    assert [next(results).names(), next(results).names()] == [["bo"], ["kit"]]
    with pytest.raises(InvalidImage, match="not an image"):
        next(results)


def test_reduced_queries_match_full_ones(filled, photos, tmp_path):
    """Decoding a large photo reduced changes what is retrieved by no more than resampling does."""
    big = tmp_path / "big.jpg"
    Image.open(photos / "dog_01.jpg").resize((1536, 1536), Image.BICUBIC).save(big, quality=95)
    full = Retriever(filled, "multiscale", top_k=3, threshold=math.inf, image_side=4096).retrieve(big)
    small = Retriever(filled, "multiscale", top_k=3, threshold=math.inf, image_side=256).retrieve(big)
    assert small.names() == full.names() and small.image_size == full.image_size == (1536, 1536)
    assert [r.box for r in small.regions] == [r.box for r in full.regions]
    for a, b in zip(small.concepts, full.concepts):
        assert a.distance == pytest.approx(b.distance, abs=0.05)
