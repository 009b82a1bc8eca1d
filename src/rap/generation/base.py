"""What a generation backend is: one interface for every multimodal LLM rap can drive.

A backend receives the whole conversation (a list of :class:`~rap.generation.prompt.Turn`,
the last one unanswered) and returns the reply, or streams it. It declares what
it can do, and the base class checks requests against that, so every backend
does not have to:

* ``sees_images``: whether images reach the model (the offline text model
  gets a text account of the photo instead);
* ``max_concepts``: how many concepts fit its context (2 for LLaVA, 3 for
  Phi3-V in the paper), configurable per backend;
* ``max_images``: images per request it accepts, if limited.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, TypeVar

from PIL import Image
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from rap.errors import InvalidInput
from rap.generation.prompt import Turn
from rap.settings import default


class GenerationOptions(BaseModel):
    """Decoding settings every backend honours."""

    model_config = ConfigDict(extra="forbid")

    max_new_tokens: int = Field(default("max_new_tokens"), ge=1, le=8192, description="longest reply, in tokens")
    temperature: float = Field(default("temperature"), ge=0.0, le=2.0, description="0 decodes greedily")
    top_p: float = Field(1.0, gt=0.0, le=1.0, description="nucleus sampling mass")
    seed: int | None = Field(None, description="seed for sampling")


OptionsT = TypeVar("OptionsT", bound=BaseModel)


def validated_options(model: type[OptionsT], options: Mapping[str, Any], backend: str) -> OptionsT:
    """A backend's own options, checked by its pydantic model, or one line saying what is wrong."""
    try:
        return model.model_validate(dict(options))
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "options"
        raise InvalidInput(f"{backend} option {where}: {first['msg']}") from None


class Generator(ABC):
    """A multimodal (or text) LLM that answers personalized prompts."""

    #: canonical spec, e.g. ``llava:llava-hf/llava-1.5-7b-hf``
    id: str
    sees_images: bool = True
    max_concepts: int = 2
    max_images: int | None = None

    def check(self, conversation: Sequence[Turn]) -> None:
        """Refuse what the backend cannot take, with a message that says so."""
        if not conversation or conversation[-1].reply is not None:
            raise InvalidInput("the conversation must end with an unanswered user turn")
        if not conversation[-1].text().strip():
            raise InvalidInput("the question is empty")
        images = sum(len(turn.images) for turn in conversation)
        if self.sees_images and self.max_images is not None and images > self.max_images:
            raise InvalidInput(f"{self.id} takes at most {self.max_images} images per request, not {images}")

    def prepare_concepts(self, images: Mapping[str, Image.Image]) -> int:
        """Pre-compute what the backend can keep of concept images (image key -> image).

        Backends that cache vision features (LLaVA) encode them here, so a
        question never re-encodes a concept's image; the others do nothing.
        Returns how many images were prepared.
        """
        return 0

    def generate(self, conversation: Sequence[Turn], options: GenerationOptions | None = None) -> str:
        """The whole reply."""
        return "".join(self.stream(conversation, options))

    def stream(self, conversation: Sequence[Turn], options: GenerationOptions | None = None) -> Iterator[str]:
        """The reply, piece by piece as it is decoded."""
        self.check(conversation)
        yield from self._stream(conversation, options or GenerationOptions())

    @abstractmethod
    def _stream(self, conversation: Sequence[Turn], options: GenerationOptions) -> Iterator[str]:
        """Decode the reply to the last turn; called after :meth:`check`."""
