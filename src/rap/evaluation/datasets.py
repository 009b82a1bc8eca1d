"""Read a benchmark from disk, whatever its layout, into an :class:`EvalSet`.

:func:`read_eval_set` recognises the layout from the shape of the file or
folder (see :data:`FORMATS`) and hands it to the reader for it: the file-based
ones live in :mod:`rap.evaluation.readers_json`, the folder-based ones in
:mod:`rap.evaluation.readers_folders`. Reading never stops at a missing image:
:meth:`EvalSet.missing_files` lists them all, so a run can refuse to start with
the whole list rather than fail an hour in.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rap.errors import InvalidFormat, InvalidInput
from rap.evaluation.items import EvalSet, Task
from rap.evaluation.readers_folders import CLASSES_FILE, read_concept_folders, read_dreambooth
from rap.evaluation.readers_json import (
    TASKS,
    ImageResolver,
    PathArg,
    load_json,
    manifest_items,
    qa_items,
    recognition_items,
    with_database,
)
from rap.images import IMAGE_SUFFIXES
from rap.store.interchange import DATABASE_JSON

FORMATS: dict[str, str] = {
    "qa": "Yo'LLaVA / RAP QA JSON {concept: {image path or index: {question, options (or option), correct_answer}}}",
    "recognition": "RAP recognition JSON [{image, question, concept, type, correct_answer}]",
    "manifest": "JSONL manifest (.jsonl), one {image, concepts, question?, options?, answer?, target?, task?, id?} per line",
    "concept-folders": "a folder with one subfolder of photos per concept, each with an optional captions.json (MyVLM)",
    "dreambooth": f"the DreamBooth folder: SUBJECT/NN.jpg and {CLASSES_FILE}",
}


def read_eval_set(
    path: PathArg,
    task: Task | None = None,
    images_root: PathArg | None = None,
    database: PathArg | None = None,
    *,
    references: int = 1,
    seed: int | None = None,
) -> EvalSet:
    """Read the data set at ``path``, in any of :data:`FORMATS`.

    ``task`` picks the items to make where the layout allows several (folders:
    caption, the default, retrieval or recognition; a manifest: the lines of
    that task); a QA or recognition file asked for another task is an error.
    ``images_root`` is where the image paths written in a file are looked for
    (default: the file's folder), see :class:`ImageResolver`. ``database`` holds
    the concepts that QA, recognition and manifest files name; folder layouts
    carry their own, chosen by ``references`` and ``seed`` (see
    :mod:`rap.evaluation.readers_folders`).
    """
    path = Path(path).expanduser()
    if task is not None and task not in TASKS:
        raise InvalidInput(f"task {task!r} is not one of {', '.join(TASKS)}")
    kind, data = _detect(path)
    if kind in ("concept-folders", "dreambooth"):
        if database is not None:
            raise InvalidInput(f"{path}: a folder of concepts holds its own reference photos; drop the database")
        reader = read_dreambooth if kind == "dreambooth" else read_concept_folders
        return reader(path, task or "caption", references, seed)
    resolve = ImageResolver(_images_root(path, images_root))
    if kind == "manifest":
        return with_database(path, manifest_items(path, resolve, task), database)
    if task not in (None, kind):
        raise InvalidInput(f"{path} holds {kind} items, not {task} items")
    items = qa_items(path, data, resolve) if kind == "qa" else recognition_items(path, data, resolve)
    return with_database(path, items, database)


def detect_format(path: PathArg) -> str:
    """The name in :data:`FORMATS` of the data set at ``path``, or an error listing them."""
    return _detect(Path(path).expanduser())[0]


def _detect(path: Path) -> tuple[str, Any]:
    """The format, and for a JSON file its parsed content (read once, not twice)."""
    if path.is_dir():
        if (path / DATABASE_JSON).exists():
            raise InvalidInput(f"{path} is a concept database, not a benchmark; pass it as the database")
        if (path / CLASSES_FILE).is_file():
            return "dreambooth", None
        if any(sub.is_dir() and any(p.suffix.lower() in IMAGE_SUFFIXES for p in sub.iterdir()) for sub in path.iterdir()):
            return "concept-folders", None
        raise _unknown(path)
    if not path.is_file():
        raise InvalidInput(f"{path}: no such file or folder")
    if path.suffix.lower() == ".jsonl":
        return "manifest", None
    if path.suffix.lower() != ".json":
        raise _unknown(path)
    data = load_json(path)
    if isinstance(data, dict) and "concept_dict" in data:
        raise InvalidInput(f"{path} is a concept database, not a benchmark; pass its folder as the database")
    if isinstance(data, list) and data and isinstance(data[0], dict) and {"concept", "correct_answer"} <= data[0].keys():
        return "recognition", data
    if isinstance(data, dict) and data:
        entries = next(iter(data.values()))
        first = next(iter(entries.values()), None) if isinstance(entries, dict) else None
        if isinstance(first, dict) and "question" in first:
            return "qa", data
    raise _unknown(path)


def _unknown(path: Path) -> InvalidFormat:
    listed = "; ".join(f"{name}: {shape}" for name, shape in FORMATS.items())
    return InvalidFormat(f"{path}: not a layout rap can read. Supported: {listed}")


def _images_root(path: Path, images_root: PathArg | None) -> Path:
    if images_root is None:
        return path.parent
    root = Path(images_root).expanduser()
    if not root.is_dir():
        raise InvalidInput(f"images root {root}: no such folder")
    return root

