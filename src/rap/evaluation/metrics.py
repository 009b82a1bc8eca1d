"""The paper's numbers, as pure functions of what a run collected.

Nothing here loads a model or reads a file: a run gathers captions, chosen
letters, yes/no answers, distances and rankings, and these functions turn
them into the figures of the paper's tables (section 4, appendix C), so the
definitions can be checked by hand in the tests.

Concept names are compared the way the store compares them: without ``<>``,
NFC-normalised and case-folded (:func:`rap.concepts.name_key`). Values that are
undefined (a share of nothing) are ``None``, never a silent 0 or 1.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from rap.concepts import name_key
from rap.retrieval.text import candidate_names

QuestionKind = Literal["visual", "text"]


def _clean(name: str) -> str:
    return name.strip().strip("<>").strip()


def _key(name: str) -> str:
    return name_key(_clean(name))


def _share(part: int, whole: int) -> float | None:
    return part / whole if whole else None


def _mean(values: Iterable[float | None]) -> float | None:
    defined = [v for v in values if v is not None]
    return sum(defined) / len(defined) if defined else None


# -- names in captions ---------------------------------------------------------------


class NameIndex:
    """Concept names made ready to be found in many captions.

    A caption is split into candidate words once (:func:`candidate_names`) and
    each word is looked up, so a database of thousands of names costs no more
    per caption than one of three. Names sharing a :func:`name_key` are one
    concept, spelled as first given.
    """

    def __init__(self, names: Iterable[str]) -> None:
        self._spelling: dict[str, str] = {}
        for name in names:
            if key := _key(name):
                self._spelling.setdefault(key, _clean(name))

    def spell(self, name: str) -> str:
        """``name`` as the index spells it (database spelling), or cleaned if unknown."""
        return self._spelling.get(_key(name), _clean(name))

    def find(self, text: str) -> set[str]:
        """The indexed names that ``text`` mentions; see :func:`mentioned`."""
        keys = {name_key(word) for word in candidate_names(text)}
        return {self._spelling[k] for k in keys if k in self._spelling}


def mentioned(text: str, names: Iterable[str] | NameIndex) -> set[str]:
    """Which of ``names`` the caption ``text`` mentions.

    A mention is a whole word, in any case, with or without angle brackets
    (``<bo>``, ``bo``, ``Bo``). A word may hold ``_``, ``-`` and ``.`` inside it
    (``my_dog``, ``shiba-gray``, ``Mr.Bean``), so a hyphenated compound is one
    word: ``bo`` is not mentioned by ``bob``, ``elbow``, ``bo_2`` or
    ``bo-peep``, nor ``dog`` by ``hot-dog``. A word ends on a letter or digit,
    so possessives and punctuation around it still count (``bo's``, ``bo.``,
    ``(bo)``, ``my_dog,``). Names come back spelled as given in ``names``.
    Pass a :class:`NameIndex` to search many captions against one database.
    """
    index = names if isinstance(names, NameIndex) else NameIndex(names)
    return index.find(text)


# -- personalized captioning ----------------------------------------------------------


@dataclass(frozen=True)
class Tally:
    """Concepts expected (``truth``), named, and both (``hits``): what a caption score is made of.

    The same three counts score one caption, one concept across captions, or a
    whole run, so every level of the report is computed the same way.
    """

    truth: int
    named: int
    hits: int

    def __add__(self, other: Tally) -> Tally:
        return Tally(self.truth + other.truth, self.named + other.named, self.hits + other.hits)

    @property
    def recall(self) -> float | None:
        """Share of expected concepts that were named; None when none were expected."""
        return _share(self.hits, self.truth)

    @property
    def precision(self) -> float | None:
        """Share of named concepts that were expected; None when none were named."""
        return _share(self.hits, self.named)

    @property
    def f1(self) -> float | None:
        """``2·hits / (truth + named)``: the harmonic mean of precision and recall
        where both are defined, 0 when a caption names nothing but something was
        expected (or the reverse), None when nothing was expected nor named."""
        return _share(2 * self.hits, self.truth + self.named)

    def to_dict(self) -> dict[str, Any]:
        return {
            "truth": self.truth, "named": self.named, "hits": self.hits,
            "recall": self.recall, "precision": self.precision, "f1": self.f1,
        }  # fmt: skip


@dataclass(frozen=True)
class CaptionScore:
    """One caption: the concepts truly in its image, those it named, and the difference."""

    id: str
    truth: tuple[str, ...]
    named: tuple[str, ...]

    @property
    def missed(self) -> tuple[str, ...]:
        return tuple(n for n in self.truth if n not in self.named)

    @property
    def wrong(self) -> tuple[str, ...]:
        return tuple(n for n in self.named if n not in self.truth)

    @property
    def tally(self) -> Tally:
        return Tally(len(self.truth), len(self.named), len(self.truth) - len(self.missed))

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id, "truth": list(self.truth), "named": list(self.named),
            "missed": list(self.missed), "wrong": list(self.wrong), **self.tally.to_dict(),
        }  # fmt: skip


@dataclass(frozen=True)
class CaptionReport:
    """Captioning scores per caption, per concept, and over the run.

    ``overall`` is micro-averaged (total hits over total expected, total hits
    over total named): the paper scores all test images together, so this is
    the number comparable to its Table 3. ``macro`` averages per-caption values
    over the captions where each is defined, for reference.
    """

    items: tuple[CaptionScore, ...]
    per_concept: Mapping[str, Tally]

    @property
    def overall(self) -> Tally:
        return sum((item.tally for item in self.items), Tally(0, 0, 0))

    @property
    def macro(self) -> dict[str, float | None]:
        tallies = [item.tally for item in self.items]
        return {
            "recall": _mean(t.recall for t in tallies),
            "precision": _mean(t.precision for t in tallies),
            "f1": _mean(t.f1 for t in tallies),
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "overall": self.overall.to_dict(),
            "macro": self.macro,
            "per_concept": {name: t.to_dict() for name, t in sorted(self.per_concept.items())},
            "items": [item.to_dict() for item in self.items],
        }


def caption_scores(captions: Sequence[tuple[str, str, Sequence[str]]], names: Iterable[str]) -> CaptionReport:
    """Score personalized captions as the paper does (section 4.1).

    ``captions`` holds ``(item id, caption, concepts truly in the image)``;
    ``names`` are every concept in the database, since naming any of them when
    absent is a precision error. Truth concepts are always searched for, even
    if missing from ``names``. A name said twice counts once. Per caption,
    recall is None without truth concepts and precision is None when nothing
    was named (an empty caption: recall 0, precision None, F1 0); the overall
    figures come from totals, so they are defined whenever anything was
    expected or named. Per concept, recall is how often it was named when
    present and precision how often it was present when named.
    """
    index = NameIndex([*names, *(t for _, _, truth in captions for t in truth)])
    items = []
    per_concept: dict[str, Tally] = {}
    for item_id, caption, truth in captions:
        expected = tuple(sorted({index.spell(t) for t in truth}))
        said = tuple(sorted(index.find(caption)))
        items.append(CaptionScore(item_id, expected, said))
        for name in {*expected, *said}:
            tally = Tally(int(name in expected), int(name in said), int(name in expected and name in said))
            per_concept[name] = per_concept.get(name, Tally(0, 0, 0)) + tally
    return CaptionReport(tuple(items), per_concept)


# -- question answering -----------------------------------------------------------------


@dataclass(frozen=True)
class Accuracy:
    """Right answers out of a total; ``value`` is None when there were none to give."""

    correct: int
    total: int

    @property
    def value(self) -> float | None:
        return _share(self.correct, self.total)

    def to_dict(self) -> dict[str, Any]:
        return {"accuracy": self.value, "correct": self.correct, "total": self.total}

    def mean_with(self, other: Accuracy) -> float | None:
        """The plain mean of two accuracies (Table 4's "Weighted"), None unless both have a value."""
        if self.value is None or other.value is None:
            return None
        return (self.value + other.value) / 2


@dataclass(frozen=True)
class QAResult:
    """One multiple-choice answer: ``predicted`` is the parsed letter, None if unreadable."""

    id: str
    kind: QuestionKind
    predicted: str | None
    correct: str

    @property
    def right(self) -> bool:
        return self.predicted is not None and self.predicted.casefold() == self.correct.casefold()


@dataclass(frozen=True)
class QAReport:
    """Accuracy on visual and on text-only questions, and their plain mean.

    ``weighted`` is the paper's "Weighted" column (Table 4): the arithmetic mean
    of the two accuracies, not accuracy over all questions pooled; it is None
    unless both kinds were asked. ``unparsed`` answers are counted wrong.
    """

    visual: Accuracy
    text: Accuracy
    unparsed: int

    @property
    def weighted(self) -> float | None:
        return self.visual.mean_with(self.text)

    def to_dict(self) -> dict[str, Any]:
        return {"visual": self.visual.to_dict(), "text": self.text.to_dict(), "weighted": self.weighted, "unparsed": self.unparsed}


def qa_accuracy(results: Iterable[QAResult]) -> QAReport:
    """Score Yo'LLaVA-style multiple-choice answers (section 4.2)."""
    counts = {"visual": [0, 0], "text": [0, 0]}
    unparsed = 0
    for result in results:
        if result.kind not in counts:
            raise ValueError(f"question kind {result.kind!r} is neither 'visual' nor 'text'")
        counts[result.kind][0] += result.right
        counts[result.kind][1] += 1
        unparsed += result.predicted is None
    return QAReport(Accuracy(*counts["visual"]), Accuracy(*counts["text"]), unparsed)


# -- recognition -----------------------------------------------------------------------


@dataclass(frozen=True)
class RecognitionResult:
    """One "is <target> in the image?" question: the truth, and the answer (None if unclear)."""

    id: str
    present: bool
    predicted: bool | None


@dataclass(frozen=True)
class RecognitionReport:
    """Accuracy on positive and on negative images, and their plain mean (Table 4's "Weighted").

    An undecided answer (``predicted`` None) is wrong on either side.
    """

    positive: Accuracy
    negative: Accuracy
    undecided: int

    @property
    def weighted(self) -> float | None:
        return self.positive.mean_with(self.negative)

    def to_dict(self) -> dict[str, Any]:
        return {
            "positive": self.positive.to_dict(), "negative": self.negative.to_dict(),
            "weighted": self.weighted, "undecided": self.undecided,
        }  # fmt: skip


def recognition_accuracy(results: Iterable[RecognitionResult]) -> RecognitionReport:
    """Score yes/no recognition answers (section 4.2, "Visual Recognition")."""
    positive, negative, undecided = [0, 0], [0, 0], 0
    for result in results:
        side = positive if result.present else negative
        side[0] += result.predicted is not None and result.predicted == result.present
        side[1] += 1
        undecided += result.predicted is None
    return RecognitionReport(Accuracy(*positive), Accuracy(*negative), undecided)


@dataclass(frozen=True)
class CurvePoint:
    """The retriever's decision "present when score <= threshold", scored on labelled items.

    ``positive_accuracy`` equals ``recall``; it is named for the paper's table.
    """

    threshold: float
    precision: float
    recall: float
    negative_accuracy: float

    @property
    def positive_accuracy(self) -> float:
        return self.recall

    @property
    def balanced_accuracy(self) -> float:
        """The mean of positive and negative accuracy: the paper's "Weighted"."""
        return (self.recall + self.negative_accuracy) / 2

    def to_dict(self) -> dict[str, float]:
        return {
            "threshold": self.threshold, "precision": self.precision, "recall": self.recall,
            "positive_accuracy": self.positive_accuracy, "negative_accuracy": self.negative_accuracy,
            "balanced_accuracy": self.balanced_accuracy,
        }  # fmt: skip


def precision_recall_curve(scores: Sequence[float], labels: Sequence[bool]) -> list[CurvePoint]:
    """One point per distinct score, lowest threshold first.

    ``scores`` are distances or calibrated scores, lower meaning more likely
    present (``inf`` is allowed: nothing found); ``labels`` say whether the
    concept truly was present. Both kinds of label must occur, or accuracy on
    one side is undefined.
    """
    s, y = _checked(scores, labels)
    order = np.argsort(s, kind="stable")
    s, y = s[order], y[order]
    true_pos, false_pos = np.cumsum(y), np.cumsum(~y)
    positives, negatives = int(true_pos[-1]), int(false_pos[-1])
    last_of_each = [*np.flatnonzero(s[1:] != s[:-1]), len(s) - 1]
    return [
        CurvePoint(
            threshold=float(s[i]),
            precision=float(true_pos[i] / (i + 1)),
            recall=float(true_pos[i] / positives),
            negative_accuracy=float((negatives - false_pos[i]) / negatives),
        )
        for i in last_of_each
    ]


def _checked(scores: Sequence[float], labels: Sequence[bool]) -> tuple[np.ndarray, np.ndarray]:
    s, y = np.asarray(scores, dtype=float), np.asarray(labels, dtype=bool)
    if s.ndim != 1 or s.shape != y.shape:
        raise ValueError(f"got {len(scores)} scores and {len(labels)} labels; need one label per score")
    if np.isnan(s).any():
        raise ValueError("scores contain NaN; use inf for 'nothing found'")
    if y.all() or not y.any():
        raise ValueError("labels must include both present (True) and absent (False) items")
    return s, y


def best_threshold(scores: Sequence[float], labels: Sequence[bool]) -> CurvePoint:
    """The curve point with the highest mean of positive and negative accuracy.

    Ties go to the lowest threshold: the strictest decision that does as well.
    """
    return max(precision_recall_curve(scores, labels), key=lambda p: p.balanced_accuracy)


def average_precision(scores: Sequence[float], labels: Sequence[bool]) -> float:
    """Precision averaged over the recall gained at each threshold (no interpolation):
    ``sum((R_i - R_{i-1}) * P_i)``, so tied scores enter as one step."""
    total, previous = 0.0, 0.0
    for point in precision_recall_curve(scores, labels):
        total += (point.recall - previous) * point.precision
        previous = point.recall
    return total


# -- retriever -------------------------------------------------------------------------


def recall_at_k(ranked: Iterable[tuple[Sequence[str], Sequence[str]]], ks: Sequence[int] = (1, 2, 5)) -> dict[int, float]:
    """Share of (image, true concept) pairs whose concept is among the first ``k`` retrieved.

    Each item is ``(names retrieved, best first; concepts truly in the image)``.
    Recall is counted per true concept, so an image holding two concepts counts
    twice (the paper's Figure 5). A name retrieved twice keeps its first place,
    so ``k`` counts distinct concepts; equal distances must already be ordered
    by the caller, as the given order is taken as the ranking. Items with no
    true concepts add nothing; if no item has any, recall is undefined and this
    raises.
    """
    if not ks or any(k < 1 for k in ks):
        raise ValueError(f"ks must be positive ranks, got {list(ks)}")
    hits = dict.fromkeys(ks, 0)
    pairs = 0
    for retrieved, truth in ranked:
        rank = {key: place for place, key in enumerate(dict.fromkeys(map(_key, retrieved)), start=1)}
        for concept in {_key(t) for t in truth}:
            pairs += 1
            place = rank.get(concept, math.inf)
            for k in hits:
                hits[k] += place <= k
    if not pairs:
        raise ValueError("no item has a true concept, so recall is undefined")
    return {k: hits[k] / pairs for k in hits}


def acceptance_and_false_matches(decided: Iterable[tuple[Sequence[str], Sequence[str]]]) -> tuple[float | None, float | None]:
    """The retriever's decision on labelled photos: acceptance and false-match rate.

    Each item is ``(names labelled a match; concepts truly in the image)``.
    Acceptance is the share of (image, true concept) pairs whose concept is
    labelled a match; the false-match rate is the share of images of none of
    the concepts (no true concept) with any concept labelled a match. Either
    is None when no item can measure it.
    """
    pairs = accepted = strangers = false = 0
    for matched, truth in decided:
        keys = {_key(m) for m in matched}
        if not truth:
            strangers += 1
            false += bool(keys)
            continue
        for concept in {_key(t) for t in truth}:
            pairs += 1
            accepted += concept in keys
    return (accepted / pairs if pairs else None), (false / strangers if strangers else None)


def mean_and_spread(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation of a metric over repeats (seeds).

    The paper averages three repeats; the spread (``ddof=1``, since the repeats
    sample the seeds) says how much that average can be trusted. One value
    has spread 0.
    """
    if not values:
        raise ValueError("no values to average")
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)
