"""Readers for benchmark files that list their items: QA and recognition JSON, JSONL manifests.

These files name their concepts but do not hold them: the concepts to remember
come from a separate database (``database=``, read with
:func:`rap.store.interchange.read_concepts`). Every concept an item names must be
in that database, or reading fails with the list of absent names: a question
about a concept the assistant was never shown measures nothing, and finding out
after hours of generation is too late.

Image paths in these files are relative and often rooted elsewhere (the official
files write ``./yollava-data/test/bo/1.png`` or ``benchmark_data/yollava-data/...``).
:class:`ImageResolver` finds each under one root folder, dropping leading
components until a file turns up. A path it cannot find is kept, not raised, so
that :meth:`EvalSet.missing_files` can list every missing image at once.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path, PurePosixPath
from typing import Annotated, Any

from pydantic import AliasChoices, BaseModel, Field, ValidationInfo, model_validator

from rap.concepts import name_key
from rap.errors import InvalidFormat, InvalidInput
from rap.evaluation.items import ConceptSource, EvalItem, EvalSet, Task
from rap.formats import OTHERS, OWN, NonBlank, validated
from rap.images import IMAGE_SUFFIXES
from rap.store.interchange import read_concepts

TASKS: tuple[Task, ...] = ("caption", "qa", "recognition", "retrieval")
# The QA files write the concept as "sks" or "<sks>"; whole words only, so "asks" stays.
_PLACEHOLDER = re.compile(r"<sks>|\bsks\b")
# The recognition list writes LLaVA's image token into its questions; rap passes images apart.
_IMAGE_TOKEN = re.compile(r"^\s*<image>\s*")

PathArg = str | os.PathLike[str]


class ImageResolver:
    """Turns paths written in a data file into files under ``root``.

    A path is tried as written below ``root``, then with its first component
    dropped, then its first two, and so on: the longest tail that names a file
    wins. ``./yollava-data/test/bo/1.png`` is thus found under ``root`` whether
    ``root`` holds ``yollava-data/``, ``test/`` or ``bo/``. Absolute paths that
    exist are kept; absolute paths from another machine are searched like
    relative ones. Unfound paths come back as written below ``root``, so the
    caller can report them. Answers are cached: a recognition list names each
    image dozens of times.
    """

    def __init__(self, root: Path) -> None:
        self.root = root.expanduser().resolve()
        self._found: dict[str, Path] = {}

    def __call__(self, written: str) -> Path:
        if written not in self._found:
            self._found[written] = self._find(written)
        return self._found[written]

    def _find(self, written: str) -> Path:
        if Path(written).is_absolute() and Path(written).is_file():
            return Path(written)
        parts = written_parts(written)
        for start in range(len(parts)):
            candidate = self.root.joinpath(*parts[start:])
            if candidate.is_file():
                return candidate
        return self.root.joinpath(*parts)


def written_parts(written: str) -> list[str]:
    """Components of a written path, with ``.``, the root and Windows separators dropped."""
    path = PurePosixPath(written.replace("\\", "/"))
    return [part for part in path.parts if part not in (".", "/")]


def written_key(written: str) -> str:
    """The form of a written path used in item ids: ``./a/b.png`` and ``a/b.png`` agree."""
    return "/".join(written_parts(written))


def load_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidFormat(f"{path}: cannot read ({exc})") from None
    except json.JSONDecodeError as exc:
        raise InvalidFormat(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from None


def personalize(question: str, concept: str) -> str:
    """Write the concept as rap's models see it, ``<bo>``, where the file wrote ``sks``."""
    return _PLACEHOLDER.sub(f"<{concept}>", question)


#: a multiple-choice question's options: at least two letters, each mapped to a choice
Options = Annotated[dict[str, str], Field(min_length=2)]


def _answer_in_options(answer: object, options: dict[str, str] | None, key: str) -> None:
    if options is not None and answer is not None and answer not in options:
        raise ValueError(f"{key} {answer!r} is not one of the options {sorted(options)}")


class QAEntry(BaseModel):
    """One question of a Yo'LLaVA / RAP QA file; the text-only file spells ``options`` as ``option``."""

    model_config = OTHERS

    question: NonBlank
    options: Options = Field(validation_alias=AliasChoices("options", "option"))
    correct_answer: str

    @model_validator(mode="after")
    def _answer_is_an_option(self) -> QAEntry:
        _answer_in_options(self.correct_answer, self.options, "correct_answer")
        return self


class RecognitionEntry(BaseModel):
    """One line of the official recognition list (its ``type`` is not read: see :func:`recognition_items`)."""

    model_config = OTHERS

    image: NonBlank
    concept: NonBlank
    correct_answer: bool
    question: str = ""


class ManifestLine(BaseModel):
    """One line of rap's JSONL manifest; the task comes from the line, its fields, or ``task=``.

    The task a line gets is checked against what it holds: a qa item needs a
    question, a recognition item a target and a true/false answer, a caption or
    retrieval item an image. ``task=`` reaches the check as validation context.
    """

    model_config = OWN

    id: NonBlank | None = None
    task: Task | None = None
    image: NonBlank | None = None
    concepts: list[NonBlank] = []
    question: NonBlank | None = None
    options: Options | None = None
    answer: str | bool | list[str] | None = None
    target: NonBlank | None = None

    def resolved_task(self, default: Task | None) -> Task | None:
        if self.task:
            return self.task
        return "qa" if self.options is not None else "recognition" if self.target is not None else default

    @model_validator(mode="after")
    def _fits_its_task(self, info: ValidationInfo) -> ManifestLine:
        _answer_in_options(self.answer, self.options, "answer")
        task = self.resolved_task((info.context or {}).get("task"))
        if task is None:
            raise ValueError(f"task None is not one of {', '.join(TASKS)} (give 'task' on the line or task=)")
        if task == "qa" and self.question is None:
            raise ValueError("a qa item needs a 'question'")
        if task == "recognition" and (self.target is None or not isinstance(self.answer, bool)):
            raise ValueError("a recognition item needs a 'target' and a true/false 'answer'")
        if task in ("caption", "retrieval") and self.image is None:
            raise ValueError(f"a {task} item needs an 'image'")
        return self


def qa_items(source: Path, data: Any, resolve: ImageResolver) -> list[EvalItem]:
    """Items of a Yo'LLaVA / RAP QA file: visual (keys are image paths) or text-only (keys are indices).

    Both shapes are ``{concept: {key: {question, options, correct_answer}}}``.
    """
    if not isinstance(data, dict) or not data or not all(isinstance(entries, dict) for entries in data.values()):
        raise InvalidFormat(f"{source}: expected a QA object {{concept: {{image or index: question}}}}")
    return [
        _qa_item(concept, key, validated(QAEntry, entry, f"{source}: {concept}/{key}"), resolve)
        for concept, entries in data.items()
        for key, entry in entries.items()
    ]


def _qa_item(concept: str, key: str, entry: QAEntry, resolve: ImageResolver) -> EvalItem:
    image = resolve(key) if PurePosixPath(key).suffix.lower() in IMAGE_SUFFIXES else None
    return EvalItem(
        id=f"qa/{concept}/{written_key(key)}",
        task="qa",
        image=image,
        concepts=(concept,),
        question=personalize(entry.question, concept),
        options=dict(entry.options),
        answer=entry.correct_answer,
        target=concept,
    )


def recognition_items(source: Path, data: Any, resolve: ImageResolver) -> list[EvalItem]:
    """Items of the official recognition list: "is <concept> in this image?", True or False.

    ``correct_answer`` decides, not ``type``: the official list also files each
    image's own concept under "negative" with the answer True, repeating the
    positive question. Such exact repeats become one item; the same question
    with two different answers is an error. An item's ``concepts`` are every
    concept the list says is in its image, so the negatives carry them too.
    """
    if not isinstance(data, list) or not data:
        raise InvalidFormat(f"{source}: expected a non-empty list of recognition questions")
    items: dict[str, tuple[str, EvalItem]] = {}
    present: dict[str, set[str]] = {}
    for number, raw in enumerate(data, 1):
        where = f"{source}: entry {number}"
        entry = validated(RecognitionEntry, raw, where)
        image_key = written_key(entry.image)
        item_id = f"recognition/{image_key}/{entry.concept}"
        if item_id in items:
            if items[item_id][1].answer != entry.correct_answer:
                raise InvalidFormat(
                    f"{where}: asks again whether {entry.concept!r} is in {entry.image!r}, with the other answer"
                )
            continue
        items[item_id] = image_key, EvalItem(
            id=item_id,
            task="recognition",
            image=resolve(entry.image),
            question=_IMAGE_TOKEN.sub("", entry.question) or None,
            answer=entry.correct_answer,
            target=entry.concept,
        )
        if entry.correct_answer:
            present.setdefault(image_key, set()).add(entry.concept)
    return [replace(item, concepts=tuple(sorted(present.get(key, ())))) for key, item in items.values()]


def manifest_items(source: Path, resolve: ImageResolver, task: Task | None) -> list[EvalItem]:
    """Items of a JSONL manifest, one object per line (blank lines skipped).

    A line's task is its ``task``, else ``qa`` when it has ``options``, else
    ``recognition`` when it has a ``target``, else ``task=``. With ``task=``,
    only the lines of that task are kept. Without an ``id`` a line's id is
    ``<task>/<line number>``: give ids in a manifest that will be edited
    between a run and its resumption.
    """
    try:
        lines = source.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidFormat(f"{source}: cannot read ({exc})") from None
    items: list[EvalItem] = []
    seen: set[str] = set()
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"{source} line {number}"
        try:
            entry = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InvalidFormat(f"{where}: not valid JSON ({exc.msg})") from None
        item = _manifest_item(number, validated(ManifestLine, entry, where, {"task": task}), resolve, task)
        if item.id in seen:
            raise InvalidFormat(f"{where}: id {item.id!r} repeats an earlier line's")
        seen.add(item.id)
        if task is None or item.task == task:
            items.append(item)
    if not seen:
        raise InvalidFormat(f"{source}: no items (one JSON object per line)")
    return items


def _manifest_item(number: int, line: ManifestLine, resolve: ImageResolver, default: Task | None) -> EvalItem:
    task = line.resolved_task(default)
    assert task is not None  # ManifestLine refuses a line without one
    return EvalItem(
        id=line.id or f"{task}/{number}",
        task=task,
        image=resolve(line.image) if line.image else None,
        concepts=tuple(line.concepts),
        question=line.question,
        options=dict(line.options) if line.options is not None else None,
        answer=tuple(line.answer) if isinstance(line.answer, list) else line.answer,
        target=line.target,
    )


def with_database(source: Path, items: list[EvalItem], database: PathArg | None) -> EvalSet:
    """The set of ``items`` and the concepts of ``database``; every named concept must be there."""
    named = sorted({name for item in items for name in _named(item)})
    if database is None:
        if named:
            raise InvalidInput(
                f"{source} names concepts but holds none: pass the concept database "
                "(a RAP database.json folder or a folder per concept) as database="
            )
        return EvalSet(items=items)
    concepts = {c.name: ConceptSource(c.name, _paths(c.images), c.info, c.category) for c in read_concepts(database)}
    known = {name_key(name) for name in concepts}
    absent = [name for name in named if name_key(name) not in known]
    if absent:
        shown = ", ".join(absent[:10]) + (f" and {len(absent) - 10} more" if len(absent) > 10 else "")
        raise InvalidFormat(f"{source}: {len(absent)} concept(s) missing from {database}: {shown}; add them or drop their items")
    return EvalSet(concepts=concepts, items=items)


def _named(item: EvalItem) -> Iterable[str]:
    yield from item.concepts
    if item.target:
        yield item.target


def _paths(images: Iterable[object]) -> tuple[Path, ...]:
    # read_concepts gives paths; the store's NewConcept type also allows loaded images.
    return tuple(Path(image) for image in images if isinstance(image, (str, Path)))
