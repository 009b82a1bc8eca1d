"""Readers for data sets laid out as a folder per concept: MyVLM and DreamBooth.

Such a folder holds only photos, so the split between what the assistant is
shown and what it is asked about is made here. Each concept's reference images
are by default the first ``references`` photos in natural order (``2.jpg``
before ``10.jpg``; DreamBooth's ``00.jpg``); the rest are query images. With a
``seed`` the references are drawn at random instead, per concept and
reproducibly: the paper repeats each benchmark with different reference images.
A concept with no more photos than ``references`` has no query images.

From the query images come items of one task:

* ``caption``: the image, its concept, and the reference captions of the
  concept folder's ``captions.json`` where it has any;
* ``retrieval``: the image and its concept;
* ``recognition``: for each concept, "is it in this image?", so the other
  concepts of the same kind (DreamBooth's seven dogs) are the hard negatives.
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from rap.concepts import DEFAULT_CATEGORY
from rap.errors import InvalidFormat, InvalidInput
from rap.evaluation.items import ConceptSource, EvalItem, EvalSet, Task
from rap.evaluation.readers_json import ImageResolver, load_json
from rap.store.inputs import NewConcept
from rap.store.interchange import read_plain_folder

FOLDER_TASKS: tuple[Task, ...] = ("caption", "retrieval", "recognition")
CAPTIONS_FILE = "captions.json"
CLASSES_FILE = "prompts_and_classes.txt"

Captions = dict[Path, tuple[str, ...]]


def read_concept_folders(folder: Path, task: Task = "caption", references: int = 1, seed: int | None = None) -> EvalSet:
    """A folder with one subfolder of photos per concept, each with an optional ``captions.json`` (MyVLM).

    A subfolder may also hold ``info.txt`` and ``category.txt``, as for ``rap import``.
    """
    folder = folder.expanduser().resolve()
    concepts = read_plain_folder(folder, DEFAULT_CATEGORY)
    return _split(folder, [(c, read_captions(folder / c.name)) for c in concepts], task, references, seed)


def read_dreambooth(folder: Path, task: Task = "caption", references: int = 1, seed: int | None = None) -> EvalSet:
    """The DreamBooth subjects: ``SUBJECT/NN.jpg``, each subject's class read from ``prompts_and_classes.txt``."""
    folder = folder.expanduser().resolve()
    classes = read_classes(folder / CLASSES_FILE)
    concepts = read_plain_folder(folder, DEFAULT_CATEGORY)
    for concept in concepts:
        concept.category = classes.get(concept.name, concept.category)
    return _split(folder, [(c, {}) for c in concepts], task, references, seed)


def read_captions(concept_folder: Path) -> Captions:
    """Reference captions by image, from ``captions.json`` if the folder has one.

    Accepted: ``{"1.jpg": ["caption", ...]}`` (MyVLM's), a single caption per
    image instead of a list, or a list of ``{"image": ..., "captions": [...]}``
    (or ``"caption"``). Image names are relative to the concept folder.
    """
    source = concept_folder / CAPTIONS_FILE
    if not source.exists():
        return {}
    data = load_json(source)
    if isinstance(data, list):
        pairs = [_listed_caption(source, n, entry) for n, entry in enumerate(data, 1)]
    elif isinstance(data, dict):
        pairs = list(data.items())
    else:
        raise InvalidFormat(f"{source}: expected {{image: [captions]}} or a list of {{image, captions}}")
    resolve = ImageResolver(concept_folder)
    captions: Captions = {}
    for image, texts in pairs:
        texts = [texts] if isinstance(texts, str) else texts
        if not isinstance(image, str) or not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
            raise InvalidFormat(f"{source}: captions of {image!r} must be text or a list of texts")
        captions[resolve(image)] = tuple(texts)
    return captions


def _listed_caption(source: Path, number: int, entry: Any) -> tuple[Any, Any]:
    if not isinstance(entry, dict) or "image" not in entry:
        raise InvalidFormat(f"{source}: entry {number} needs 'image' and 'captions'")
    return entry["image"], entry.get("captions", entry.get("caption"))


def read_classes(source: Path) -> dict[str, str]:
    """Each subject's class from the ``subject_name,class`` table of DreamBooth's prompts file."""
    try:
        lines = source.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidFormat(f"{source}: cannot read ({exc})") from None
    header = next((n for n, line in enumerate(lines) if line.replace(" ", "") == "subject_name,class"), None)
    if header is None:
        raise InvalidFormat(f"{source}: no 'subject_name,class' table")
    classes = {}
    for line in lines[header + 1 :]:
        subject, comma, cls = line.partition(",")
        if not comma:
            break
        classes[subject.strip()] = cls.strip()
    return classes


def natural_key(path: Path) -> tuple[list[int | str], str]:
    """Sort key putting ``2.jpg`` before ``10.jpg``."""
    parts = re.split(r"(\d+)", path.name.lower())
    return [int(p) if n % 2 else p for n, p in enumerate(parts)], path.name


def choose_references(name: str, photos: list[Path], references: int, seed: int | None) -> list[Path]:
    """The first ``references`` photos, or with ``seed`` a reproducible random draw of them."""
    if seed is None:
        return photos[:references]
    drawn = set(random.Random(f"{seed}:{name}").sample(photos, min(references, len(photos))))
    return [p for p in photos if p in drawn]


def _split(folder: Path, concepts: Iterable[tuple[NewConcept, Captions]], task: Task, references: int, seed: int | None) -> EvalSet:
    if task not in FOLDER_TASKS:
        raise InvalidInput(f"{folder}: a folder of concepts gives {', '.join(FOLDER_TASKS)} items, not {task!r}")
    if references < 1:
        raise InvalidInput(f"references must be at least 1, not {references}")
    result = EvalSet()
    queries: list[tuple[str, Path, tuple[str, ...] | None]] = []
    for concept, captions in concepts:
        photos = sorted({Path(p) for p in concept.images if isinstance(p, (str, Path))} | set(captions), key=natural_key)
        chosen = choose_references(concept.name, photos, references, seed)
        result.concepts[concept.name] = ConceptSource(concept.name, tuple(chosen), concept.info, concept.category)
        queries += [(concept.name, photo, captions.get(photo)) for photo in photos if photo not in chosen]
    for name, photo, reference_captions in queries:
        item_id = f"{task}/{_relative(photo, folder)}"
        if task == "recognition":
            result.items += [
                EvalItem(f"{item_id}/{target}", "recognition", photo, (name,), answer=target == name, target=target)
                for target in result.concepts
            ]
        else:
            answer = reference_captions if task == "caption" else None
            result.items.append(EvalItem(item_id, task, photo, (name,), answer=answer))
    return result


def _relative(photo: Path, folder: Path) -> str:
    try:
        return photo.relative_to(folder).as_posix()
    except ValueError:
        return photo.as_posix()
