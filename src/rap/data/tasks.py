"""The personalization tasks: instruction templates and how a scene becomes samples.

Templates follow the paper's Tables 21-24 (recognition, grounding, caption,
description, seed questions for persons, objects and several concepts), with
``{0}`` and ``{1}`` standing for concept names such as ``<bo>``.

Grounding answers use one coordinate convention, LLaVA's for RefCOCO:
``[x0, y0, x1, y1]``, the box's left, top, right and bottom divided by the query
image's width or height, two decimals, e.g. ``[0.12, 0.30, 0.85, 0.99]``.

Recognition and grounding answers come from the annotations. Captions,
descriptions and answers to questions are written by the annotator, which sees
only the concepts really in the image: noise concepts (:func:`add_noise`) are
added afterwards, so the answer is the same with or without them (paper 3.2).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from rap.concepts import PERSON_CATEGORIES
from rap.images import Box

TASKS = ("grounding", "recognition", "caption", "description", "qa")
"""Personalized tasks; ``general`` (LLaVA-Instruct passed through) is added separately."""

RECOGNITION = (
    "Is {0} visible in this picture?", "Is {0} in this image?", "Do you see {0} in the photo?",
    "Is {0} present in this photograph?", "Can you identify if {0} is captured in this picture?",
    "Is {0} depicted in this image?", "Does the picture feature {0}?", "Can you confirm if {0} appears in this photo?",
    "Is {0} included in this shot?", "Is {0} shown in this image?", "Can you tell if {0} is part of this photograph?",
    "Is there any sign of {0} in this picture?", "Can you detect {0} in the photo?", "Is {0} captured in this image?",
    "Do you recognize {0} in this picture?",
)
GROUNDING = (
    "Give {0}'s bounding box in the image.", "Describe {0}'s position in the image.",
    "Please provide the coordinates of the bounding box for {0} in the given image.",
    "Specify the rectangular boundaries of {0} in the image.", "Give {0}'s position in the following image.",
    "Please provide {0}'s bounding coordinates in the image.", "Indicate the bounding box for {0} in the image.",
    "Show the bounding box for {0} in the picture.", "Specify {0}'s bounding box in the photograph.",
    "Mark {0}'s bounding box within the image.",
)
CAPTION = (
    "Give a caption of the image.", "Give a personalized caption of this image.", "Provide a brief caption of the image.",
    "Summarize the visual content of the image.", "Create a short caption of the image.",
    "Offer a short and clear interpretation of the image.", "Describe the image concisely.",
    "Render a concise summary of the photo.", "Provide a caption of the given image.",
    "Can you provide a personalized caption of this photo?", "Could you describe this image concisely?",
)
DESCRIPTION = (
    "Describe the image.", "Give a description of the image.", "Give a description of the image in detail.",
    "Give a short description of the image.", "Describe the image in detail.", "Please provide a description of the image.",
    "Can you give me details about the image?", "Could you explain what's shown in the image?",
)
PERSON_QUESTIONS = (
    "What is {0}'s hair color?", "What is {0}'s height (estimated)?", "What is {0}'s skin tone?",
    "What is {0}'s eye color?", "What style of clothing is {0} wearing?", "Does {0} have any visible tattoos?",
    "Does {0} wear glasses or contact lenses?", "Does {0} have any facial hair?", "What is {0}'s approximate age?",
    "What is {0}'s build or body type?", "What is {0} doing?",
)
OBJECT_QUESTIONS = (
    "What color is {0}?", "What pattern is on {0}?", "What shape does {0} have?", "What size is {0}?",
    "What is the texture of {0}?", "Is {0} shiny or matte?", "What material is {0} made of?",
    "Does {0} have any patterns or designs on it?", "Is {0} new or worn?", "Does {0} have any visible brand or logo?",
    "Is {0} functional or decorative?",
)
MULTI_QUESTIONS = (
    "What do {0} and {1} have in common?", "What activity are {0} and {1} engaged in?",
    "Where could {0} and {1} be located?", "What is the most noticeable difference between {0} and {1}?",
    "What are they doing?",
)


@dataclass(frozen=True)
class Concept:
    """A training concept: a name, a description and its reference crops."""

    key: str
    """``source/identity``: one per annotated identity."""
    token: str
    info: str
    category: str
    crops: tuple[str, ...]
    """Paths relative to the dataset folder: the plain crop, then augmented copies."""


@dataclass(frozen=True)
class Shown:
    """A concept as one sample shows it: with one of its crops."""

    concept: Concept
    crop: str


@dataclass(frozen=True)
class Placed:
    """A concept in a query image: where it is (None: the whole image)."""

    concept: Concept
    box: Box | None


@dataclass(frozen=True)
class Sample:
    id: str
    task: str
    source: str
    image: Path
    question: str
    shown: tuple[Shown, ...]
    """Concepts in the prompt, in prompt order (noise included)."""
    about: tuple[Concept, ...] = ()
    """The concepts in the image the annotator answers about."""
    answer: str | None = None
    """Fixed by the annotations; None when the annotator writes it."""
    noise: int = 0


def normalised_box(box: Box, size: tuple[int, int]) -> str:
    """``[x0, y0, x1, y1]`` as shares of the image's width and height, two decimals."""
    w, h = size
    return "[" + ", ".join(f"{v:.2f}" for v in (box[0] / w, box[1] / h, box[2] / w, box[3] / h)) + "]"


def _show(concept: Concept, rng: random.Random) -> Shown:
    return Shown(concept, rng.choice(concept.crops))


def scene_samples(
    prefix: str,
    source: str,
    image: Path,
    size: tuple[int, int],
    placed: Sequence[Placed],
    pool: Sequence[Concept],
    tasks: Sequence[str],
    max_concepts: int,
    rng: random.Random,
) -> list[Sample]:
    """Every sample of the asked ``tasks`` that one query image with its concepts gives."""
    samples: list[Sample] = []
    present = {p.concept.key for p in placed}

    def add(task: str, question: str, about: Sequence[Concept], answer: str | None = None) -> None:
        shown = tuple(_show(c, rng) for c in about)
        samples.append(Sample(f"{prefix}-{len(samples)}", task, source, image, question, shown, tuple(about), answer))

    for p in placed:
        name = p.concept.token
        if "grounding" in tasks and p.box is not None:
            add("grounding", rng.choice(GROUNDING).format(name), [p.concept], normalised_box(p.box, size))
        if "recognition" in tasks:
            add("recognition", rng.choice(RECOGNITION).format(name), [p.concept], f"Yes, {name} is in the image.")
            absent = [c for c in pool if c.key not in present]
            if absent:
                other = _hard_negative(p.concept, absent, rng)
                question = rng.choice(RECOGNITION).format(other.token)
                add("recognition", question, [other], f"No, {other.token} is not in the image.")
        if "qa" in tasks:
            questions = PERSON_QUESTIONS if p.concept.category in PERSON_CATEGORIES else OBJECT_QUESTIONS
            add("qa", rng.choice(questions).format(name), [p.concept])
    group = [p.concept for p in sorted(placed, key=lambda p: -_area(p.box, size))][:max_concepts]
    if group and "caption" in tasks:
        add("caption", rng.choice(CAPTION), group)
    if group and "description" in tasks:
        add("description", rng.choice(DESCRIPTION), group)
    if len(group) >= 2 and "qa" in tasks:
        add("qa", rng.choice(MULTI_QUESTIONS).format(group[0].token, group[1].token), group[:2])
    return samples


def _area(box: Box | None, size: tuple[int, int]) -> int:
    x0, y0, x1, y1 = box if box is not None else (0, 0, *size)
    return (x1 - x0) * (y1 - y0)


def _hard_negative(target: Concept, candidates: Sequence[Concept], rng: random.Random) -> Concept:
    """A concept of the same category when there is one: the confusions retrieval really makes."""
    same = [c for c in candidates if c.category == target.category]
    return rng.choice(same or candidates)


def add_noise(sample: Sample, pool: Sequence[Concept], present: set[str], count: int, rng: random.Random) -> Sample:
    """``count`` distractor concepts, none in the image, shuffled in among the real ones; answer unchanged."""
    used = {s.concept.key for s in sample.shown} | present
    shown = list(sample.shown)
    for _ in range(count):
        candidates = [c for c in pool if c.key not in used]
        if not candidates:
            break
        target = sample.shown[0].concept if sample.shown else candidates[0]
        distractor = _hard_negative(target, candidates, rng)
        used.add(distractor.key)
        shown.insert(rng.randrange(len(shown) + 1), _show(distractor, rng))
    return replace(sample, shown=tuple(shown), noise=len(shown) - len(sample.shown))
