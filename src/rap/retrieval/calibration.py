"""Calibrating the operating point on the owner's own photos (``rap calibrate``).

The encoder's thresholds were fitted on DreamBooth photos; on photos unlike
those they can answer "none of your concepts" for photos that show one. Here
the owner brings labelled photos (a folder per concept, and ``none/`` for
photos of none of them), the retriever gathers each photo's evidence once, and
operating points are tried on it:

* acceptance: the share of a concept's photos where that concept is labelled
  a match;
* false matches: the share of ``none/`` photos where any concept is labelled
  a match.

What is fitted is what so little data can carry: the image threshold (the
decision is monotone in it, so every threshold is tried exactly, see
:func:`~rap.retrieval.decision.match_distances`), and the ratio test among a
handful of values. The threshold maximises acceptance with false matches at
most the target, and sits midway between the last photo it accepts and the
first stranger it would admit beyond the target, for a margin on both sides.
The figures for the proposed point are measured on the photos that fitted it,
so a leave-one-out estimate (each photo judged by a point fitted without it)
is reported beside them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rap.errors import InvalidInput
from rap.images import check_image
from rap.retrieval.decision import WIDEST, OperatingPoint, decide, match_distances
from rap.retrieval.evidence import PhotoEvidence

#: the folder of photos showing none of the concepts
NONE_FOLDER = "none"
#: ratio-test values tried beside the one in force (None: no ratio test)
RATIOS: tuple[float | None, ...] = (0.8, 0.85, 0.9, 0.95, None)


@dataclass(frozen=True)
class LabelledPhotos:
    """Photos and what each shows: a concept's name, or None for none of them."""

    photos: list[tuple[Path, str | None]]

    @property
    def concepts(self) -> int:
        return sum(truth is not None for _, truth in self.photos)

    @property
    def strangers(self) -> int:
        return sum(truth is None for _, truth in self.photos)


def read_folder(folder: Path, known: Collection[str], min_photos: int) -> LabelledPhotos:
    """The labelled photos of ``folder``, each checked by its header; one line for anything wrong, before any work."""
    if not folder.is_dir():
        raise InvalidInput(f"{folder} is not a folder; give one with a subfolder per concept and {NONE_FOLDER}/")
    subfolders = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    unknown = [p.name for p in subfolders if p.name != NONE_FOLDER and p.name not in known]
    if unknown:
        shown = ", ".join(sorted(known)[:10]) or "none yet"
        raise InvalidInput(f"{folder}: no concept named {', '.join(unknown)}; subfolders are concept names (known: {shown}) or {NONE_FOLDER}")
    photos: list[tuple[Path, str | None]] = []
    for sub in subfolders:
        for path in sorted(p for p in sub.iterdir() if p.is_file() and not p.name.startswith(".")):
            check_image(path)
            photos.append((path, None if sub.name == NONE_FOLDER else sub.name))
    labelled = LabelledPhotos(photos)
    if labelled.concepts < min_photos or labelled.strangers < min_photos:
        raise InvalidInput(
            f"{folder}: {labelled.concepts} photo(s) of your concepts and {labelled.strangers} in {NONE_FOLDER}/; "
            f"calibrating needs at least {min_photos} of each (setting calibrate_min_photos)"
        )
    return labelled


@dataclass(frozen=True)
class Outcome:
    """What an operating point does on the labelled photos."""

    accepted: int
    concept_photos: int
    false_matches: int
    none_photos: int
    #: concept photos where another concept is labelled a match too
    other_matches: int = 0

    @property
    def acceptance(self) -> float:
        return self.accepted / self.concept_photos if self.concept_photos else math.nan

    @property
    def false_match_rate(self) -> float:
        return self.false_matches / self.none_photos if self.none_photos else math.nan

    def to_dict(self) -> dict[str, Any]:
        return {
            "acceptance": round(self.acceptance, 4), "accepted": self.accepted, "concept_photos": self.concept_photos,
            "false_match_rate": round(self.false_match_rate, 4), "false_matches": self.false_matches,
            "none_photos": self.none_photos, "other_matches": self.other_matches,
        }  # fmt: skip


FaceKeys = Callable[[Collection[str]], set[str]]


def outcome(evidence: Sequence[PhotoEvidence], truths: Sequence[str | None], point: OperatingPoint, has_face_keys: FaceKeys) -> Outcome:
    """Acceptance and false matches of ``point``, by the retriever's own decision."""
    accepted = false = other = 0
    for photo, truth in zip(evidence, truths):
        matched = {c.concept for c in decide(photo, point, has_face_keys) if c.match}
        if truth is None:
            false += bool(matched)
        else:
            accepted += truth in matched
            other += bool(matched - {truth})
    concept_photos = sum(t is not None for t in truths)
    return Outcome(accepted, concept_photos, false, len(truths) - concept_photos, other)


@dataclass(frozen=True)
class _Needed:
    """Per photo, under one ratio test, the image thresholds from which it is accepted and from which
    another concept (for ``none/``: any concept) is labelled a match; inf: never."""

    ratio: float | None
    accept: np.ndarray
    other: np.ndarray


class Sweep:
    """Every photo's outcome under every image threshold and ratio tried, computed once from the evidence."""

    def __init__(self, evidence: Sequence[PhotoEvidence], truths: Sequence[str | None], point: OperatingPoint, has_face_keys: FaceKeys) -> None:
        self.point = point
        self.strangers = np.asarray([t is None for t in truths])
        self.tables: list[_Needed] = []
        for ratio in dict.fromkeys([point.distinct_ratio, *RATIOS]):  # the one in force first: it wins ties
            accept, other = [], []
            for photo, truth in zip(evidence, truths):
                at = match_distances(photo, point.with_image(WIDEST, ratio), has_face_keys)
                accept.append(at.get(truth, math.inf) if truth is not None else math.inf)
                other.append(min((d for name, d in at.items() if name != truth), default=math.inf))
            self.tables.append(_Needed(ratio, np.asarray(accept, float), np.asarray(other, float)))

    def propose(self, max_false: float, keep: np.ndarray | None = None) -> OperatingPoint:
        """The point with the most acceptance and false matches within ``max_false`` on the photos ``keep`` marks (all)."""
        keep = np.ones(len(self.strangers), bool) if keep is None else keep
        current = self.point.calibrated_image if self.point.keeps_all else self.point.image_threshold
        best: tuple[int, float, float | None] | None = None
        for table in self.tables:
            threshold, accepted = _fit_threshold(table.accept[keep & ~self.strangers], table.other[keep & self.strangers], max_false, current)
            if best is None or accepted > best[0]:
                best = (accepted, threshold, table.ratio)
        assert best is not None
        return self.point.with_image(best[1], best[2])

    def held_out(self, max_false: float) -> Outcome:
        """Leave-one-out: each photo judged by the point fitted on all the others."""
        accepted = false = other = 0
        for n in range(len(self.strangers)):
            keep = np.ones(len(self.strangers), bool)
            keep[n] = False
            fitted = self.propose(max_false, keep)
            table = next(t for t in self.tables if t.ratio == fitted.distinct_ratio)
            matched_other = bool(table.other[n] <= fitted.image_threshold)
            if self.strangers[n]:
                false += matched_other
            else:
                accepted += bool(table.accept[n] <= fitted.image_threshold)
                other += matched_other
        strangers = int(self.strangers.sum())
        return Outcome(accepted, len(self.strangers) - strangers, false, strangers, other)


def _fit_threshold(accept: np.ndarray, false: np.ndarray, max_false: float, current: float) -> tuple[float, int]:
    """The threshold that accepts the most with false matches within ``max_false``, and how many it accepts."""
    allowed = math.floor(max_false * len(false) + 1e-9)
    strangers = np.sort(false)
    # the smallest threshold that would falsely match one photo more than allowed
    limit = float(strangers[allowed]) if allowed < len(strangers) else math.inf
    reachable = accept[accept < limit]
    if not len(reachable):
        return min(current, limit / 2 if math.isfinite(limit) else current), 0
    last = float(reachable.max())
    threshold = (last + limit) / 2 if math.isfinite(limit) else max(last, current)
    return min(threshold, WIDEST), len(reachable)
