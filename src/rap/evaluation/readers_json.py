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
from typing import Any

from rap.concepts import name_key
from rap.errors import InvalidFormat, InvalidInput
from rap.evaluation.items import ConceptSource, EvalItem, EvalSet, Task
from rap.store.interchange import IMAGE_SUFFIXES, read_concepts

TASKS: tuple[Task, ...] = ("caption", "qa", "recognition", "retrieval")
# The QA files write the concept as "sks" or "<sks>"; whole words only, so "asks" stays.
_PLACEHOLDER = re.compile(r"<sks>|\bsks\b")
# The recognition list writes LLaVA's image token into its questions; rap passes images apart.
_IMAGE_TOKEN = re.compile(r"^\s*<image>\s*")
_MANIFEST_KEYS = ("id", "task", "image", "concepts", "question", "options", "answer", "target")

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


def qa_items(source: Path, data: Any, resolve: ImageResolver) -> list[EvalItem]:
    """Items of a Yo'LLaVA / RAP QA file: visual (keys are image paths) or text-only (keys are indices).

    Both shapes are ``{concept: {key: {question, options, correct_answer}}}``;
    the text-only file spells ``options`` as ``option``, and either is accepted.
    """
    if not isinstance(data, dict) or not data:
        raise InvalidFormat(f"{source}: expected a QA object {{concept: {{image or index: question}}}}")
    items = []
    for concept, entries in data.items():
        if not isinstance(entries, dict):
            raise InvalidFormat(f"{source}: concept {concept!r} must map image paths or indices to questions")
        for key, entry in entries.items():
            items.append(_qa_item(f"{source}: {concept}/{key}", concept, key, entry, resolve))
    return items


def _qa_item(where: str, concept: str, key: str, entry: Any, resolve: ImageResolver) -> EvalItem:
    if not isinstance(entry, dict):
        raise InvalidFormat(f"{where}: expected an object with question, options and correct_answer")
    question = entry.get("question")
    options = entry.get("options", entry.get("option"))
    answer = entry.get("correct_answer")
    if not isinstance(question, str) or not question.strip():
        raise InvalidFormat(f"{where}: 'question' must be non-empty text")
    options = _options(where, options)
    if answer not in options:
        raise InvalidFormat(f"{where}: correct_answer {answer!r} is not one of the options {sorted(options)}")
    image = resolve(key) if PurePosixPath(key).suffix.lower() in IMAGE_SUFFIXES else None
    return EvalItem(
        id=f"qa/{concept}/{written_key(key)}",
        task="qa",
        image=image,
        concepts=(concept,),
        question=personalize(question, concept),
        options=options,
        answer=answer,
        target=concept,
    )


def _options(where: str, options: Any) -> dict[str, str]:
    if not isinstance(options, dict) or len(options) < 2:
        raise InvalidFormat(f"{where}: 'options' must map at least two letters to choices")
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in options.items()):
        raise InvalidFormat(f"{where}: every option must be text")
    return dict(options)


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
    for number, entry in enumerate(data, 1):
        where = f"{source}: entry {number}"
        if not isinstance(entry, dict):
            raise InvalidFormat(f"{where}: expected an object with image, concept and correct_answer")
        image, concept, answer = entry.get("image"), entry.get("concept"), entry.get("correct_answer")
        question = entry.get("question", "")
        if not isinstance(image, str) or not image or not isinstance(concept, str) or not concept:
            raise InvalidFormat(f"{where}: 'image' and 'concept' must be non-empty text")
        if not isinstance(answer, bool):
            raise InvalidFormat(f"{where}: 'correct_answer' must be true or false")
        if not isinstance(question, str):
            raise InvalidFormat(f"{where}: 'question' must be text")
        image_key = written_key(image)
        item_id = f"recognition/{image_key}/{concept}"
        if item_id in items:
            if items[item_id][1].answer != answer:
                raise InvalidFormat(f"{where}: asks again whether {concept!r} is in {image!r}, with the other answer")
            continue
        items[item_id] = image_key, EvalItem(
            id=item_id,
            task="recognition",
            image=resolve(image),
            question=_IMAGE_TOKEN.sub("", question) or None,
            answer=answer,
            target=concept,
        )
        if answer:
            present.setdefault(image_key, set()).add(concept)
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
        item = _manifest_item(where, number, entry, resolve, task)
        if item.id in seen:
            raise InvalidFormat(f"{where}: id {item.id!r} repeats an earlier line's")
        seen.add(item.id)
        if task is None or item.task == task:
            items.append(item)
    if not seen:
        raise InvalidFormat(f"{source}: no items (one JSON object per line)")
    return items


def _manifest_item(where: str, number: int, entry: Any, resolve: ImageResolver, default: Task | None) -> EvalItem:
    if not isinstance(entry, dict):
        raise InvalidFormat(f"{where}: expected an object such as {{\"image\": ..., \"concepts\": [...]}}")
    unknown = sorted(set(entry) - set(_MANIFEST_KEYS))
    if unknown:
        raise InvalidFormat(f"{where}: unknown key(s) {', '.join(unknown)}; known: {', '.join(_MANIFEST_KEYS)}")
    task = entry.get("task") or ("qa" if "options" in entry else "recognition" if "target" in entry else default)
    if task not in TASKS:
        raise InvalidFormat(f"{where}: task {task!r} is not one of {', '.join(TASKS)} (give 'task' on the line or task=)")
    image, concepts, question = entry.get("image"), entry.get("concepts", []), entry.get("question")
    target, answer, options = entry.get("target"), entry.get("answer"), entry.get("options")
    if image is not None and (not isinstance(image, str) or not image):
        raise InvalidFormat(f"{where}: 'image' must be a path")
    if not isinstance(concepts, list) or not all(isinstance(c, str) and c for c in concepts):
        raise InvalidFormat(f"{where}: 'concepts' must be a list of concept names")
    for key, value in (("question", question), ("target", target), ("id", entry.get("id"))):
        if value is not None and (not isinstance(value, str) or not value.strip()):
            raise InvalidFormat(f"{where}: {key!r} must be non-empty text")
    if options is not None:
        options = _options(where, options)
        if answer is not None and answer not in options:
            raise InvalidFormat(f"{where}: answer {answer!r} is not one of the options {sorted(options)}")
    if isinstance(answer, list) and all(isinstance(a, str) for a in answer):
        answer = tuple(answer)
    elif answer is not None and not isinstance(answer, (str, bool)):
        raise InvalidFormat(f"{where}: 'answer' must be text, true/false or a list of texts")
    if task == "qa" and question is None:
        raise InvalidFormat(f"{where}: a qa item needs a 'question'")
    if task == "recognition" and (target is None or not isinstance(answer, bool)):
        raise InvalidFormat(f"{where}: a recognition item needs a 'target' and a true/false 'answer'")
    if task in ("caption", "retrieval") and image is None:
        raise InvalidFormat(f"{where}: a {task} item needs an 'image'")
    return EvalItem(
        id=entry.get("id") or f"{task}/{number}",
        task=task,
        image=resolve(image) if image else None,
        concepts=tuple(concepts),
        question=question,
        options=options,
        answer=answer,
        target=target,
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
