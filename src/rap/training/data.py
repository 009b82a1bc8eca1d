"""Training records (LLaVA's JSONL format, RAP-260K's) turned into rap conversations.

A record is ``{"id", "image": path or [paths], "conversations": [{"from":
"human", "value": ...}, {"from": "gpt", "value": ...}, ...], "extra": {...}}``.
The first human message carries the paper's prompt as text::

    <image>\\n[1.<image>\\n Name: <bo>, Info: <bo> is a Shiba Inu.\\n]What is <bo> doing?

with one ``<image>`` per image of ``image``: the query photo, then each
concept's crop in order. rap does not train on that text as written: it parses
it back into a question, a photo and :class:`~rap.generation.prompt.PromptConcept`
entries and rebuilds the message with :func:`~rap.generation.prompt.user_turn`,
the function that builds prompts at inference. A model is therefore trained on
exactly the layout it is later asked in, and dropping concepts beyond
``max_concepts`` drops each one's text and image together. A human message that
is not in that shape (plain LLaVA data) is kept as written, its ``<image>``
placeholders filled in order. The ``extra`` field repeats what the text says
about each crop, so the text alone is read.

Records are checked when read, without decoding images: a record that cannot
be trained on is skipped and counted, never allowed to stop a long run halfway.
Their shape is checked by :class:`TrainingRecord`, which ignores the fields rap
does not read (RAP-260K's ``extra``, a build's ``meta``, whatever else a
LLaVA-format file carries); the reason a record is skipped names the field.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from PIL import Image
from pydantic import BaseModel, Field, ValidationError

from rap.errors import InvalidInput
from rap.formats import OTHERS
from rap.generation.prompt import Part, PromptConcept, Turn, user_turn
from rap.images import load_image

IMAGE = "<image>"
_ENTRY = re.compile(r"(\d+)\.(<image>)?\n Name: (.*?), Info: (.*?)\n(?=\d+\.(?:<image>)?\n Name: |\])", re.DOTALL)


@dataclass(frozen=True)
class Message:
    """A human message: the paper's prompt parsed, or (``concepts`` None) text kept as written."""

    text: str
    photo: bool = False
    #: (token, info, has an image) per concept, in order
    concepts: tuple[tuple[str, str, bool], ...] | None = None

    @property
    def image_count(self) -> int:
        if self.concepts is None:
            return self.text.count(IMAGE)
        return int(self.photo) + sum(has_image for _, _, has_image in self.concepts)


@dataclass(frozen=True)
class Record:
    """One training conversation, images still as paths."""

    id: str
    images: tuple[Path, ...]
    exchanges: tuple[tuple[Message, str], ...]

    def turns(self) -> list[Turn]:
        """The conversation as rap turns, the images decoded and placed."""
        images = iter([load_image(path).image for path in self.images])
        return [_turn(message, images, reply) for message, reply in self.exchanges]


@dataclass
class Dataset:
    """The usable records of a JSONL file, and why the others were skipped."""

    records: list[Record]
    skipped: dict[str, int]

    @property
    def skipped_count(self) -> int:
        return sum(self.skipped.values())

    def describe_skipped(self) -> str:
        """``2 image missing, 1 no gpt turn``"""
        return _describe(self.skipped)


def read_jsonl(path: str | Path, max_concepts: int, image_root: str | Path | None = None) -> Dataset:
    """Every trainable record of ``path``; image paths are relative to ``image_root`` (default: the file's folder)."""
    path = Path(path)
    root = Path(image_root) if image_root is not None else path.parent
    records: list[Record] = []
    skipped: dict[str, int] = {}
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidInput(f"cannot read training data {path} ({exc}); give a JSONL file in LLaVA's format") from None
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            records.append(parse_record(json.loads(line), root, max_concepts, f"line {number}"))
        except (ValueError, SkippedRecord) as exc:
            reason = exc.reason if isinstance(exc, SkippedRecord) else "not JSON"
            skipped[reason] = skipped.get(reason, 0) + 1
    if not records:
        raise InvalidInput(f"no trainable record in {path} (skipped: {_describe(skipped) or 'the file is empty'})")
    return Dataset(records, skipped)


class TrainingMessage(BaseModel):
    """One message of a conversation: ``{"from": "human" or "gpt", "value": text}``."""

    model_config = OTHERS

    role: str = Field(alias="from")
    value: str


class TrainingRecord(BaseModel):
    """The fields of a LLaVA-format record that rap reads."""

    model_config = OTHERS

    id: str | int | None = None
    image: str | list[str] | None = None
    conversations: list[TrainingMessage]


class SkippedRecord(Exception):
    """A record that cannot be trained on; ``reason`` is short, for counting."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def parse_record(raw: object, root: Path, max_concepts: int, label: str = "record") -> Record:
    """A checked record, or :class:`SkippedRecord` saying what is wrong with it."""
    try:
        record = TrainingRecord.model_validate(raw)
    except ValidationError as exc:
        raise SkippedRecord(_invalid(exc)) from None
    image = record.image or []
    paths = [image] if isinstance(image, str) else image
    exchanges = _exchanges(record.conversations)
    messages = [message for message, _ in exchanges]
    if sum(message.image_count for message in messages) != len(paths):
        raise SkippedRecord("<image> placeholders do not match the images")
    kept_paths = _kept_images([root / p for p in paths], messages, max_concepts)
    if any(not p.is_file() for p in kept_paths):
        raise SkippedRecord("image missing")
    exchanges = [(_capped(message, max_concepts), reply) for message, reply in exchanges]
    return Record(str(record.id if record.id is not None else label), tuple(kept_paths), tuple(exchanges))


def _invalid(exc: ValidationError) -> str:
    """A short reason for counting: the top-level field at fault, not the index within it."""
    first = exc.errors(include_url=False)[0]
    if not first["loc"]:
        return "not a JSON object"
    field = first["loc"][0]
    return f"no {field!r} field" if first["type"] == "missing" and len(first["loc"]) == 1 else f"bad {field!r} field"


def _exchanges(conversation: list[TrainingMessage]) -> list[tuple[Message, str]]:
    """(human message, gpt reply) pairs; a conversation must alternate, starting with the human."""
    pairs: list[tuple[Message, str]] = []
    for n in range(0, len(conversation), 2):
        pair = conversation[n : n + 2]
        if [m.role for m in pair] != ["human", "gpt"]:
            raise SkippedRecord("conversation does not alternate human and gpt turns")
        human, gpt = (m.value for m in pair)
        if not gpt.strip():
            raise SkippedRecord("empty gpt turn")
        pairs.append((parse_message(human), gpt))
    if not pairs:
        raise SkippedRecord("no gpt turn")
    return pairs


def parse_message(text: str) -> Message:
    """The paper's prompt read back into photo, concepts and question, or the text as written."""
    photo = text.startswith(IMAGE + "\n")
    rest = text[len(IMAGE) + 1 :] if photo else text
    if not rest.startswith("["):
        return Message(text) if IMAGE in rest else Message(rest, photo=photo, concepts=())
    entries = list(_ENTRY.finditer(rest, 1))
    position = 1
    for entry in entries:
        if entry.start() != position:
            return Message(text)
        position = entry.end()
    if not entries or not rest.startswith("]", position) or IMAGE in rest[position:]:
        return Message(text)
    concepts = tuple((m.group(3), m.group(4), m.group(2) is not None) for m in entries)
    return Message(rest[position + 1 :], photo=photo, concepts=concepts)


def _capped(message: Message, max_concepts: int) -> Message:
    if message.concepts is None or len(message.concepts) <= max_concepts:
        return message
    return Message(message.text, message.photo, message.concepts[:max_concepts])


def _kept_images(paths: list[Path], messages: list[Message], max_concepts: int) -> list[Path]:
    """The image paths left once each message keeps its first ``max_concepts`` concepts."""
    kept: list[Path] = []
    todo = iter(paths)
    for message in messages:
        if message.concepts is None:
            kept += [next(todo) for _ in range(message.image_count)]
            continue
        if message.photo:
            kept.append(next(todo))
        for n, (_, _, has_image) in enumerate(message.concepts):
            if has_image:
                path = next(todo)
                if n < max_concepts:
                    kept.append(path)
    return kept


def _turn(message: Message, images: Iterator[Image.Image], reply: str) -> Turn:
    if message.concepts is None:
        pieces = message.text.split(IMAGE)
        parts: list[Part] = [pieces[0]]
        for piece in pieces[1:]:
            parts += [next(images), piece]
        turn = Turn([part for part in parts if not (isinstance(part, str) and not part)], question=message.text)
    else:
        photo = next(images) if message.photo else None
        concepts = [
            PromptConcept(token, info, next(images) if has_image else None) for token, info, has_image in message.concepts
        ]
        turn = user_turn(message.text, photo, concepts)
    turn.reply = reply
    return turn


def _describe(skipped: dict[str, int]) -> str:
    return ", ".join(f"{count} {reason}" for reason, count in sorted(skipped.items()))
