"""Which visual matches count: image evidence, face evidence, and how they combine.

A region's match with a concept's key is a *candidate*; its ``score`` is the
distance divided by the space's calibrated match distance, so ``score <= 1``
means "a match" in every space. The image space's distance is calibrated for
the detector that cut the query (see ``ImageEncoder.threshold_for``).

Faces decide about people, but a face descriptor alone is not proof: dlib's
descriptor puts some pairs of different people (two women measured 0.30 and
0.33 apart) closer than some pairs of photos of one person (up to 0.31). So a
face is used in three bands (``FaceAnalyzer``'s two distances):

* within ``match_threshold``: the person is admitted on the face alone;
* between that and ``confirm_threshold``: the face only *confirms* an image
  match of the same person in the same photo (the image match stands); alone
  it admits no one;
* beyond ``confirm_threshold`` for every face in the photo: the face *rejects*
  that person, even where the image encoder matched their clothes or setting.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass

from rap.images import Box


@dataclass
class Candidate:
    """One concept matched by one query region in one space."""

    concept: str
    distance: float
    score: float
    box: Box
    #: what produced the region: ``image`` (whole image), ``detector`` or ``face``
    region: str
    #: whether the region's nearest concept stands apart from its second (see :func:`mark_distinct`)
    distinct: bool = True


def mark_distinct(region: list[Candidate], ratio: float | None) -> None:
    """Lowe's ratio test on one region's candidates, nearest first.

    Among hundreds of concepts a region showing none of them lands near several
    at once, while the concept a region shows stands apart: when the nearest is
    not within ``ratio`` times the second's distance, none of them counts.
    """
    if ratio is not None and len(region) >= 2 and region[0].distance > ratio * region[1].distance:
        for candidate in region:
            candidate.distinct = False


def combine(
    image: list[Candidate],
    faces: list[Candidate],
    *,
    image_match: Callable[[Candidate], bool],
    face_match: Callable[[Candidate], bool],
    confirm_score: float,
    has_face_keys: Callable[[Collection[str]], set[str]],
    faces_reject: bool,
) -> list[Candidate]:
    """The candidates of one query photo that count, image and face together.

    ``image_match`` and ``face_match`` say whether a candidate counts on its own;
    ``confirm_score`` is the face score up to which a face confirms an image
    match; ``has_face_keys`` names which of some concepts have stored faces;
    ``faces_reject`` is whether the photo's faces may reject a person: it has
    faces, and the caller does not keep every match (as the paper does).
    """
    images = [c for c in image if image_match(c)]
    near_faces = {c.concept for c in faces if c.score <= confirm_score}
    if faces_reject:
        # a person whose stored face is unlike every face here is not here
        rejected = has_face_keys({c.concept for c in images}) - near_faces
        images = [c for c in images if c.concept not in rejected]
    # a person known by face is reported by their face: its box is where they are
    by_face = [c for c in faces if face_match(c)]
    known = {c.concept for c in by_face}
    return by_face + [c for c in images if c.concept not in known]
