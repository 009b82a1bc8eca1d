"""A match probability from several pieces of evidence, fitted once, and the decision it gives.

One embedding distance cannot tell "this is <bo>" from "this looks like a
brown plush toy": on photos unlike the ones a threshold was fitted on, no
threshold on it keeps both acceptance high and false matches low (issue 15).
So the decision combines what the retriever knows about a candidate:

* ``distance``: its best region's distance to the concept's nearest key;
* ``ratio``: that distance over the nearest *other* concept's (a stranger lands
  near several concepts at once; the concept a photo shows stands apart);
* ``inliers``: spatial verification's inliers (:mod:`rap.retrieval.verify`), as log(1 + n);
* ``whole_image``: 1 when the whole image, not a detector region, matched;
* ``log_concepts``: log of the number of concepts in the store (more concepts,
  more near misses).

A logistic regression over these gives a probability; a candidate is labelled
a match when it reaches ``cut``. The weights and cut are fitted by
``benchmarks/fit_decision.py`` on the DreamBooth protocol (the tuning set) and
live in ``Settings.match_model``; they are reported on the avatar protocol,
which never fitted anything (BENCHMARKS.md, "Retrieve: a match decision that
generalizes").
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rap.retrieval.evidence import Candidate

#: the evidence a model weighs, in the order of its weights
FEATURES = ("distance", "ratio", "inliers", "whole_image", "log_concepts")


@dataclass(frozen=True)
class Evidence:
    """What is known about one candidate concept of one query photo."""

    distance: float
    #: the nearest other concept's distance, None when there is no other
    other_distance: float | None
    #: spatial verification's inliers; None when not verified
    inliers: int | None
    #: what produced the matching region: ``image`` (whole image), ``detector`` or ``face``
    region: str
    concepts: int

    def vector(self) -> dict[str, float]:
        ratio = self.distance / self.other_distance if self.other_distance else 1.0
        return {
            "distance": self.distance,
            "ratio": min(ratio, 1.5),
            "inliers": math.log1p(self.inliers or 0),
            "whole_image": 1.0 if self.region == "image" else 0.0,
            "log_concepts": math.log(max(1, self.concepts)),
        }


@dataclass(frozen=True)
class MatchModel:
    """Logistic weights over :data:`FEATURES`, a bias, and the probability that makes a match."""

    weights: Mapping[str, float]
    bias: float
    cut: float
    #: the encoder whose distances the weights were fitted on; others fall back to the threshold rule
    encoder: str

    @classmethod
    def from_mapping(cls, values: Mapping[str, object]) -> MatchModel:
        """The model as ``Settings.match_model`` holds it: ``{"weights": {...}, "bias", "cut", "encoder"}``."""
        weights = values["weights"]
        if not isinstance(weights, Mapping) or set(weights) != set(FEATURES):
            raise ValueError(f"match_model weights must name exactly {', '.join(FEATURES)}")
        return cls({k: float(v) for k, v in weights.items()}, float(values["bias"]), float(values["cut"]), str(values["encoder"]))  # type: ignore[arg-type]

    def applies_to(self, encoder_id: str) -> bool:
        return _family(encoder_id) == _family(self.encoder)

    def probability(self, evidence: Evidence) -> float:
        """The fitted probability that the candidate is the concept the photo shows."""
        values = evidence.vector()
        z = self.bias + sum(self.weights[name] * values[name] for name in FEATURES)
        return 1.0 / (1.0 + math.exp(-max(-60.0, min(60.0, z))))

    def matches(self, evidence: Evidence) -> bool:
        return self.probability(evidence) >= self.cut


def _family(encoder_id: str) -> str:
    """The float and int8 offline encoders give the same distances (issue 15: same recall and acceptance)."""
    return encoder_id.removesuffix("-int8")


def other_distances(distances: Sequence[float]) -> list[float | None]:
    """For each of a photo's candidates (best first), the nearest other candidate's distance."""
    if len(distances) < 2:
        return [None] * len(distances)
    return [distances[1] if i == 0 else distances[0] for i in range(len(distances))]


@dataclass(frozen=True)
class Verification:
    """The fitted decision as the retriever applies it: the model, how many candidates to verify, at what size."""

    model: MatchModel
    #: a photo's best concepts (by distance) that spatial verification checks when the model does not already accept them
    top: int
    #: longer side (px) of a query region and a reference image for their features
    side: int


def relabel(decided: Sequence[Candidate], concepts: int, verification: Verification, inliers: Callable[[Candidate], int]) -> list[Candidate]:
    """``decided`` with each image candidate's label replaced by the fitted model's verdict on its concept.

    ``decided`` comes from a decision that lets every image candidate match
    except those the photo's faces reject: those stay rejected. Each concept is
    judged on its nearest image candidate, against the nearest other concept;
    ``inliers`` is asked only for the first ``verification.top`` concepts that
    the model does not accept without it (inliers only ever raise the probability).
    """
    best: dict[str, Candidate] = {}
    for candidate in sorted((c for c in decided if c.region != "face"), key=lambda c: c.distance):
        best.setdefault(candidate.concept, candidate)
    ranked = list(best.values())
    verdict: dict[str, bool] = {}
    for rank, (candidate, other) in enumerate(zip(ranked, other_distances([c.distance for c in ranked]))):
        evidence = Evidence(candidate.distance, other, None, candidate.region, concepts)
        if not verification.model.matches(evidence) and rank < verification.top:
            evidence = replace(evidence, inliers=inliers(candidate))
        verdict[candidate.concept] = verification.model.matches(evidence)
    return [c if c.region == "face" else replace(c, match=c.match and verdict[c.concept]) for c in decided]
