"""Annotators: who writes concept descriptions and the answers to captions and questions.

The paper asks Gemini for these (Fig. 3). Annotators are chosen by name
through :data:`ANNOTATORS`, the registry mechanism encoders, detectors and
generators use:

- ``offline``: :class:`TemplateAnnotator` needs no model: it writes
  deterministic text from the class names, so the whole pipeline runs and is
  tested offline.
- ``generator:<generation backend spec>``, e.g. ``generator:openai:gpt-4o``:
  :class:`GeneratorAnnotator` puts any generation backend to work and makes it
  affordable and restartable: every call is cached on disk, so a rebuild or an
  interrupted build repeats no paid call; failures are retried with exponential
  backoff (tenacity); calls keep to a rate limit; calls, cache hits and an
  estimated cost are counted for the manifest.

Every annotator factory takes the spec's argument, ``cache_dir`` (where paid
answers are kept; an annotator that costs nothing ignores it) and its own
options.
"""

from __future__ import annotations

import hashlib
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from diskcache import Cache, JSONDisk
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field
from tenacity import RetryCallState, Retrying, retry_if_exception_type, stop_after_attempt, wait_exponential

from rap.errors import BackendError, InvalidInput
from rap.generation import (
    GenerationOptions,
    Generator,
    PromptConcept,
    Turn,
    create_generator,
    user_turn,
)
from rap.generation.base import validated_options
from rap.registry import Registry

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


class GeneratorAnnotatorOptions(BaseModel):
    """How a generation backend is used as an annotator: pace, retries and price."""

    model_config = ConfigDict(extra="forbid")

    calls_per_minute: float = Field(60.0, ge=0, description="rate limit; 0 sends calls as fast as they come")
    retries: int = Field(4, ge=0, le=20, description="retries of a call the backend failed (BackendError)")
    backoff_seconds: float = Field(2.0, ge=0, description="wait before the first retry; doubled for each next one")
    price_per_1k_tokens: float = Field(0.0, ge=0, description="prices the estimated tokens for the cost report")


class GeneratorAnnotator(Annotator):
    """Any rap generation backend as an annotator: cached, retried, rate-limited and metered.

    The cost is an estimate, len(text) / 4 tokens for the prompt text plus the
    reply, priced at ``price_per_1k_tokens``; images are not counted. ``sleep``
    and ``clock`` are the waits and the time the pacing uses (tests pass their own).

    The disk cache is ``diskcache`` in ``cache_dir``: one entry per prompt,
    keyed by the hash of the backend, the prompt and the pixels, its value the
    prompt and the reply as JSON (never pickled). SQLite transactions keep it
    whole when two builds share it or one is killed mid-write, and nothing is
    ever evicted: each entry is a paid answer, and deleting the folder is the
    way to forget them. The rate limit is a minimum interval between calls.
    """

    def __init__(
        self,
        generator: Generator | str,
        cache_dir: Path,
        settings: GeneratorAnnotatorOptions | None = None,
        *,
        options: GenerationOptions | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.generator = create_generator(generator) if isinstance(generator, str) else generator
        self.cache = Cache(str(cache_dir), disk=JSONDisk, eviction_policy="none")
        self.settings = settings or GeneratorAnnotatorOptions()
        rate = self.settings.calls_per_minute
        self.interval = 60.0 / rate if rate > 0 else 0.0
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
        cached = self.cache.get(key)
        if cached is not None:
            self.usage.cache_hits += 1
            return cached["reply"]
        reply = self._call(turn).strip()
        if not reply:
            self.usage.errors += 1
            raise BackendError(f"{self.generator.id} gave an empty reply")
        tokens = (len(prompt) + len(reply)) / 4
        self.usage.tokens += tokens
        self.usage.cost += tokens / 1000 * self.settings.price_per_1k_tokens
        self.cache.set(key, {"prompt": prompt, "reply": reply})
        return reply

    def _call(self, turn: Turn) -> str:
        """One answer, retried with exponential backoff while the backend fails."""
        retrying = Retrying(
            retry=retry_if_exception_type(BackendError),
            stop=stop_after_attempt(self.settings.retries + 1),
            wait=wait_exponential(multiplier=self.settings.backoff_seconds),
            sleep=self._sleep,
            before_sleep=self._count_retry,
            reraise=True,
        )
        try:
            return retrying(self._attempt, turn)
        except BackendError:
            self.usage.errors += 1
            raise

    def _attempt(self, turn: Turn) -> str:
        self._wait_for_rate_limit()
        self.usage.calls += 1
        return self.generator.generate([turn], self.options)

    def _count_retry(self, state: RetryCallState) -> None:
        self.usage.retries += 1

    def _wait_for_rate_limit(self) -> None:
        now = self._clock()
        if self._last_call is not None and now - self._last_call < self.interval:
            self._sleep(self.interval - (now - self._last_call))
            now = self._clock()
        self._last_call = now


#: the annotator ``rap data build`` uses unless told otherwise
DEFAULT_ANNOTATOR = "offline"

ANNOTATORS: Registry[Annotator] = Registry(
    "annotator", {"offline": "rap.data.annotator", "generator": "rap.data.annotator"}
)


@ANNOTATORS.register("offline", help="templates from class names: no model and no cost, for tests and builds without an API")
def _offline(argument: str, *, cache_dir: Path, **options: object) -> TemplateAnnotator:
    if argument or options:
        raise InvalidInput(
            "the offline annotator takes no argument or options; "
            "to annotate with a model give generator:<backend>, e.g. generator:openai:gpt-4o"
        )
    return TemplateAnnotator()


@ANNOTATORS.register(
    "generator",
    help="a generation backend annotates, e.g. generator:openai:gpt-4o: cached on disk, retried, "
    "rate-limited and metered",
)
def _generator(argument: str, *, cache_dir: Path, **options: object) -> GeneratorAnnotator:
    if not argument:
        raise InvalidInput("name the generation backend after generator:, e.g. generator:openai:gpt-4o")
    settings = validated_options(GeneratorAnnotatorOptions, options, "generator annotator")
    return GeneratorAnnotator(argument, cache_dir, settings)


def create_annotator(spec: str, cache_dir: Path, **options: object) -> Annotator:
    """The annotator named by ``spec`` (see :data:`ANNOTATORS`), with its own ``options``."""
    return ANNOTATORS.create(spec, cache_dir=Path(cache_dir), **options)
