"""Annotators: who writes concept descriptions and the answers to captions and questions.

The paper asks Gemini for these (Fig. 3). rap takes any generation backend
(:func:`rap.generation.create_generator`) through :class:`GeneratorAnnotator`,
which makes that affordable and restartable: every call is cached on disk, so a
rebuild or an interrupted build repeats no paid call; failures are retried with
exponential backoff; calls keep to a rate limit; calls, cache hits and an
estimated cost are counted for the manifest.

:class:`TemplateAnnotator` needs no model: it writes deterministic text from the
class names, so the whole pipeline runs and is tested offline.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from PIL import Image

from rap.errors import BackendError
from rap.generation import (
    GenerationOptions,
    Generator,
    PromptConcept,
    Turn,
    create_generator,
    user_turn,
)


class Annotator(ABC):
    """Writes the text of training samples that annotations alone cannot give."""

    #: whether it looks at the images; when False the builder passes placeholders and skips decoding
    needs_images: bool = True

    @abstractmethod
    def describe(self, crop: Image.Image, category: str) -> str:
        """A one-sentence description of the object in ``crop`` (no name: the prompt gives that)."""

    @abstractmethod
    def respond(self, instruction: str, image: Image.Image, concepts: Sequence[PromptConcept]) -> str:
        """The answer to ``instruction`` about ``image``, in which ``concepts`` all appear."""

    def report(self) -> dict[str, float]:
        """Counters for the manifest."""
        return {}


def _article(word: str) -> str:
    return "an" if word[:1].lower() in "aeiou" else "a"


def _phrase(text: str) -> str:
    """``"A dog."`` -> ``"a dog"``, to use an info inside a sentence."""
    text = text.strip().rstrip(".")
    return text[:1].lower() + text[1:]


class TemplateAnnotator(Annotator):
    """Deterministic text from class names: for offline builds and tests, not for training a good model.

    Its answers to open questions restate what the concept infos say.
    """

    needs_images = False

    def describe(self, crop: Image.Image, category: str) -> str:
        return f"{_article(category).capitalize()} {category}."

    def respond(self, instruction: str, image: Image.Image, concepts: Sequence[PromptConcept]) -> str:
        named = [f"{c.token}, {_phrase(c.text)}" for c in concepts]
        if len(named) == 1:
            return f"A photo of {named[0]}."
        return f"A photo of {', '.join(named[:-1])}, and {named[-1]}."


@dataclass
class AnnotatorUsage:
    calls: int = 0
    cache_hits: int = 0
    retries: int = 0
    errors: int = 0
    tokens: float = 0.0
    cost: float = 0.0


def image_digest(image: Image.Image) -> str:
    """A hash of the pixels, so the same crop saved twice has the same cache key."""
    rgb = image.convert("RGB")
    return hashlib.sha256(f"{rgb.width}x{rgb.height}".encode() + rgb.tobytes()).hexdigest()


class GeneratorAnnotator(Annotator):
    """Any rap generation backend as an annotator: cached, retried, rate-limited and metered.

    ``price_per_1k_tokens`` prices an estimate, len(text) / 4 tokens for the
    prompt text plus the reply; images are not counted.
    """

    def __init__(
        self,
        generator: Generator | str,
        cache_dir: Path,
        *,
        calls_per_minute: float = 60.0,
        retries: int = 4,
        backoff_seconds: float = 2.0,
        price_per_1k_tokens: float = 0.0,
        options: GenerationOptions | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.generator = create_generator(generator) if isinstance(generator, str) else generator
        self.cache_dir = Path(cache_dir)
        self.interval = 60.0 / calls_per_minute if calls_per_minute > 0 else 0.0
        self.retries = retries
        self.backoff = backoff_seconds
        self.price = price_per_1k_tokens
        self.options = options or GenerationOptions(max_new_tokens=200)
        self.usage = AnnotatorUsage()
        self._sleep, self._clock = sleep, clock
        self._last_call: float | None = None

    def describe(self, crop: Image.Image, category: str) -> str:
        question = (
            f"This is a {category}. Describe its appearance in one short sentence that would tell it apart "
            "from others of its kind; do not give it a name."
        )
        return self._ask(question, crop, ())

    def respond(self, instruction: str, image: Image.Image, concepts: Sequence[PromptConcept]) -> str:
        return self._ask(instruction, image, concepts)

    def report(self) -> dict[str, float]:
        return asdict(self.usage)

    def _ask(self, question: str, image: Image.Image, concepts: Sequence[PromptConcept]) -> str:
        turn = user_turn(question, image, concepts)
        prompt = turn.text()
        key = hashlib.sha256(
            "\n".join([self.generator.id, prompt, *(image_digest(i) for i in turn.images)]).encode()
        ).hexdigest()
        path = self.cache_dir / key[:2] / f"{key}.json"
        if path.exists():
            self.usage.cache_hits += 1
            return json.loads(path.read_text(encoding="utf-8"))["reply"]
        reply = self._call(turn).strip()
        if not reply:
            self.usage.errors += 1
            raise BackendError(f"{self.generator.id} gave an empty reply")
        tokens = (len(prompt) + len(reply)) / 4
        self.usage.tokens += tokens
        self.usage.cost += tokens / 1000 * self.price
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(f".{os.getpid()}.tmp")
        partial.write_text(json.dumps({"prompt": prompt, "reply": reply}), encoding="utf-8")
        partial.replace(path)
        return reply

    def _call(self, turn: Turn) -> str:
        attempt = 0
        while True:
            self._wait_for_rate_limit()
            self.usage.calls += 1
            try:
                return self.generator.generate([turn], self.options)
            except BackendError:
                if attempt >= self.retries:
                    self.usage.errors += 1
                    raise
                self.usage.retries += 1
                self._sleep(self.backoff * 2**attempt)
                attempt += 1

    def _wait_for_rate_limit(self) -> None:
        now = self._clock()
        if self._last_call is not None and now - self._last_call < self.interval:
            self._sleep(self.interval - (now - self._last_call))
            now = self._clock()
        self._last_call = now
