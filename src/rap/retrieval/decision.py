"""Rank, then decide: which retrieved candidates the retriever labels a match.

In RAP the retriever hands the top-K concepts to the model, and the model,
trained with noise concepts, decides which are there (paper, sections 3.1-3.2).
rap does the same, and also labels each candidate itself, so that "none of
your concepts" is a decision it reports (``match: false``) rather than a
filter that hides the right concept from a model that could have looked. The
label is decided here and nowhere else, under an :class:`OperatingPoint`:

* image space: a candidate is a match when its distance is within
  ``image_threshold`` (calibrated per detector: the best of ten crops comes
  closer to a stranger than one whole image does) and its region passes
  Lowe's ratio test: among hundreds of concepts a region showing none of them
  lands near several at once, while the concept a region shows stands apart,
  so when the region's nearest distance is not within ``distinct_ratio`` of its
  second-nearest, none of its candidates is a match;
* faces, in three bands, because a face descriptor alone is not proof (dlib's
  puts some pairs of different people, 0.30 and 0.33 apart, closer than some
  pairs of photos of one person, up to 0.31): within ``face_threshold`` a face
  admits a person on its own; between that and ``face_confirm`` it only
  confirms an image match of that person; beyond ``face_confirm`` for every
  face in the photo it rejects that person, even where the image encoder
  matched their clothes or setting (the candidate stays, labelled no match);
* an infinite ``image_threshold`` labels every candidate a match, as the
  paper keeps every retrieved concept.

The operating point comes from the encoder's calibration, or from the store,
where ``rap calibrate --apply`` records one fitted on the owner's photos, or
from the ``threshold`` setting, which replaces the image threshold.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from rap.embedding import Embedder
from rap.retrieval.evidence import Candidate, PhotoEvidence

#: the key under which a store records its calibrated operating point (``ConceptStore.record``)
RECORD_KEY = "operating-point"
#: unit vectors are at most this far apart: an image threshold that admits every distance
WIDEST = 2.0


@dataclass(frozen=True)
class OperatingPoint:
    """How the retriever decides that a candidate is a match, and where that came from."""

    #: image-space distance within which a candidate may match (inf: every candidate is a match)
    image_threshold: float
    #: the encoder's own calibrated image distance for the detector: the scale of scores when nothing is thresholded
    calibrated_image: float
    #: a region counts only if its nearest concept is within this share of its second's distance (None: no test)
    distinct_ratio: float | None
    #: a face this close admits a person alone (None: no face analyzer)
    face_threshold: float | None = None
    #: a face this close confirms an image match; one beyond it for every face in the photo rejects the person
    face_confirm: float | None = None
    #: what set these values: ``encoder``, ``setting`` (the threshold setting) or ``store`` (rap calibrate)
    source: str = "encoder"
    #: the encoder and detector the image threshold holds for
    encoder: str = ""
    detector: str = ""
    #: for a point fitted by ``rap calibrate``: on what photos, when, and what it measured there
    fitted: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, embedder: Embedder, encoder: str, detector: str, *, threshold: float | None = None, recorded: str | None = None) -> OperatingPoint:
        """The point in force: the ``threshold`` setting over a store's ``recorded`` point over the encoder's calibration.

        A recorded point holds only for the encoder and detector scheme it was
        fitted with; another one falls back to the encoder's calibration.
        """
        scheme = detector.partition(":")[0]
        analyzer = embedder.face_analyzer
        base = cls(
            image_threshold=embedder.encoder.threshold_for(detector),
            calibrated_image=embedder.encoder.threshold_for(detector),
            distinct_ratio=embedder.encoder.distinct_ratio,
            face_threshold=analyzer.match_threshold if analyzer else None,
            face_confirm=analyzer.confirm_threshold if analyzer else None,
            encoder=encoder,
            detector=scheme,
        )
        point = base
        stored = parse_record(recorded) if recorded else None
        if stored and stored.get("encoder") == encoder and stored.get("detector") == scheme:
            point = replace(
                base,
                image_threshold=float(stored["image_threshold"]),
                distinct_ratio=stored.get("distinct_ratio", base.distinct_ratio),
                source="store",
                fitted=stored.get("fitted", {}),
            )
        if threshold is not None:
            point = replace(point, image_threshold=threshold, source="setting", fitted={})
        return point

    @property
    def keeps_all(self) -> bool:
        """Whether every candidate is a match (an infinite threshold, as the paper keeps every concept)."""
        return math.isinf(self.image_threshold)

    def with_image(self, threshold: float, distinct_ratio: float | None) -> OperatingPoint:
        return replace(self, image_threshold=threshold, distinct_ratio=distinct_ratio)

    def score(self, candidate: Candidate) -> float:
        """Distance over the space's match distance: ``<= 1`` means within it, in every space."""
        if candidate.region == "face" and self.face_threshold:
            return candidate.distance / self.face_threshold
        return candidate.distance / (self.calibrated_image if self.keeps_all else self.image_threshold)

    def distinct(self, candidate: Candidate) -> bool:
        """Whether the candidate's region passes the ratio test."""
        return self.distinct_ratio is None or candidate.crowding is None or candidate.crowding <= self.distinct_ratio

    def image_match(self, candidate: Candidate) -> bool:
        """Whether an image candidate is a match on its own evidence."""
        return self.keeps_all or (candidate.distance <= self.image_threshold and self.distinct(candidate))

    def face_admits(self, candidate: Candidate) -> bool:
        return self.keeps_all or (self.face_threshold is not None and candidate.distance <= self.face_threshold)

    def face_confirms(self, candidate: Candidate) -> bool:
        return self.face_confirm is not None and candidate.distance <= self.face_confirm

    def to_dict(self) -> dict[str, Any]:
        """The point as ``rap info``, ``rap config show`` and ``rap eval`` show it."""
        shown = asdict(self)
        shown["image_threshold"] = None if self.keeps_all else round(self.image_threshold, 4)
        shown["fitted"] = dict(self.fitted)
        return shown

    def describe(self) -> str:
        """One line for people."""
        image = "every candidate matches (threshold inf)" if self.keeps_all else f"image distance <= {self.image_threshold:.3f}"
        ratio = f", ratio test {self.distinct_ratio:.2f}" if self.distinct_ratio is not None and not self.keeps_all else ""
        faces = f", faces {self.face_threshold:.2f} admit / {self.face_confirm:.2f} confirm" if self.face_threshold is not None and not self.keeps_all else ""
        where = {"encoder": f"the encoder's calibration for {self.detector}", "setting": "the threshold setting"}.get(self.source)
        if where is None:
            where = f"rap calibrate on {self.fitted.get('photos', '?')} photos, {self.fitted.get('at', '?')}"
        return f"{image}{ratio}{faces} (from {where})"

    def record(self) -> str:
        """What ``rap calibrate --apply`` keeps in the store: the fitted values and what they hold for."""
        values = {"encoder": self.encoder, "detector": self.detector, "image_threshold": self.image_threshold,
                  "distinct_ratio": self.distinct_ratio, "fitted": dict(self.fitted)}  # fmt: skip
        return json.dumps(values)


def parse_record(recorded: str) -> dict[str, Any] | None:
    """A recorded operating point, or None when it cannot be read (it is then ignored, not fatal)."""
    try:
        values = json.loads(recorded)
        float(values["image_threshold"])
    except (ValueError, TypeError, KeyError):
        return None
    return values if isinstance(values, dict) else None


def decide(evidence: PhotoEvidence, point: OperatingPoint, has_face_keys: Callable[[Collection[str]], set[str]]) -> list[Candidate]:
    """Every candidate of one photo, scored and labelled a match or not (none is dropped).

    ``has_face_keys`` names which of some concepts have stored faces: only
    they can be rejected by the photo's faces.
    """
    image = [replace(c, score=point.score(c), match=point.image_match(c)) for c in evidence.image]
    if evidence.has_faces and not point.keeps_all:
        near = {c.concept for c in evidence.faces if point.face_confirms(c)}
        # a person whose stored face is unlike every face here is not here
        rejected = has_face_keys({c.concept for c in image if c.match}) - near
        image = [replace(c, match=False) if c.concept in rejected else c for c in image]
    faces = [replace(c, score=point.score(c), match=point.face_admits(c)) for c in evidence.faces]
    return image + faces


def per_concept(candidates: Iterable[Candidate]) -> list[Candidate]:
    """Each concept's best candidate, best concept first: matches before non-matches, then by score.

    A concept's best is a match if it has one (a person admitted by a face is
    shown by the face: its box is where they are), else its closest candidate.
    """
    best: dict[str, Candidate] = {}
    for candidate in sorted(candidates, key=_rank):
        best.setdefault(candidate.concept, candidate)
    return list(best.values())


def _rank(candidate: Candidate) -> tuple[bool, bool, float]:
    return (not candidate.match, not (candidate.match and candidate.region == "face"), candidate.score)


def match_distances(evidence: PhotoEvidence, point: OperatingPoint, has_face_keys: Callable[[Collection[str]], set[str]]) -> dict[str, float]:
    """For each concept, the smallest image threshold at which it would be labelled a match, the rest of ``point`` kept.

    The decision is monotone in the image threshold (a larger one never
    un-matches a candidate: the ratio test and the faces do not depend on it),
    so one decision at the widest threshold tells every threshold's outcome;
    ``rap calibrate`` sweeps thresholds on this. A concept a face admits needs
    no image threshold (0); one never matched is absent.
    """
    at: dict[str, float] = {}
    for candidate in decide(evidence, point.with_image(WIDEST, point.distinct_ratio), has_face_keys):
        if candidate.match:
            needed = 0.0 if candidate.region == "face" else candidate.distance
            at[candidate.concept] = min(at.get(candidate.concept, math.inf), needed)
    return at
