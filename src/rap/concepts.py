"""A personal concept: what the user wants the assistant to know.

A concept has a unique name (the handle a user types, ``bo``; the model sees
``<bo>``), reference images, a short description (the paper's "info"), a
category (``dog``, ``person``: it also tells the detector what to look for) and
free-form attributes (age, favourite food). Names are compared case-insensitively
because the retriever finds them in free text case-insensitively.
"""

from __future__ import annotations

import re
import unicodedata
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from rap.errors import InvalidInput, InvalidName

MAX_NAME_LENGTH = 64
MAX_INFO_LENGTH = 2000
MAX_CATEGORY_LENGTH = 64
MAX_ATTRIBUTES = 64
DEFAULT_CATEGORY = "object"
"""The category of a concept given none."""

# A name is one "word" a user can type and the retriever can find in text: letters,
# digits, and inner "_", "-" or "." (``bo``, ``my_dog``, ``Mr.Bean``, ``toy-2``).
_NAME = re.compile(r"[^\W_](?:[\w.\-]*[^\W_])?|[^\W_]")
PERSON_CATEGORIES = frozenset(
    {"person", "people", "human", "man", "woman", "boy", "girl", "child", "kid", "baby", "face"}
)


def name_key(name: str) -> str:
    """The form under which names are unique and looked up: NFC, case-folded."""
    return unicodedata.normalize("NFC", name).casefold()


def validate_name(name: str) -> str:
    """Return ``name`` cleaned of surrounding space and ``<>``, or say what is wrong."""
    if not isinstance(name, str):
        raise InvalidName("a concept name must be text")
    cleaned = unicodedata.normalize("NFC", name.strip())
    if cleaned.startswith("<") and cleaned.endswith(">"):
        cleaned = cleaned[1:-1].strip()
    if not cleaned:
        raise InvalidName("a concept name cannot be empty")
    if not cleaned.isprintable():
        raise InvalidName(f"concept name {cleaned!r} has unprintable characters")
    if len(cleaned) > MAX_NAME_LENGTH:
        raise InvalidName(f"concept name is {len(cleaned)} characters; the limit is {MAX_NAME_LENGTH}")
    if not _NAME.fullmatch(cleaned):
        raise InvalidName(
            f"concept name {cleaned!r} must be one word: letters and digits, with '_', '-' "
            "or '.' only inside it (e.g. bo, my_dog, toy-2)"
        )
    return cleaned


def validate_text(value: str, what: str, limit: int) -> str:
    """Single-line-safe free text: stripped, printable except newlines, within ``limit``."""
    if not isinstance(value, str):
        raise InvalidInput(f"{what} must be text")
    value = value.strip()
    if len(value) > limit:
        raise InvalidInput(f"{what} is {len(value)} characters; the limit is {limit}")
    if any(not (c.isprintable() or c in "\n\t") for c in value):
        raise InvalidInput(f"{what} has unprintable characters")
    return value


def validate_category(category: str) -> str:
    category = validate_text(category, "category", MAX_CATEGORY_LENGTH)
    if not category or "\n" in category:
        raise InvalidInput("category must be a short non-empty phrase such as 'dog' or 'plush toy'")
    return category.lower()


def validate_attributes(attributes: dict[str, str]) -> dict[str, str]:
    if len(attributes) > MAX_ATTRIBUTES:
        raise InvalidInput(f"{len(attributes)} attributes; the limit is {MAX_ATTRIBUTES}")
    clean: dict[str, str] = {}
    for key, value in attributes.items():
        key = validate_text(str(key), "attribute name", MAX_CATEGORY_LENGTH)
        if not key or "\n" in key:
            raise InvalidInput("attribute names must be short non-empty words")
        clean[key] = validate_text(str(value), f"attribute {key!r}", MAX_INFO_LENGTH)
    return clean


def parse_attribute(pair: str) -> tuple[str, str]:
    """Parse a command-line ``KEY=VALUE``."""
    key, sep, value = pair.partition("=")
    if not sep or not key.strip():
        raise InvalidInput(f"attribute {pair!r} must look like KEY=VALUE")
    return key.strip(), value.strip()


class ConceptImage(BaseModel):
    """One reference image, stored inside the concept store."""

    model_config = ConfigDict(frozen=True)

    id: int
    #: path relative to the store folder
    file: str
    sha256: str
    width: int
    height: int
    #: the face box found in it, for concepts of a person category
    face_box: tuple[int, int, int, int] | None = None


class Concept(BaseModel):
    """A remembered concept as the store returns it."""

    model_config = ConfigDict(frozen=True)

    name: str
    info: str = ""
    category: str
    attributes: dict[str, str] = Field(default_factory=dict)
    images: list[ConceptImage] = Field(default_factory=list)
    created_at: datetime
    updated_at: datetime

    @property
    def token(self) -> str:
        """How the model sees the name: ``<bo>``."""
        return f"<{self.name}>"

    @property
    def is_person(self) -> bool:
        return self.category in PERSON_CATEGORIES

    def to_dict(self) -> dict[str, Any]:
        """The concept as JSON: what ``rap concept show --json`` prints and the API returns.

        Images are named by id and content hash, not by their file inside the
        store, which is the store's own business (and on PostgreSQL not a file).
        """
        return self.model_dump(mode="json", exclude={"images": {"__all__": {"file"}}}) | {"token": self.token}

    def describe(self) -> str:
        """The concept's text for a prompt: its info, then its attributes."""
        parts = [self.info] if self.info else []
        parts += [f"{key}: {value}" for key, value in self.attributes.items()]
        return ". ".join(p.rstrip(".") for p in parts) + ("." if parts else "")
