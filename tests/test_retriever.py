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


def test_none_of_your_concepts_is_a_label_and_strict_mode_a_filter(filled, photos):
    loose = Retriever(filled, "none", top_k=2, threshold=math.inf).retrieve(photos / "clock_00.jpg")
    ranked = Retriever(filled, "none", top_k=2, threshold=0.01).retrieve(photos / "clock_00.jpg")
    strict = Retriever(filled, "none", top_k=2, threshold=0.01, strict=True).retrieve(photos / "clock_00.jpg")
    assert len(loose.concepts) == 2 and loose.matches() == loose.names()
    # the top K are all there, each labelled: nothing is hidden from a model that can look
    assert ranked.names() == loose.names() and ranked.matches() == [] and strict.concepts == []
    assert [c.to_dict()["match"] for c in ranked.concepts] == [False, False]
    assert ranked.concepts[0].to_dict()["space"] == "image" and ranked.concepts[0].weak


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
    named = with_image.concepts[: len(expected)]
    assert [r.concept.name for r in named] == expected and all(r.via == "text" for r in named)
    assert with_image.matches() == []  # named, and still labelled by what the photo shows
    strict = Retriever(filled, "none", top_k=2, threshold=0.01, strict=True).retrieve(photos / "clock_00.jpg", text=text)
    assert strict.names() == expected


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


# -- which matches count: thresholds per detector, faces that admit, confirm or reject ------
from rap.retrieval.decision import OperatingPoint, decide, match_distances, per_concept  # noqa: E402
from rap.retrieval.evidence import Candidate, PhotoEvidence, crowding  # noqa: E402


def test_image_threshold_is_calibrated_per_detector(filled, photos, monkeypatch):
    encoder = filled.embedder.encoder
    monkeypatch.setattr(encoder, "match_threshold", 2.0)
    monkeypatch.setattr(encoder, "detector_match_thresholds", {"multiscale": 0.5, "selective-search": 0.7}, raising=False)
    assert encoder.threshold_for("none") == 2.0
    assert encoder.threshold_for("multiscale:0.75,0.5") == 0.5
    assert encoder.threshold_for("owlv2:x") == 0.5  # not calibrated: the strictest known
    query = photos / "dog_02.jpg"
    [whole] = Retriever(filled, "none", top_k=1).retrieve(query).concepts
    [cut] = Retriever(filled, "multiscale", top_k=1, threshold=math.inf).retrieve(query).concepts
    assert whole.score == pytest.approx(whole.distance / 2.0) and whole.score <= 1
    assert cut.score == pytest.approx(cut.distance / 0.5) and cut.score > 1
    [weak] = Retriever(filled, "multiscale", top_k=1).retrieve(query).concepts
    assert weak.concept.name == cut.concept.name and not weak.match
    assert Retriever(filled, "multiscale", top_k=1, strict=True).retrieve(query).concepts == []


def candidate(concept: str, distance: float, region: str = "image", crowding: float | None = None) -> Candidate:
    return Candidate(concept, distance, (0, 0, 8, 8), region, crowding)


#: image threshold 1, ratio test 0.93, faces admit within 1 and confirm within 1.5
POINT = OperatingPoint(image_threshold=1.0, calibrated_image=1.0, distinct_ratio=0.93, face_threshold=1.0, face_confirm=1.5)


def decide_names(image: list[Candidate], faces: list[Candidate], people: set[str], has_faces: bool = True, point=POINT) -> list[str]:
    """The matches of one photo's candidates, as concept:region, with their labels."""
    decided = decide(PhotoEvidence(image, faces, has_faces), point, lambda names: people & set(names))
    assert len(decided) == len(image) + len(faces)  # every candidate is labelled, none dropped
    return sorted(f"{c.concept}:{c.region}" for c in per_concept(decided) if c.match)


def test_a_close_face_admits_a_person_on_its_own():
    assert decide_names([], [candidate("ann", 0.9, "face")], {"ann"}) == ["ann:face"]


def test_a_face_in_the_doubtful_band_only_confirms_an_image_match():
    doubtful = [candidate("ann", 1.2, "face")]
    assert decide_names([], doubtful, {"ann"}) == []
    assert decide_names([candidate("ann", 2.0)], doubtful, {"ann"}) == []  # the image does not match either
    assert decide_names([candidate("ann", 0.8)], doubtful, {"ann"}) == ["ann:image"]
    assert decide_names([candidate("ann", 0.8)], [candidate("ann", 0.5, "face")], {"ann"}) == ["ann:face"]


def test_a_face_unlike_the_persons_labels_their_image_match_no_match():
    image = [candidate("ann", 0.8), candidate("mug", 0.7)]
    stranger = [candidate("ann", 1.9, "face")]
    assert decide_names(image, stranger, {"ann"}) == ["mug:image"]
    assert decide_names(image, [], {"ann"}) == ["mug:image"]  # faces nearest to no one stored
    assert decide_names(image, [], {"ann"}, has_faces=False) == ["ann:image", "mug:image"]  # no face: the image decides
    assert decide_names(image, [candidate("ann", 1.4, "face")], {"ann"}) == ["ann:image", "mug:image"]
    # rejected, but still there for the model, labelled no match and ranked behind the match
    ranked = per_concept(decide(PhotoEvidence(image, stranger, True), POINT, lambda names: {"ann"} & set(names)))
    assert [(c.concept, c.match) for c in ranked] == [("mug", True), ("ann", False), ("ann", False)][:len(ranked)]


def test_a_region_near_several_concepts_at_once_counts_for_none():
    assert crowding([0.5, 0.9]) == pytest.approx(0.5 / 0.9) and crowding([0.5]) is None
    apart = candidate("bo", 0.5, crowding=0.5 / 0.9)
    crowded = candidate("bo", 0.85, crowding=0.85 / 0.9)
    assert decide_names([apart], [], set()) == ["bo:image"]
    assert decide_names([crowded], [], set()) == []
    assert decide_names([crowded], [], set(), point=POINT.with_image(1.0, None)) == ["bo:image"]  # no ratio test
    assert decide_names([crowded], [], set(), point=POINT.with_image(math.inf, 0.93)) == ["bo:image"]  # inf keeps all


def test_matches_come_before_closer_weak_candidates():
    """A region near several concepts at once fails the ratio test: its nearest stays, labelled weak,
    behind a match from another region, so weak candidates never push a match out of the top K."""
    image = [candidate("kit", 0.5, crowding=0.98), candidate("tea", 0.51, crowding=0.98), candidate("bo", 0.9, crowding=0.5)]
    ranked = per_concept(decide(PhotoEvidence(image), POINT, lambda names: set()))
    assert [(c.concept, c.match) for c in ranked] == [("bo", True), ("kit", False), ("tea", False)]


def test_match_distances_tell_each_thresholds_outcome():
    image = [candidate("bo", 0.7), candidate("bo", 0.6, crowding=0.99), candidate("kit", 0.9), candidate("ann", 0.5)]
    faces = [candidate("sue", 0.5, "face")]
    at = match_distances(PhotoEvidence(image, faces, True), POINT, lambda names: {"ann", "sue"} & set(names))
    # bo's closer region is crowded; ann's face is unlike every face here; sue's face admits her at any threshold
    assert at == {"bo": 0.7, "kit": 0.9, "sue": 0.0}
    for threshold in (0.65, 0.8, 1.0):
        point = POINT.with_image(threshold, 0.93)
        matched = decide_names(image, faces, {"ann", "sue"}, point=point)
        assert {m.split(":")[0] for m in matched} == {name for name, needed in at.items() if needed <= threshold}


def test_a_reference_is_keyed_by_its_whole_image_and_centre_crops(filled):
    from rap.reference_views import reference_views

    views = reference_views(Image.new("RGB", (200, 100)))
    assert [box for _, box in views] == [None, (25, 12, 175, 87), (50, 25, 150, 75)]
    assert [view.size for view, _ in views] == [(200, 100), (150, 75), (100, 50)]
    assert len(filled.concept_vectors("kit", "image")) == len(views)


def test_locate_refines_the_best_box_by_the_regions_nearly_as_close():
    from rap.retrieval.retriever import vote_box

    best = Candidate("bo", 0.50, (0, 0, 100, 100), "detector")
    near = Candidate("bo", 0.52, (20, 20, 120, 120), "detector")  # half as close as it could be: weight 1/2
    far = Candidate("bo", 0.70, (300, 300, 400, 400), "detector")
    assert vote_box(best, [best, near, far], 0.04) == (7, 7, 107, 107)
    assert vote_box(best, [best, near, far], 0.0) == best.box  # 0 turns voting off
    assert vote_box(best, [best, far], 0.04) == best.box


def test_a_remembering_encoder_keeps_the_calibration_the_decision_reads(filled, monkeypatch):
    """rap eval wraps the encoder to embed each photo once; its decision must be the retriever's own."""
    from rap.encoders.memo import RememberingEncoder

    encoder = filled.embedder.encoder
    monkeypatch.setattr(encoder, "detector_match_thresholds", {"multiscale": 0.5}, raising=False)
    monkeypatch.setattr(encoder, "distinct_ratio", 0.9, raising=False)
    before = Retriever(filled, "multiscale").operating_point
    monkeypatch.setattr(filled.embedder, "encoder", RememberingEncoder(encoder))
    assert Retriever(filled, "multiscale").operating_point == before and before.image_threshold == 0.5
