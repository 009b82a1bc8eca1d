"""Import and export of concept databases.

Two layouts come in:

* the official RAP format, a folder holding ``database.json``::

      {"concept_dict": {"<bo>": {"name": "bo", "image": "example_database/bo.png",
                                 "info": "...", "category": "dog"}},
       "path_to_concept": {"example_database/bo.png": "<bo>"}}

  Image paths are relative to the folder's parent in the official repository;
  paths relative to the folder itself work too. Every path in
  ``path_to_concept`` adds a reference image to its concept.
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

from rap.concepts import validate_name
from rap.errors import InvalidFormat, InvalidInput
from rap.images import IMAGE_SUFFIXES
from rap.store.base import ConceptStore, NewConcept

DATABASE_JSON = "database.json"


def read_concepts(path: str | os.PathLike[str], default_category: str = "object") -> list[NewConcept]:
    """Read a RAP ``database.json`` folder (or the file itself) or a plain folder."""
    path = Path(path).expanduser()
    if path.is_file() and path.name == DATABASE_JSON:
        return read_rap_database(path.parent)
    if not path.is_dir():
        raise InvalidInput(f"{path}: no such folder")
    if (path / DATABASE_JSON).exists():
        return read_rap_database(path)
    return read_plain_folder(path, default_category)


def _resolve_image(folder: Path, relative: str) -> Path:
    for base in (folder.parent, folder):
        candidate = (base / relative).resolve()
        if candidate.is_file():
            return candidate
    raise InvalidFormat(f"{folder / DATABASE_JSON}: image {relative!r} not found beside it or its parent folder")


def read_rap_database(folder: Path) -> list[NewConcept]:
    source = folder / DATABASE_JSON
    try:
        data = json.loads(source.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidFormat(f"{source}: cannot read ({exc})") from None
    except json.JSONDecodeError as exc:
        raise InvalidFormat(f"{source}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
    concept_dict = data.get("concept_dict") if isinstance(data, dict) else None
    if not isinstance(concept_dict, dict):
        raise InvalidFormat(f"{source}: expected an object with a 'concept_dict' object")
    extra_paths = data.get("path_to_concept") or {}
    if not isinstance(extra_paths, dict):
        raise InvalidFormat(f"{source}: 'path_to_concept' must be an object of path -> <name>")
    images: dict[str, list[str]] = {}
    for key, entry in concept_dict.items():
        if not isinstance(entry, dict):
            raise InvalidFormat(f"{source}: concept {key!r} must be an object")
        listed = entry.get("image")
        listed = [listed] if isinstance(listed, str) else listed
        if not isinstance(listed, list) or not all(isinstance(p, str) for p in listed):
            raise InvalidFormat(f"{source}: concept {key!r} needs an 'image' path (or a list of them)")
        images[key] = list(listed)
    for image, key in extra_paths.items():
        if key not in images:
            raise InvalidFormat(f"{source}: path_to_concept names {key!r}, which concept_dict lacks")
        if image not in images[key]:
            images[key].append(image)
    concepts = []
    for key, entry in concept_dict.items():
        name = entry.get("name") or key.strip("<>")
        if not isinstance(name, str):
            raise InvalidFormat(f"{source}: concept {key!r} has a non-text name")
        info, category = entry.get("info", ""), entry.get("category", "object")
        if not isinstance(info, str) or not isinstance(category, str):
            raise InvalidFormat(f"{source}: concept {key!r}: 'info' and 'category' must be text")
        attributes = entry.get("attributes") or {}
        if not isinstance(attributes, dict):
            raise InvalidFormat(f"{source}: concept {key!r}: 'attributes' must be an object")
        concepts.append(
            NewConcept(
                name=name,
                images=[_resolve_image(folder, p) for p in images[key]],
                info=info,
                category=category,
                attributes={str(k): str(v) for k, v in attributes.items()},
            )
        )
    return concepts


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
    """Write the store as a RAP ``database.json`` folder; refuses to overwrite a non-empty folder."""
    target = Path(target).expanduser()
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise InvalidInput(f"{target}: exists and is not an empty folder; choose a new one")
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        concept_dict: dict[str, Any] = {}
        path_to_concept: dict[str, str] = {}
        for concept in store.list():
            paths = []
            for n, image in enumerate(concept.images):
                suffix = Path(image.file).suffix
                file = f"{concept.name}{suffix}" if n == 0 else f"{concept.name}_{n + 1}{suffix}"
                shutil.copyfile(store.image_path(image.file), staging / file)
                paths.append(f"{target.name}/{file}")
            entry: dict[str, Any] = {"name": concept.name, "image": paths[0], "info": concept.info, "category": concept.category}
            if concept.attributes:
                entry["attributes"] = concept.attributes
            concept_dict[concept.token] = entry
            path_to_concept.update({p: concept.token for p in paths})
        (staging / DATABASE_JSON).write_text(
            json.dumps({"concept_dict": concept_dict, "path_to_concept": path_to_concept}, indent=4, ensure_ascii=False),
            encoding="utf-8",
        )
        if target.exists():
            target.rmdir()
        os.replace(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target
