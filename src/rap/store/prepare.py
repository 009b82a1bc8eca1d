"""What every store does before it writes: validate, decode and embed, touching nothing.

A store checks a whole request here first (names, texts, images, the images
an edit removes) and computes every vector, so that its write transaction
only inserts: bad input fails before any change, whatever the backend.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from rap.concepts import (
    MAX_INFO_LENGTH,
    PERSON_CATEGORIES,
    Concept,
    ConceptImage,
    name_key,
    validate_attributes,
    validate_category,
    validate_name,
    validate_text,
)
from rap.embedding import Embedder, SpaceVector
from rap.errors import ConceptExists, InvalidInput
from rap.images import LoadedImage, load_image
from rap.store.base import ImageSource, NewConcept, Progress

EMBED_BATCH = 32


@dataclass
class Prepared:
    """A concept validated, its images decoded and embedded, nothing written yet."""

    name: str
    info: str
    category: str
    attributes: dict[str, str]
    images: list[LoadedImage]
    vectors: list[list[SpaceVector]] = field(default_factory=list)


def decode(images: Sequence[ImageSource]) -> list[LoadedImage]:
    return [image if isinstance(image, LoadedImage) else load_image(image) for image in images]


def prepare(new: NewConcept, taken: set[str]) -> Prepared:
    """Validate a new concept against the name keys already ``taken`` (which it joins)."""
    name = validate_name(new.name)
    key = name_key(name)
    if key in taken:
        raise ConceptExists(f"a concept named {name!r} already exists; edit it or choose another name")
    taken.add(key)
    if not new.images:
        raise InvalidInput(f"concept {name!r} needs at least one reference image")
    return Prepared(
        name,
        validate_text(new.info, "info", MAX_INFO_LENGTH),
        validate_category(new.category),
        validate_attributes(dict(new.attributes)),
        decode(new.images),
    )


def embed(embedder: Embedder, prepared: Sequence[Prepared], progress: Progress | None = None) -> None:
    """Fill in each prepared concept's vectors, in batches across concepts."""
    flat = [(p, image) for p in prepared for image in p.images]
    for start in range(0, len(flat), EMBED_BATCH):
        chunk = flat[start : start + EMBED_BATCH]
        keyed = embedder.reference_vectors(
            [image.image for _, image in chunk], [p.category in PERSON_CATEGORIES for p, _ in chunk]
        )
        for (p, _), vectors in zip(chunk, keyed):
            p.vectors.append(vectors)
        if progress:
            progress(len(chunk))


@dataclass
class EditPlan:
    """A validated edit: the concept's new fields, its images to drop and keep, the new ones embedded."""

    changed: Prepared
    drop: set[int]
    kept: list[ConceptImage]
    refresh_faces: bool


def plan_edit(
    embedder: Embedder,
    current: Concept,
    exists: Callable[[str], bool],
    *,
    rename: str | None,
    info: str | None,
    category: str | None,
    set_attributes: Mapping[str, str] | None,
    unset_attributes: Iterable[str],
    add_images: Sequence[ImageSource],
    remove_images: Iterable[int],
) -> EditPlan:
    """Check an edit of ``current`` in full and embed its new images; ``exists`` asks about names."""
    new_name = validate_name(rename) if rename is not None else current.name
    if name_key(new_name) != name_key(current.name) and exists(new_name):
        raise ConceptExists(f"a concept named {new_name!r} already exists")
    new_info = validate_text(info, "info", MAX_INFO_LENGTH) if info is not None else current.info
    new_category = validate_category(category) if category is not None else current.category
    attributes = dict(current.attributes)
    for key in unset_attributes:
        if key not in attributes:
            raise InvalidInput(f"{current.name} has no attribute {key!r}")
        del attributes[key]
    attributes = validate_attributes({**attributes, **(set_attributes or {})})
    drop = set(remove_images)
    known = {image.id for image in current.images}
    if drop - known:
        raise InvalidInput(f"{current.name} has no image {sorted(drop - known)[0]}; its images are {sorted(known)}")
    added = decode(add_images)
    if len(known - drop) + len(added) == 0:
        raise InvalidInput(f"{current.name} would have no image left; add one before removing the last")
    changed = Prepared(new_name, new_info, new_category, attributes, added)
    embed(embedder, [changed])
    return EditPlan(
        changed,
        drop,
        [image for image in current.images if image.id not in drop],
        (new_category in PERSON_CATEGORIES) != current.is_person,
    )
