"""Import and export of concept databases.

Two layouts come in:

* the official RAP format, a folder holding ``database.json``::

      {"concept_dict": {"<bo>": {"name": "bo", "image": "example_database/bo.png",
                                 "info": "...", "category": "dog"}},
       "path_to_concept": {"example_database/bo.png": "<bo>"}}

  Image paths are relative to the folder's parent in the official repository;
  paths relative to the folder itself work too, and so does a copy of the
  folder under another name. Paths that leave the folder are refused unless
  allowed. Every path in ``path_to_concept`` adds a reference image to its
  concept. The file's shape is checked by pydantic models that forbid unknown
  fields, and any fault is one line naming the file and the field.
* a plain folder with one subfolder per concept holding its images, an optional
  ``info.txt`` (the description) and an optional ``category.txt``.

Export writes the RAP format. Imports are all-or-nothing: every file is
checked before anything is added, and the concepts are added in one
transaction.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from rap.concepts import DEFAULT_CATEGORY, validate_name
from rap.errors import InvalidFormat, InvalidInput, StoreError, shell_word
from rap.formats import validated
from rap.images import IMAGE_SUFFIXES
from rap.store.base import ConceptStore
from rap.store.inputs import NewConcept

DATABASE_JSON = "database.json"


def read_concepts(
    path: str | os.PathLike[str], default_category: str = DEFAULT_CATEGORY, *, allow_outside: bool = False
) -> list[NewConcept]:
    """Read a RAP ``database.json`` folder (or the file itself) or a plain folder.

    A ``database.json`` may only name images inside its own folder: an absolute
    or ``../`` path is refused unless ``allow_outside`` (``rap import
    --allow-outside``), so importing a downloaded folder cannot copy other files
    of the machine into the store (a service never allows it).
    """
    path = Path(path).expanduser()
    if path.is_file() and path.name == DATABASE_JSON:
        return read_rap_database(path.parent, allow_outside=allow_outside)
    if not path.is_dir():
        raise InvalidInput(f"{path}: no such folder")
    if (path / DATABASE_JSON).exists():
        return read_rap_database(path, allow_outside=allow_outside)
    return read_plain_folder(path, default_category)


class _Entry(BaseModel):
    """One concept of ``concept_dict``."""

    model_config = ConfigDict(extra="forbid", strict=True)

    name: str | None = None
    image: list[str] = Field(min_length=1)
    info: str = ""
    category: str = DEFAULT_CATEGORY
    attributes: dict[str, str | int | float | bool] = Field(default_factory=dict)

    @field_validator("image", mode="before")
    @classmethod
    def _one_or_many(cls, value: object) -> object:
        if isinstance(value, str):
            return [value]
        if not isinstance(value, list):
            raise ValueError("must be an image path or a list of them")
        return value


class _Database(BaseModel):
    """The whole ``database.json``."""

    model_config = ConfigDict(extra="forbid", strict=True)

    concept_dict: dict[str, _Entry]
    path_to_concept: dict[str, str] = Field(default_factory=dict)


def _parse(source: Path) -> _Database:
    """The file checked against :class:`_Database`, or one line naming the file and the field at fault."""
    try:
        text = source.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidFormat(f"{source}: cannot read ({exc})") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidFormat(f"{source}: not valid JSON ({exc.msg}, line {exc.lineno})") from None
    return validated(_Database, data, str(source))


def _resolve_image(source: Path, listed: str, allow_outside: bool) -> Path:
    """The file an image path of ``source`` names.

    The official files write paths relative to the folder's parent
    (``example_database/bo.png``), so a copy under another name still holds
    them by their last components: those are tried inside the folder, longest
    first. Paths that lead out of the folder come last, and only when allowed.
    """
    folder = source.parent
    root = folder.resolve()
    path = Path(listed)
    inside = [] if path.is_absolute() or ".." in path.parts else [folder.joinpath(*path.parts[i:]) for i in range(len(path.parts))]
    outside = [path] if path.is_absolute() else [folder.parent / path, folder / path]
    for candidate in inside:
        resolved = candidate.resolve()
        if resolved.is_file() and resolved.is_relative_to(root):
            return resolved
    for candidate in [*inside, *outside]:
        resolved = candidate.resolve()
        if resolved.is_file():
            if allow_outside:
                return resolved
            raise InvalidFormat(
                f"{source}: image {listed!r} lies outside {folder}; copy it into the folder, "
                "or import with --allow-outside if you trust this file"
            )
    raise InvalidFormat(f"{source}: image {listed!r} not found in {folder}")


def read_rap_database(folder: Path, *, allow_outside: bool = False) -> list[NewConcept]:
    source = folder / DATABASE_JSON
    data = _parse(source)
    images = {key: list(entry.image) for key, entry in data.concept_dict.items()}
    for image, key in data.path_to_concept.items():
        if key not in images:
            raise InvalidFormat(f"{source}: path_to_concept.{image}: names {key!r}, which concept_dict lacks")
        if image not in images[key]:
            images[key].append(image)
    return [
        NewConcept(
            name=entry.name or key.strip("<>"),
            images=[_resolve_image(source, p, allow_outside) for p in images[key]],
            info=entry.info,
            category=entry.category,
            attributes={k: str(v) for k, v in entry.attributes.items()},
        )
        for key, entry in data.concept_dict.items()
    ]


def read_plain_folder(folder: Path, default_category: str) -> list[NewConcept]:
    concepts = []
    for sub in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
        images = sorted(p for p in sub.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not images:
            raise InvalidFormat(f"{sub}: no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
        info = _read_text(sub / "info.txt")
        category = _read_text(sub / "category.txt") or default_category
        concepts.append(NewConcept(name=sub.name, images=images, info=info, category=category))
    if not concepts:
        raise InvalidFormat(
            f"{folder}: neither a {DATABASE_JSON} nor any subfolder of images (one subfolder per concept)"
        )
    return concepts


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8").strip() if path.exists() else ""
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidFormat(f"{path}: cannot read ({exc})") from None


def import_concepts(
    store: ConceptStore,
    concepts: Sequence[NewConcept],
    *,
    skip_existing: bool = False,
    progress: Any = None,
) -> tuple[list[str], list[str]]:
    """Add ``concepts``; return (added names, skipped names). All or nothing."""
    for concept in concepts:
        validate_name(concept.name)
    skipped = [c.name for c in concepts if c.name in store] if skip_existing else []
    todo = [c for c in concepts if c.name not in skipped]
    added = store.add_many(todo, progress)
    return [c.name for c in added], skipped


def export_rap(store: ConceptStore, target: str | os.PathLike[str]) -> Path:
    """Write the store as a RAP ``database.json`` folder; refuses to overwrite a non-empty folder.

    The folder is written under a temporary name beside the target and renamed
    when complete, so a failure (a stored image gone, a read-only or full disk)
    leaves nothing half-written and is reported in one line.
    """
    target = Path(target).expanduser()
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise InvalidInput(f"{target}: exists and is not an empty folder; choose a new one")
    staging: Path | None = None
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
        _write_rap(store, staging, target.name)
        if target.exists():
            target.rmdir()
        os.replace(staging, target)
    except BaseException as exc:
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)
        if isinstance(exc, OSError):
            raise InvalidInput(f"cannot write {target}: {exc.strerror or exc}; choose a folder you can write to") from None
        raise
    return target


def _write_rap(store: ConceptStore, folder: Path, name: str) -> None:
    """The store's images and ``database.json`` in ``folder``, paths written as ``name/<file>``."""
    concept_dict: dict[str, Any] = {}
    path_to_concept: dict[str, str] = {}
    for concept in store.list():
        paths = []
        for n, image in enumerate(concept.images):
            suffix = Path(image.file).suffix
            file = f"{concept.name}{suffix}" if n == 0 else f"{concept.name}_{n + 1}{suffix}"
            stored = store.image_path(image.file)
            if not stored.is_file():
                db = shell_word(str(store.image_path("")))  # image files are named relative to the store folder
                drop = f"concept edit {concept.name} --remove-image {image.id}" if len(concept.images) > 1 else f"concept remove {concept.name}"
                raise StoreError(f"{stored}: an image of {concept.name!r} is missing from the store; restore the file, or drop it with 'rap --db {db} {drop}'")
            shutil.copyfile(stored, folder / file)
            paths.append(f"{name}/{file}")
        entry: dict[str, Any] = {"name": concept.name, "image": paths[0], "info": concept.info, "category": concept.category}
        if concept.attributes:
            entry["attributes"] = concept.attributes
        concept_dict[concept.token] = entry
        path_to_concept.update({p: concept.token for p in paths})
    (folder / DATABASE_JSON).write_text(
        json.dumps({"concept_dict": concept_dict, "path_to_concept": path_to_concept}, indent=4, ensure_ascii=False),
        encoding="utf-8",
    )
