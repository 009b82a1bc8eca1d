"""Spatial verification (rap.retrieval.verify) and the fitted match decision (rap.retrieval.match_model)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import pytest
from PIL import Image

from rap.concepts import Concept, ConceptImage
from rap.retrieval.match_model import FEATURES, Evidence, MatchModel, Verification, other_distances, relabel
from rap.retrieval.verify import ReferenceFeatures, Verifier, features, inliers
from rap.settings import Settings

PHOTOS = Path(__file__).parent / "photos"


def photo(name: str) -> Image.Image:
    return Image.open(PHOTOS / name).convert("RGB")


def test_a_turned_smaller_crop_of_a_photo_verifies_and_an_unrelated_photo_does_not() -> None:
    teapot = photo("teapot_00.jpg")
    reference = features(teapot, 480)
    # the reference as a query would see it: part of it, turned 15 degrees, at 3/4 size, inside a larger frame
    part = teapot.crop((20, 20, 236, 236)).rotate(15, resample=Image.Resampling.BICUBIC, expand=True)
    part = part.resize((part.width * 3 // 4, part.height * 3 // 4))
    scene = photo("astronaut.jpg").resize((400, 400))
    scene.paste(part, (120, 90))
    same = inliers(reference, features(scene, 480))
    unrelated = max(inliers(reference, features(photo(name), 480)) for name in ("astronaut.jpg", "dog_00.jpg", "clock_01.jpg"))
    assert same >= 25
    assert unrelated <= 8
    assert same >= 4 * max(unrelated, 1)


def test_images_without_features_have_no_inliers() -> None:
    blank = features(Image.new("RGB", (200, 200), "grey"), 480)
    assert len(blank) == 0
    assert inliers(blank, features(photo("cat_00.jpg"), 480)) == 0
    assert inliers(features(photo("cat_00.jpg"), 480), blank) == 0


def test_reference_features_are_computed_once_per_key_and_the_oldest_dropped() -> None:
    loads: list[str] = []

    def load(key: object) -> Image.Image:
        loads.append(str(key))
        return photo(str(key))

    kept = ReferenceFeatures(load, 256, capacity=2)
    first = kept("cat_00.jpg")
    assert kept("cat_00.jpg") is first
    kept("dog_00.jpg")
    kept("clock_00.jpg")  # drops cat_00, the least recently used
    kept("cat_00.jpg")
    assert loads == ["cat_00.jpg", "dog_00.jpg", "clock_00.jpg", "cat_00.jpg"]


class _Store:
    """What Verifier asks of a store: where an image file is."""

    def image_path(self, image_file: str) -> Path:
        return PHOTOS / image_file


def _concept(*files: str) -> Concept:
    now = datetime.now(timezone.utc)
    images = [ConceptImage(id=i, file=f, sha256="0" * 64, width=256, height=256) for i, f in enumerate(files)]
    return Concept(name="pot", category="teapot", images=images, created_at=now, updated_at=now)


def test_verifier_takes_a_concepts_best_reference_and_looks_in_the_region_that_matched() -> None:
    verifier = Verifier(_Store(), query_side=480, reference_side=480)
    scene = photo("dog_00.jpg").resize((512, 512))
    scene.paste(photo("teapot_00.jpg").resize((200, 200)), (300, 300))
    with_teapot = verifier.inliers(_concept("cat_00.jpg", "teapot_00.jpg"), verifier.query(scene, (300, 300, 500, 500)))
    without = verifier.inliers(_concept("cat_00.jpg"), verifier.query(scene, (300, 300, 500, 500)))
    elsewhere = verifier.inliers(_concept("teapot_00.jpg"), verifier.query(scene, (0, 0, 200, 200)))
    assert with_teapot >= 20
    assert without <= 8 and elsewhere <= 8


def _model(cut: float = 0.5) -> MatchModel:
    return MatchModel({"distance": -8.0, "ratio": -4.0, "inliers": 1.5, "whole_image": -0.5, "log_concepts": -0.2}, 9.0, cut, "offline:efficientnet-lite0")


def test_the_match_probability_rises_with_inliers_and_falls_with_distance_and_crowding() -> None:
    model = _model()
    base = Evidence(0.8, 1.0, 0, "detector", 30)
    assert model.probability(Evidence(0.8, 1.0, 40, "detector", 30)) > model.probability(base)
    assert model.probability(Evidence(1.0, 1.05, 0, "detector", 30)) < model.probability(base)
    assert model.probability(Evidence(0.8, 0.82, 0, "detector", 30)) < model.probability(base)
    assert model.matches(base) == (model.probability(base) >= 0.5)
    assert not _model(cut=1.0).matches(base)


def test_a_candidate_alone_has_no_rival_and_the_others_are_measured_against_the_best() -> None:
    assert other_distances([0.7]) == [None]
    assert other_distances([0.7, 0.9, 1.0]) == [0.9, 0.7, 0.7]
    alone = Evidence(0.8, None, None, "image", 1).vector()
    assert alone["ratio"] == 1.0 and alone["inliers"] == 0.0 and alone["whole_image"] == 1.0


def test_the_default_model_parses_and_holds_for_the_float_and_int8_encoders_alone() -> None:
    model = MatchModel.from_mapping(Settings().match_model)
    assert set(model.weights) == set(FEATURES)
    assert model.applies_to("offline:efficientnet-lite0-int8") and model.applies_to("offline:efficientnet-lite0")
    assert not model.applies_to("clip:openai/clip-vit-large-patch14-336")
    with pytest.raises(ValueError, match="weights"):
        MatchModel.from_mapping({"weights": {"distance": 1.0}, "bias": 0, "cut": 0.5, "encoder": "x"})


@dataclass(frozen=True)
class _Candidate:
    """The fields of a retrieval candidate that the relabelling reads and writes."""

    concept: str
    distance: float
    region: str
    match: bool = True
    box: tuple[int, int, int, int] = (0, 0, 10, 10)


def test_relabel_verifies_only_the_undecided_top_concepts_and_keeps_face_verdicts() -> None:
    # a model that accepts on inliers alone: p >= 0.5 from 7 inliers (log1p(7) * 5 - 10 > 0)
    model = MatchModel({"distance": 0.0, "ratio": 0.0, "inliers": 5.0, "whole_image": 0.0, "log_concepts": 0.0}, -10.0, 0.5, "x")
    decided = [
        _Candidate("tea", 0.70, "detector"),
        _Candidate("tea", 0.90, "image"),
        _Candidate("kit", 0.80, "detector"),
        _Candidate("bo", 0.85, "detector", match=False),  # rejected by the photo's faces
        _Candidate("bo", 0.20, "face", match=True),
        _Candidate("far", 1.10, "image"),
    ]
    asked: list[str] = []

    def inliers(candidate: _Candidate) -> int:
        asked.append(candidate.concept)
        return {"tea": 30, "bo": 50}.get(candidate.concept, 1)

    out = relabel(decided, 4, Verification(model, top=3, side=320), inliers)
    assert asked == ["tea", "kit", "bo"]  # the three nearest concepts, never "far"
    labels = [(c.concept, c.region, c.match) for c in out]
    assert labels == [("tea", "detector", True), ("tea", "image", True), ("kit", "detector", False),
                      ("bo", "detector", False), ("bo", "face", True), ("far", "image", False)]  # fmt: skip
    # a model that accepts on distance alone asks for no verification
    eager = MatchModel({"distance": 0.0, "ratio": 0.0, "inliers": 0.0, "whole_image": 0.0, "log_concepts": 0.0}, 5.0, 0.5, "x")
    asked.clear()
    assert all(c.match for c in relabel(decided[:3], 4, Verification(eager, 3, 320), inliers))
    assert asked == []


def test_with_verification_on_the_retriever_labels_by_the_model_and_the_inliers(store, tmp_path: Path) -> None:
    from rap import Retriever
    from rap.settings import resolve

    store.add("tea", [PHOTOS / "teapot_00.jpg"], category="teapot")
    store.add("kit", [PHOTOS / "cat_00.jpg"], category="cat")
    scene = photo("dog_00.jpg").resize((512, 512))
    scene.paste(photo("teapot_00.jpg").resize((300, 300)), (200, 200))
    query = tmp_path / "scene.png"
    scene.save(query)
    # the tiny test encoder's distances mean nothing: a model that goes by the inliers alone
    by_inliers = MatchModel({"distance": 0.0, "ratio": 0.0, "inliers": 5.0, "whole_image": 0.0, "log_concepts": 0.0}, -10.0, 0.5, store.encoder_id)
    verified = Retriever(store, "multiscale", top_k=2, verification=Verification(by_inliers, top=2, side=320))
    labels = {r.concept.name: r.match for r in verified.retrieve(query).concepts}
    assert labels == {"tea": True, "kit": False}
    assert not any(r.match for r in verified.retrieve(PHOTOS / "clock_00.jpg").concepts)
    # a threshold the user sets is obeyed as it stands: the model is not used
    assert all(r.match for r in Retriever(store, "multiscale", top_k=2, threshold=float("inf"), verification=Verification(by_inliers, 2, 320)).retrieve(PHOTOS / "clock_00.jpg").concepts)
    # the setting builds it; off by default
    assert Retriever.from_settings(store, resolve().settings).verification is None
    on = Retriever.from_settings(store, resolve({"verify": True}).settings).verification
    assert on is not None and on.top == 3 and on.model.applies_to("offline:efficientnet-lite0-int8")
