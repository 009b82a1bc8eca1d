"""Answers a model that cannot see must not give: "is X here?" and "where is X?" from the retriever's decision.

A text-only backend (the offline profile) is told what the retriever found and
otherwise guesses; asked "Is bo here?" it once answered "No, bo is not in this
photo" beside the evidence that bo matched. So for such a backend, a question
about whether or where a named concept is in the photo is answered from the
labels the retriever computed, the same ones shown beside the answer, and the
reply cannot contradict them. Other questions still go to the model.

Questions are recognised by their English form only: a question of another
shape reaches the model, as before.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Literal

from rap.retrieval import RetrievedConcept

Kind = Literal["presence", "location"]

_PLACE = r"(?:here|there|around|present|visible|in\s+(?:view|it|this\s+one|(?:this|the|my|that)\s+(?:photo|image|picture|pic|shot|frame|scene)))"
_PRESENCE = [
    re.compile(rf"^\s*(?:is|are)\b(?!\s+there\b).*\b{_PLACE}\s*[?.!]*\s*(?:answer\b.*)?$", re.IGNORECASE | re.DOTALL),
    re.compile(r"^\s*(?:do|can|could)\s+you\s+(?:see|spot|find|recogni[sz]e)\b", re.IGNORECASE),
    re.compile(r"^\s*(?:is|are)\s+there\b", re.IGNORECASE),
    re.compile(r"^\s*(?:does|do)\s+(?:this|the|my|that)\s+(?:photo|image|picture|pic|shot)\s+(?:show|have|contain|include)\b", re.IGNORECASE),
]
_LOCATION = re.compile(r"^\s*(?:where(?:'s|\s+is|\s+are)|find|locate|point\s+(?:to|at)|show\s+me\s+where)\b", re.IGNORECASE)


def question_kind(question: str) -> Kind | None:
    """Whether ``question`` asks if (``presence``) or where (``location``) something is in the photo."""
    if _LOCATION.search(question):
        return "location"
    if any(pattern.search(question) for pattern in _PRESENCE):
        return "presence"
    return None


def decided_reply(question: str, named: Sequence[RetrievedConcept]) -> str | None:
    """The reply the retriever's labels give to a presence or location question about the ``named`` concepts.

    None when the question is of neither kind or names none of the user's
    concepts: the model answers it.
    """
    kind = question_kind(question)
    if kind is None or not named:
        return None
    return " ".join(_presence(r) if kind == "presence" else _location(r) for r in named)


def _evidence(r: RetrievedConcept) -> str:
    space = "face" if r.region == "face" else "image"
    return f"matched by {space} at distance {r.distance:.3f}" if r.distance is not None else "no visual match"


def _presence(r: RetrievedConcept) -> str:
    token = r.concept.token
    if r.match:
        return f"Yes, {token} is in this photo ({_evidence(r)})."
    if r.distance is None:
        return f"No, I do not recognise {token} in this photo."
    return f"No, I do not recognise {token} in this photo (only a weak match, at distance {r.distance:.3f})."


def _location(r: RetrievedConcept) -> str:
    token = r.concept.token
    if not r.match:
        return _presence(r)
    if r.region == "image":
        return f"{token} is in this photo: the whole photo matched ({_evidence(r)})."
    return f"{token} is at box {list(r.box or ())} in this photo, in pixels ({_evidence(r)})."


def _named(r: RetrievedConcept) -> str:
    """A pattern for the concept as a reply may write it: ``<bo>`` or ``bo``."""
    return rf"<?{re.escape(r.concept.name)}>?"


def _says_absent(reply: str, r: RetrievedConcept) -> bool:
    name = _named(r)
    return bool(
        re.search(rf"\b{name}\W*(?:is\s+not|isn't|is\s+nowhere|does\s+not\s+appear|doesn't\s+appear)\b", reply, re.IGNORECASE)
        or re.search(rf"\b(?:do\s+not|don't|cannot|can't|can\s+not)\s+see\s+(?:any\s+)?{name}", reply, re.IGNORECASE)
        or re.search(rf"\bno\s+{name}\b", reply, re.IGNORECASE)
    )


def _says_present(reply: str, r: RetrievedConcept) -> bool:
    name = _named(r)
    return bool(
        re.search(rf"\b{name}\W*(?:is|appears)\s+(?:here|there|visible|present|in\s+(?:this|the)\s+(?:photo|image|picture))\b", reply, re.IGNORECASE)
        or re.search(rf"\bI\s+(?:can\s+)?see\s+{name}", reply, re.IGNORECASE)
    )


def correction(reply: str, concepts: Sequence[RetrievedConcept]) -> str | None:
    """What to add to a blind model's free reply that contradicts the labels shown beside it; None if it does not.

    A reply is only ever added to (it may already have been streamed), with
    the retriever's own words for each concept it got wrong.
    """
    wrong = [
        r for r in concepts
        if r.region is not None and ((r.match and _says_absent(reply, r)) or (not r.match and _says_present(reply, r)))
    ]  # fmt: skip
    if not wrong:
        return None
    return "(Correction from the retriever: " + " ".join(_presence(r) for r in wrong) + ")"
