"""What every store does before it writes: validate, decode and embed, touching nothing.

A store checks a whole request here first (names, texts, images, the images
an edit removes) and computes every vector, so that its write transaction
only inserts: bad input fails before any change, whatever the backend.

Memory stays flat in the number of images: every file is checked by its header
first (so a bad one fails before any work), then decoded reduced, embedded and
released ``batch_images`` at a time. Only vectors are held until the write; a
file's bytes are read again when it is written, and must hash as they did.
"""

from __future__ import annotations

import hashlib
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
from rap.errors import ConceptExists, InvalidImage, InvalidInput
from rap.images import ImageFile, LoadedImage, check_image, reduce, suffix_for
from rap.settings import default
from rap.store.inputs import ImageSource, NewConcept, Progress


@dataclass(frozen=True)
class ImageBytes:
    """An image file's bytes as a store writes them, named by their SHA-256."""

    data: bytes
    sha256: str
    suffix: str


@dataclass(frozen=True)
class Keyed:
    """One reference image embedded but not written: its vectors and what names its bytes."""

    source: ImageFile | LoadedImage
    sha256: str
    format: str
    #: (width, height) of the full image, the right way up
    size: tuple[int, int]
    vectors: list[SpaceVector]

    def verified(self) -> ImageBytes:
        """The bytes to write, refused if the file changed since it was embedded."""
        if isinstance(self.source, LoadedImage):
            data = self.source.data
        else:
            data = self.source.read()
            if hashlib.sha256(data).hexdigest() != self.sha256:
                raise InvalidImage(f"{self.source.path}: the file changed while it was being added; add it again")
        return ImageBytes(data, self.sha256, suffix_for(self.format))


@dataclass
class Prepared:
    """A concept validated and its image files checked; :func:`embed` keys them; nothing written yet."""

    name: str
    info: str
    category: str
    attributes: dict[str, str]
    images: list[ImageFile | LoadedImage]
    keyed: list[Keyed] = field(default_factory=list)


def check(images: Sequence[ImageSource]) -> list[ImageFile | LoadedImage]:
    """Each file checked by its header (cheap); decoding waits for :func:`embed`'s batches."""
    return [image if isinstance(image, (ImageFile, LoadedImage)) else check_image(image) for image in images]


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
        check(new.images),
    )


def embed(
    embedder: Embedder,
    prepared: Sequence[Prepared],
    progress: Progress | None = None,
    *,
    image_side: int = default("image_side"),
    batch_images: int = default("batch_images"),
) -> None:
    """Key each prepared concept's images: decoded reduced to ``image_side``, ``batch_images`` at a time."""
    flat = [(p, image) for p in prepared for image in p.images]
    for start in range(0, len(flat), batch_images):
        chunk = flat[start : start + batch_images]
        loaded = [image.load(image_side) if isinstance(image, ImageFile) else image for _, image in chunk]
        keyed = embedder.reference_vectors(
            [reduce(image.image, image_side) for image in loaded], [p.category in PERSON_CATEGORIES for p, _ in chunk]
        )
        for (p, source), image, vectors in zip(chunk, loaded, keyed):
            assert image.size is not None
            p.keyed.append(Keyed(source, image.sha256, image.format, image.size, vectors))
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
    image_side: int = default("image_side"),
    batch_images: int = default("batch_images"),
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
    added = check(add_images)
    if len(known - drop) + len(added) == 0:
        raise InvalidInput(f"{current.name} would have no image left; add one before removing the last")
    changed = Prepared(new_name, new_info, new_category, attributes, added)
    embed(embedder, [changed], image_side=image_side, batch_images=batch_images)
    return EditPlan(
        changed,
        drop,
        [image for image in current.images if image.id not in drop],
        (new_category in PERSON_CATEGORIES) != current.is_person,
    )
