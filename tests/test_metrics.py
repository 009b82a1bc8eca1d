"""The evaluation metrics, against cases computed by hand."""

import json
import math

import numpy as np
import pytest

from rap.answers import parse_choice, parse_yes_no
from rap.evaluation.metrics import (
    NameIndex,
    QAResult,
    RecognitionResult,
    Tally,
    average_precision,
    best_threshold,
    caption_scores,
    mean_and_spread,
    mentioned,
    precision_recall_curve,
    qa_accuracy,
    recall_at_k,
    acceptance_and_false_matches,
    recognition_accuracy,
)

NAMES = ["bo", "kit", "my_dog", "shiba-gray", "Mr.Bean", "dog"]


# -- mentioned --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("<bo> sleeps", {"bo"}),
        ("Bo sleeps", {"bo"}),
        ("BO. Then kit,", {"bo", "kit"}),
        ("bo's ball", {"bo"}),
        ("bo’s ball", {"bo"}),
        ("a toy (bo) and [kit]", {"bo", "kit"}),
        ("my_dog, shiba-gray and Mr.Bean.", {"my_dog", "shiba-gray", "Mr.Bean"}),
        ("<my_dog>'s bowl and <Mr.Bean>", {"my_dog", "Mr.Bean"}),
        ("bob and an elbow", set()),
        ("bo-peep, bo_2 and a hot-dog", set()),
        ("my dog, shiba gray, Mr. Bean", {"dog"}),
        ("", set()),
    ],
)
def test_mentioned_finds_whole_words_only(text, expected):
    assert mentioned(text, NAMES) == expected


def test_mentioned_returns_names_as_given_and_accepts_a_prebuilt_index():
    assert mentioned("BO and KIT", ["<Bo>", "Kit"]) == {"Bo", "Kit"}
    index = NameIndex(f"concept_{i}" for i in range(5000))
    assert mentioned("concept_4999 beside Concept_7. concept_50000", index) == {"concept_4999", "concept_7"}


# -- captions ---------------------------------------------------------------------------

CAPTIONS = [
    ("c1", "<bo> and Kit play.", ["bo", "kit"]),  # both named
    ("c2", "bo's ball near bob; bo again, <bo>!", ["bo", "kit"]),  # bo thrice (once), kit missed, bob is not bo
    ("c3", "kit sits with my_dog.", ["kit"]),  # my_dog is wrong
    ("c4", "", ["shiba-gray"]),  # empty caption
    ("c5", "A bo-peep toy by an elbow", []),  # no truth, names only inside other words
    ("c6", "Mr.Bean waves.", []),  # no truth, a wrong name
]


@pytest.fixture
def report():
    return caption_scores(CAPTIONS, NAMES)


def test_caption_items(report):
    items = {item.id: item for item in report.items}
    assert [item.id for item in report.items] == ["c1", "c2", "c3", "c4", "c5", "c6"]

    c1 = items["c1"].tally
    assert (c1.recall, c1.precision, c1.f1) == (1.0, 1.0, 1.0)

    c2 = items["c2"]
    assert c2.named == ("bo",) and c2.missed == ("kit",) and c2.wrong == ()
    assert (c2.tally.recall, c2.tally.precision) == (0.5, 1.0)
    assert c2.tally.f1 == pytest.approx(2 / 3)

    c3 = items["c3"]
    assert c3.named == ("kit", "my_dog") and c3.wrong == ("my_dog",) and c3.missed == ()
    assert (c3.tally.recall, c3.tally.precision) == (1.0, 0.5)
    assert c3.tally.f1 == pytest.approx(2 / 3)

    c4 = items["c4"].tally
    assert (c4.recall, c4.precision, c4.f1) == (0.0, None, 0.0)
    assert items["c4"].missed == ("shiba-gray",)

    c5 = items["c5"].tally
    assert (c5.truth, c5.named, c5.recall, c5.precision, c5.f1) == (0, 0, None, None, None)

    c6 = items["c6"]
    assert c6.wrong == ("Mr.Bean",)
    assert (c6.tally.recall, c6.tally.precision, c6.tally.f1) == (None, 0.0, 0.0)


def test_caption_overall_is_micro_and_macro_skips_undefined(report):
    overall = report.overall
    assert (overall.truth, overall.named, overall.hits) == (6, 6, 4)
    assert overall.recall == pytest.approx(4 / 6) and overall.precision == pytest.approx(4 / 6)
    assert overall.f1 == pytest.approx(2 / 3)
    macro = report.macro
    assert macro["recall"] == pytest.approx((1 + 0.5 + 1 + 0) / 4)  # c1-c4
    assert macro["precision"] == pytest.approx((1 + 1 + 0.5 + 0) / 4)  # c1, c2, c3, c6
    assert macro["f1"] == pytest.approx((1 + 2 / 3 + 2 / 3 + 0 + 0) / 5)  # all but c5


def test_caption_per_concept(report):
    got = {name: (t.truth, t.named, t.hits) for name, t in report.per_concept.items()}
    assert got == {"bo": (2, 2, 2), "kit": (3, 2, 2), "my_dog": (0, 1, 0), "shiba-gray": (1, 0, 0), "Mr.Bean": (0, 1, 0)}
    kit = report.per_concept["kit"]
    assert (kit.recall, kit.precision) == (pytest.approx(2 / 3), 1.0)
    assert (report.per_concept["my_dog"].recall, report.per_concept["my_dog"].precision) == (None, 0.0)
    assert (report.per_concept["shiba-gray"].recall, report.per_concept["shiba-gray"].precision) == (0.0, None)


def test_caption_report_serialises(report):
    data = json.loads(json.dumps(report.to_dict()))
    assert data["overall"]["hits"] == 4 and data["items"][1]["missed"] == ["kit"]
    assert list(data["per_concept"]) == sorted(report.per_concept)


def test_caption_truth_is_matched_case_insensitively_even_outside_the_database():
    report = caption_scores([("x", "<Bo> meets Tea.", ["<BO>", "tea"])], ["bo"])
    [item] = report.items
    assert item.truth == ("bo", "tea") and item.named == ("bo", "tea")
    assert report.overall.f1 == 1.0


def test_tally_f1_is_the_harmonic_mean_where_both_are_defined():
    for tally in (Tally(5, 3, 2), Tally(7, 9, 6), Tally(1, 1, 1)):
        p, r = tally.precision, tally.recall
        assert tally.f1 == pytest.approx(2 * p * r / (p + r))
    assert Tally(2, 2, 0).f1 == 0.0
    assert Tally(3, 4, 1) + Tally(1, 0, 0) == Tally(4, 4, 1)


# -- question answering -----------------------------------------------------------------

OPTIONS = {"A": "Yes", "B": "No"}


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        ("B", "B"),
        ("(b)", "B"),
        ("B.", "B"),
        ("**B**", "B"),
        ("B. No", "B"),
        ("(A) Yes, it is.", "A"),
        ("The answer is B", "B"),
        ("Answer: (A)", "A"),
        ("I think it's (B).", "B"),
        ("The answer is B.\nA. Yes\nB. No", "B"),
        ("Yes", "A"),
        ("no.", "B"),
        ("e.g. yes", "A"),
        ("A dog is in the photo, so no", "B"),  # a leading "A " is an article
        ("the answer is a dog", None),  # lower-case "a" after "answer is" is not option A
        ("yes or no", None),
        ("(A) or (B)", None),
        ("A. Yes\nB. No", None),  # the options echoed back
        ("C", None),
        ("", None),
    ],
)
def test_parse_choice(reply, expected):
    assert parse_choice(reply, OPTIONS) == expected


def test_parse_choice_prefers_the_longer_option_text_and_keeps_the_given_key():
    options = {"A": "Yes", "B": "Yes, definitely", "C": "A red hat"}
    assert parse_choice("Yes, definitely!", options) == "B"
    assert parse_choice("I'd say yes, definitely, since...", options) == "B"
    assert parse_choice("She wears a red hat.", options) == "C"
    assert parse_choice("b", {"a": "x", "b": "y"}) == "b"
    assert parse_choice("same", {"A": "same", "B": "Same"}) is None


def test_qa_accuracy_weighted_is_the_mean_of_visual_and_text():
    results = [
        QAResult("v1", "visual", "A", "A"),
        QAResult("v2", "visual", None, "B"),
        QAResult("v3", "visual", "b", "B"),
        QAResult("t1", "text", "A", "B"),
        QAResult("t2", "text", "B", "B"),
    ]
    report = qa_accuracy(results)
    assert (report.visual.correct, report.visual.total) == (2, 3)
    assert (report.text.correct, report.text.total) == (1, 2)
    assert report.weighted == pytest.approx((2 / 3 + 1 / 2) / 2)
    assert report.unparsed == 1
    assert json.loads(json.dumps(report.to_dict()))["text"]["accuracy"] == 0.5


def test_qa_accuracy_with_one_kind_only_has_no_weighted():
    report = qa_accuracy([QAResult("v", "visual", "A", "A")])
    assert report.visual.value == 1.0 and report.text.value is None and report.weighted is None
    with pytest.raises(ValueError, match="neither"):
        qa_accuracy([QAResult("x", "audio", "A", "A")])  # type: ignore[arg-type]


# -- recognition ------------------------------------------------------------------------


def test_recognition_counts_undecided_as_wrong():
    results = [
        RecognitionResult("p1", True, True),
        RecognitionResult("p2", True, None),
        RecognitionResult("p3", True, False),
        RecognitionResult("p4", True, True),
        RecognitionResult("n1", False, False),
        RecognitionResult("n2", False, None),
        RecognitionResult("n3", False, True),
    ]
    report = recognition_accuracy(results)
    assert (report.positive.correct, report.positive.total) == (2, 4)
    assert (report.negative.correct, report.negative.total) == (1, 3)
    assert report.weighted == pytest.approx((1 / 2 + 1 / 3) / 2)
    assert report.undecided == 2
    assert recognition_accuracy([RecognitionResult("p", True, True)]).weighted is None


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        ("Yes.", True),
        ("no", False),
        ("No, <bo> is not in the image. Yes, there is a dog.", False),
        ("I think yes", True),
        ("I can't tell", None),
        ("Maybe yes, maybe no", None),
        ("Nobody knows", None),
    ],
)
def test_parse_yes_no(reply, expected):
    assert parse_yes_no(reply) is expected


# Sorted: 0.1 T, 0.2 T, 0.2 F, 0.4 F, 0.5 T, inf F; 3 positives, 3 negatives.
SCORES = [0.5, 0.2, 0.1, math.inf, 0.4, 0.2]
LABELS = [True, False, True, False, False, True]


def test_precision_recall_curve_has_one_point_per_distinct_score():
    curve = precision_recall_curve(SCORES, LABELS)
    got = [(p.threshold, p.precision, p.recall, p.positive_accuracy, p.negative_accuracy) for p in curve]
    expected = [
        (0.1, 1, 1 / 3, 1 / 3, 1),
        (0.2, 2 / 3, 2 / 3, 2 / 3, 2 / 3),  # the tied pair enters together
        (0.4, 2 / 4, 2 / 3, 2 / 3, 1 / 3),
        (0.5, 3 / 5, 1, 1, 1 / 3),
        (math.inf, 3 / 6, 1, 1, 0),
    ]
    assert got == [pytest.approx(e) for e in expected]
    assert curve[1].to_dict()["balanced_accuracy"] == pytest.approx(2 / 3)


def test_average_precision_steps_through_recall():
    expected = (1 / 3) * 1 + (1 / 3) * (2 / 3) + 0 * (2 / 4) + (1 / 3) * (3 / 5) + 0 * (3 / 6)
    assert average_precision(SCORES, LABELS) == pytest.approx(expected)
    assert average_precision([0.1, 0.2, 0.3], [True, True, False]) == pytest.approx(1.0)


def test_best_threshold_maximises_balanced_accuracy_lowest_on_ties():
    best = best_threshold([0.1, 0.3, 0.6, 0.9], [True, True, False, False])
    assert best.threshold == 0.3 and best.balanced_accuracy == 1.0
    assert best_threshold(SCORES, LABELS).threshold == 0.1  # 0.1, 0.2 and 0.5 all reach 2/3


@pytest.mark.parametrize("seed", range(5))
def test_curve_and_average_precision_agree_with_scikit_learn(seed):
    """scikit-learn ranks by higher score, rap by lower distance: negate, and compare every point."""
    sklearn_metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(seed)
    labels = rng.random(60) < 0.4
    labels[:2] = [True, False]
    scores = np.round(rng.random(60) + 0.3 * ~labels, 1)  # rounded: ties must enter together

    ours = precision_recall_curve(scores.tolist(), labels.tolist())
    precision, recall, thresholds = sklearn_metrics.precision_recall_curve(labels, -scores)
    theirs = sorted(zip(-thresholds, precision[:-1], recall[:-1], strict=True))  # the last point is sklearn's (1, 0)
    # older scikit-learn stops at the first threshold of full recall; every point it gives must be ours
    assert [(p.threshold, p.precision, p.recall) for p in ours[: len(theirs)]] == [pytest.approx(t) for t in theirs]
    assert all(p.recall == 1 for p in ours[len(theirs) :])
    expected = sklearn_metrics.average_precision_score(labels, -scores)
    assert average_precision(scores.tolist(), labels.tolist()) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("scores", "labels", "message"),
    [
        ([0.1, 0.2], [True], "one label per score"),
        ([0.1, float("nan")], [True, False], "NaN"),
        ([0.1, 0.2], [True, True], "both"),
        ([], [], "both"),
    ],
)
def test_curve_rejects_what_it_cannot_score(scores, labels, message):
    with pytest.raises(ValueError, match=message):
        precision_recall_curve(scores, labels)


# -- retriever --------------------------------------------------------------------------


def test_recall_at_k_counts_each_true_concept():
    ranked = [
        (["bo", "kit", "tea"], ["bo"]),  # rank 1
        (["kit", "kit", "<Bo>"], ["bo", "Kit"]),  # repeats collapse: kit 1, bo 2
        (["tea"], ["bo"]),  # never retrieved
        (["tea"], []),  # nothing to recall: adds no pair
    ]
    assert recall_at_k(ranked, ks=(1, 2, 5)) == {1: 2 / 4, 2: 3 / 4, 5: 3 / 4}


def test_recall_at_k_rejects_undefined_cases():
    with pytest.raises(ValueError, match="no item"):
        recall_at_k([(["bo"], [])])
    with pytest.raises(ValueError, match="positive"):
        recall_at_k([(["bo"], ["bo"])], ks=(0,))


def test_mean_and_spread_uses_the_sample_deviation():
    mean, spread = mean_and_spread([0.90, 0.93, 0.96])
    assert mean == pytest.approx(0.93) and spread == pytest.approx(0.03)
    assert mean_and_spread([0.5]) == (0.5, 0.0)
    with pytest.raises(ValueError):
        mean_and_spread([])


def test_acceptance_counts_true_concepts_labelled_a_match_and_false_matches_photos_of_none():
    decided = [(["bo"], ["bo"]), (["kit"], ["bo", "Kit"]), ([], ["tea"]), (["bo"], []), ([], [])]
    assert acceptance_and_false_matches(decided) == (2 / 4, 1 / 2)
    assert acceptance_and_false_matches([(["bo"], ["bo"])]) == (1.0, None)
