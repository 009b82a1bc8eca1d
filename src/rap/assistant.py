"""The personal assistant: Remember -> Retrieve -> Generate, in one object.

An :class:`Assistant` joins a concept store, a retriever and a generation
backend. Every answer carries the concepts that went into the prompt (name,
distance, box, whether text or image retrieved them, and whether the retriever
labels them a match), so a user can always see why the model said what it said.
The model gets the top K candidates, as in the paper, with weak ones labelled
weak; a backend that cannot see answers "is X here?" and "where is X?" from the
retriever's labels (:mod:`rap.decided`), and a reply of its that contradicts
them gets the retriever's correction appended.

A :class:`Conversation` keeps the history of a chat: retrieval runs with the
image on the first turn; on later turns, concepts named in the text and not yet
in the conversation are added.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal


from rap.answers import parse_box, parse_yes_no
from rap.decided import correction, decided_reply
from rap.detectors import RegionDetector
from rap.errors import InvalidInput
from rap.generation import GenerationOptions, Generator, PromptConcept, Turn, create_generator, user_turn
from rap.images import Box, LoadedImage, as_loaded, load_image
from rap.retrieval import RetrievedConcept, Retriever, candidate_names
from rap.retrieval.retriever import Query
from rap.settings import Settings, default
from rap.store.base import ConceptStore

CAPTION_QUESTION = "Give a short caption of this image. Call the people and things you know by their names."
RECOGNITION_QUESTION = "Is {token} in the image? Answer with a single word."


@dataclass(frozen=True)
class Answer:
    """A reply, the concepts its prompt held, and the model that wrote it."""

    text: str
    concepts: list[RetrievedConcept]
    model: str = ""
    """The backend's canonical spec, e.g. ``llava:/models/rap-llava-13b``."""

    def to_dict(self) -> dict[str, Any]:
        return {"answer": self.text, "concepts": [c.to_dict() for c in self.concepts], "model": self.model}


Mode = Literal["model", "retriever"]
"""How recognize and locate decide: by asking the model, or by the retriever alone (no generation)."""


@dataclass(frozen=True)
class Recognition:
    """Is the concept in the image? ``present`` is None when the model's reply is neither yes nor no."""

    name: str
    present: bool | None
    mode: Mode
    match: RetrievedConcept
    reply: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "present": self.present, "mode": self.mode, "reply": self.reply, "match": self.match.to_dict()}


@dataclass(frozen=True)
class Location:
    """Where a named concept is in an image, if it is there, by the model's answer or the retriever's best region.

    ``match`` is the retriever's best region either way, so the two can be compared;
    ``reply`` is the model's answer in ``model`` mode.
    """

    name: str
    found: bool
    box: Box | None
    match: RetrievedConcept
    mode: Mode = "retriever"
    reply: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name, "found": self.found, "box": list(self.box) if self.box else None,
            "mode": self.mode, "reply": self.reply, "match": self.match.to_dict(),
        }  # fmt: skip


@dataclass
class Conversation:
    """A chat about at most one image; each answered turn stays in the history."""

    assistant: Assistant
    #: the photo, reduced to what the retriever needs, with its full size (which boxes are in)
    image: LoadedImage | None = None
    turns: list[Turn] = field(default_factory=list)
    concepts: list[RetrievedConcept] = field(default_factory=list)
    last: Answer | None = None

    def ask(self, question: str) -> Answer:
        for _ in self.stream(question):
            pass
        assert self.last is not None
        return self.last

    def replay(self, question: str, reply: str) -> None:
        """Record a past exchange without generating, as if ``reply`` had been the answer.

        A stateless client (an OpenAI-style chat API) sends the whole history
        with each question; replaying it gives the same concepts and turns the
        conversation had.
        """
        turn, used = self.assistant._next_turn(self, question)
        turn.reply = reply.strip()
        self.turns.append(turn)
        self.concepts += used

    def stream(self, question: str) -> Iterator[str]:
        """Yield the reply as it is decoded; afterwards :attr:`last` holds the :class:`Answer`."""
        yield from self.begin(question)[1]

    def begin(self, question: str) -> tuple[list[RetrievedConcept], Iterator[str]]:
        """Retrieve for ``question`` now: the concepts the prompt holds, and the reply still to decode.

        Retrieval takes under a second and an answer many, so a client can show
        the evidence (which concepts, where in the photo) before the first word.
        """
        turn, used = self.assistant._next_turn(self, question)
        return [*self.concepts, *used], self._reply(question, turn, used)

    def _reply(self, question: str, turn: Turn, used: list[RetrievedConcept]) -> Iterator[str]:
        """The reply to ``turn``. A backend that cannot see is not asked whether or where a
        named concept is in the photo: the retriever's labels answer (model ``retriever``)."""
        decided = self.assistant._decided(self, question, used)
        model = self.assistant.generator.id if decided is None else "retriever"
        pieces: list[str] = []
        stream = iter([decided]) if decided is not None else self.assistant.generator.stream([*self.turns, turn], self.assistant.options)
        for piece in stream:
            pieces.append(piece)
            yield piece
        fix = self.assistant._correction(self, "".join(pieces), used) if decided is None else None
        if fix is not None:
            pieces.append(f"\n{fix}")
            yield pieces[-1]
        turn.reply = "".join(pieces).strip()
        self.turns.append(turn)
        self.concepts += used
        self.last = Answer(turn.reply, list(self.concepts), model)


class Assistant:
    """Answers questions about the user's concepts, with or without a photo."""

    def __init__(
        self,
        store: ConceptStore,
        retriever: Retriever | None = None,
        generator: Generator | str | None = None,
        options: GenerationOptions | None = None,
        generator_options: dict[str, Any] | None = None,
        max_concepts: int | None = None,
    ) -> None:
        self.store = store
        #: at most this many concepts per prompt, below the backend's own limit (0: no retrieval at all)
        self.max_concepts = max_concepts
        self.retriever = retriever or Retriever(store)
        self._generator = generator if generator is not None else default("generator")
        self._generator_options = generator_options or {}
        self.options = options or GenerationOptions()

    @property
    def generator(self) -> Generator:
        """The backend, loaded on first use: recognition and location by retrieval never load it."""
        if isinstance(self._generator, str):
            self._generator = create_generator(self._generator, **self._generator_options)
        return self._generator

    @generator.setter
    def generator(self, generator: Generator | str) -> None:
        """Swap the backend (a loaded one, or a spec to load on first use); history is unaffected."""
        self._generator = generator

    @property
    def loaded_generator(self) -> Generator | None:
        """The backend if it has been loaded, else None: a caller can share it without loading it."""
        return self._generator if isinstance(self._generator, Generator) else None

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        store: ConceptStore,
        *,
        detector: RegionDetector | None = None,
        generator: Generator | None = None,
        retriever: Retriever | None = None,
    ) -> Assistant:
        """The assistant the settings in force describe (backend, model, options, K, threshold).

        A service passes the ``detector`` and ``generator`` it loaded once, so
        that each user's assistant shares them instead of loading its own, and
        may pass a ``retriever`` of its own (one that records timings).
        """
        found = retriever or Retriever.from_settings(store, settings, detector=detector)
        options = GenerationOptions(max_new_tokens=settings.max_new_tokens, temperature=settings.temperature)
        return cls(store, found, generator or settings.generator_spec, options, settings.generator_options)

    def warm(self) -> int:
        """Prepare every concept's reference image in the backend (e.g. cache its vision features).

        Call it once a service starts, and after concepts are added or their
        images edited, so that questions never re-encode concept images.
        """
        if not self.generator.sees_images:
            return 0
        images = {}
        for concept in self.store.list():
            if concept.images:
                avatar = concept.images[0]
                images[avatar.sha256] = load_image(self.store.image_path(avatar.file)).image
        return self.generator.prepare_concepts(images)

    # -- the four things it does ----------------------------------------------
    def chat(self, image: Query | None = None) -> Conversation:
        return Conversation(self, as_loaded(image, self.retriever.image_side) if image is not None else None)

    def ask(self, question: str, image: Query | None = None, history: Conversation | None = None) -> Answer:
        """A personalized answer; pass the previous answer's conversation as ``history`` to go on."""
        if history is not None and image is not None:
            raise InvalidInput("a conversation keeps the image of its first turn; start a new one for a new image")
        return (history or self.chat(image)).ask(question)

    def caption(self, image: Query) -> Answer:
        return self.ask(CAPTION_QUESTION, image)

    def recognize(self, image: Query, name: str, mode: Mode = "model") -> Recognition:
        """Is concept ``name`` in the image: ask the model, or decide by the retriever's operating point.

        A model that cannot see is not asked: the retriever decides (mode ``retriever``).
        """
        concept = self.store.get(name)
        match = self.retriever.locate(image, concept.name)
        if mode == "retriever" or not self.generator.sees_images:
            return Recognition(concept.name, match.match, "retriever", match)
        reply = self.ask(RECOGNITION_QUESTION.format(token=concept.token), image).text
        return Recognition(concept.name, parse_yes_no(reply), mode, match, reply)

    def locate(self, image: Query, name: str, mode: Mode = "retriever") -> Location:
        """Where concept ``name`` is: ask the model with the paper's grounding question and read its box,
        or take the retriever's best-matching region (no generation), as a model that cannot see must."""
        if mode not in ("model", "retriever"):
            raise InvalidInput(f"mode must be 'model' or 'retriever', not {mode!r}")
        match = self.retriever.locate(image, name)  # a path keeps the retriever's memory of its regions
        if mode == "retriever" or not self.generator.sees_images:
            return Location(match.concept.name, match.match, match.box if match.match else None, match, "retriever")
        from rap.data.tasks import GROUNDING  # the data package is needed only here

        picture = as_loaded(image, self.retriever.image_side)
        # the paper's first grounding template, which RAP-LLaVA was trained to answer with a normalised box
        reply = self.ask(GROUNDING[0].format(match.concept.token), picture).text
        assert picture.size is not None
        box = parse_box(reply, picture.size)
        return Location(match.concept.name, box is not None, box, match, mode, reply)

    # -- building turns --------------------------------------------------------
    def _prompt_concept(self, retrieved: RetrievedConcept) -> PromptConcept:
        concept = retrieved.concept
        avatar = concept.images[0] if concept.images else None
        image = load_image(self.store.image_path(avatar.file)).image if avatar and self.generator.sees_images else None
        return PromptConcept(concept.token, concept.describe(), image, avatar.sha256 if avatar else None, weak=retrieved.weak)

    def _correction(self, conversation: Conversation, reply: str, used: Sequence[RetrievedConcept]) -> str | None:
        """For a backend that cannot see: the retriever's word where the reply contradicts its labels."""
        if conversation.image is None or self.generator.sees_images:
            return None
        return correction(reply, [*conversation.concepts, *used])

    def _decided(self, conversation: Conversation, question: str, used: Sequence[RetrievedConcept]) -> str | None:
        """The retriever's answer to "is X here?" or "where is X?", for a backend that cannot see the photo."""
        if conversation.image is None or self.generator.sees_images:
            return None
        named = {c.name for c in self.store.lookup(candidate_names(question))}
        labelled = {r.concept.name: r for r in [*conversation.concepts, *used]}
        return decided_reply(question, [labelled[name] for name in named if name in labelled])

    def _next_turn(self, conversation: Conversation, question: str) -> tuple[Turn, list[RetrievedConcept]]:
        if not isinstance(question, str) or not question.strip():
            raise InvalidInput("the question is empty")
        limit = self.generator.max_concepts if self.max_concepts is None else min(self.max_concepts, self.generator.max_concepts)
        if not conversation.turns:
            retrieval = self.retriever.retrieve(conversation.image, text=question)
            used = retrieval.concepts[:limit]
            # A backend that cannot see cannot judge a weak candidate either: a small text-only
            # model told of one states it as fact ("the dog is a ginger cat named <kit>"), so it
            # hears of matches and of what the user named; the weak ones stay in the evidence shown.
            prompted = used if self.generator.sees_images else [r for r in used if r.match or r.via == "text"]
            account = _account(prompted) if conversation.image is not None else None
            photo = conversation.image.image if conversation.image is not None else None
            turn = user_turn(question, photo, [self._prompt_concept(r) for r in prompted], account)
            return turn, used
        known = {c.concept.name for c in conversation.concepts}
        new = [c for c in self.store.lookup(candidate_names(question)) if c.name not in known]
        # looked for in the photo again, so that a concept named later carries its label in it
        image = conversation.image if new else None
        named = [r for r in self.retriever.retrieve(image, text=question, k=limit).concepts if r.via == "text" and r.concept.name not in known]
        used = named[:limit]  # newly named concepts, up to the backend's limit per turn
        return user_turn(question, None, [self._prompt_concept(r) for r in used]), used


def _account(used: Sequence[RetrievedConcept]) -> str:
    """What the retriever saw, in words, for a backend that cannot see: the matches, then the
    concepts the user named that the photo does not show."""
    def where(r: RetrievedConcept) -> str:
        return f"{r.concept.token} (a {r.concept.category}, {'in the whole photo' if r.region == 'image' else f'at box {list(r.box or ())}'})"

    seen = [where(r) for r in used if r.match]
    absent = [r.concept.token for r in used if r.distance is not None and not r.match]
    account = "it shows " + "; ".join(seen) + "." if seen else "none of the user's people or things were recognised in it."
    if absent:
        account += " Not recognised in it: " + ", ".join(absent) + "."
    return account
