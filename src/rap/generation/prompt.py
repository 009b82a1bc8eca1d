"""The personalized prompt, built once for every backend, as the paper builds it.

RAP's input (paper section 3.1, and the official code) is the query image
first, then, in brackets, one entry per retrieved concept::

    <image>
    [1.<image>
     Name: <bo>, Info: <bo> is a Shiba Inu.
    2.<image>
     Name: <kit>, Info: <kit> is a ginger cat.
    ]What is <bo> doing?

where each inner ``<image>`` is that concept's reference image. A text-only
question has no query image.

The retriever hands over its top K candidates, as in the paper, and labels
each a match or not. A candidate retrieved for its looks alone that is not a
match is marked in the least intrusive place, the end of its ``Info`` (free
text the model already reads)::

     Name: <kit>, Info: <kit> is a ginger cat. (A weak match: it may not be in this image.)

so the format the paper trained on is unchanged, and a prompt whose concepts
are all matches (or all named by the user) is exactly the paper's. rap keeps this as a list of *parts*, text and
images interleaved, so that each backend can render it its own way: image
placeholder tokens and the model's own chat template for the transformers
backends, content lists for an OpenAI-compatible server, a text account of the
images for a text-only model. Training (``rap train``) builds its prompts with
this same code, so training and inference cannot disagree.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from PIL import Image

Part = str | Image.Image
"""A piece of a user message: text, or an image in its place."""


#: what a weak candidate's ``Info`` ends with
WEAK_LABEL = "(A weak match: it may not be in this image.)"


@dataclass(frozen=True)
class PromptConcept:
    """A retrieved concept as the model sees it."""

    token: str
    """``<bo>``"""
    text: str
    """Its info and attributes, one line."""
    image: Image.Image | None = None
    """Its reference image (None: text only, e.g. for a text-only model)."""
    image_key: str | None = None
    """A stable key of that image (its SHA-256), for caching its vision features."""
    weak: bool = False
    """Retrieved for its looks, but not labelled a match: the prompt says it may not be there."""

    @property
    def info(self) -> str:
        """Its text as the prompt gives it, with the weak label when it is weak."""
        return f"{self.text} {WEAK_LABEL}" if self.weak else self.text



@dataclass
class Turn:
    """One user message and, once answered, the reply."""

    parts: list[Part]
    reply: str | None = None
    #: the user's own words, and the concepts injected with them (both also inside ``parts``)
    question: str = ""
    concepts: list[PromptConcept] = field(default_factory=list)
    #: what the retriever saw in the query image, in words: for backends that cannot see
    image_account: str | None = None
    #: keys of the concept images among ``parts``, in order (None for the query image)
    image_keys: list[str | None] = field(default_factory=list)

    @property
    def images(self) -> list[Image.Image]:
        return [part for part in self.parts if isinstance(part, Image.Image)]

    def text(self, image_token: str = "<image>") -> str:
        """The message with each image replaced by ``image_token``."""
        return "".join(part if isinstance(part, str) else image_token for part in self.parts)

    def text_only(self) -> str:
        """The message for a model that cannot see: images become their description."""
        out = []
        for n, part in enumerate(self.parts):
            if isinstance(part, str):
                out.append(part)
            elif n == 0 and self.image_account is not None:
                out.append(f"(The photo: {self.image_account})")
        return "".join(out)


def concept_block(concepts: Sequence[PromptConcept]) -> list[Part]:
    """``[1.<image>\\n Name: <bo>, Info: ...\\n2.<image>...]``, with the images in place."""
    if not concepts:
        return []
    parts: list[Part] = ["["]
    for n, concept in enumerate(concepts, 1):
        parts.append(f"{n}.")
        if concept.image is not None:
            parts.append(concept.image)
        parts.append(f"\n Name: {concept.token}, Info: {concept.info}\n")
    parts.append("]")
    return _merge_text(parts)


def user_turn(
    question: str,
    image: Image.Image | None,
    concepts: Sequence[PromptConcept],
    image_account: str | None = None,
) -> Turn:
    """A user message: the query image (first turn only), the concepts, the question."""
    parts: list[Part] = []
    keys: list[str | None] = []
    if image is not None:
        parts += [image, "\n"]
        keys.append(None)
    parts += concept_block(concepts)
    keys += [c.image_key for c in concepts if c.image is not None]
    parts.append(question)
    return Turn(_merge_text(parts), question=question, concepts=list(concepts), image_account=image_account, image_keys=keys)


def _merge_text(parts: list[Part]) -> list[Part]:
    merged: list[Part] = []
    for part in parts:
        if isinstance(part, str) and merged and isinstance(merged[-1], str):
            merged[-1] += part
        elif not (isinstance(part, str) and not part):
            merged.append(part)
    return merged
