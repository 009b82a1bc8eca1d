"""What every benchmark reader produces and every metric consumes.

A reader turns a data set on disk (the Yo'LLaVA / RAP QA files, the official
recognition list, MyVLM or DreamBooth folders, a JSONL manifest) into an
:class:`EvalSet`: the concepts to remember, and the items to ask about.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from rap.concepts import DEFAULT_CATEGORY

Task = Literal["caption", "qa", "recognition", "retrieval"]


@dataclass(frozen=True)
class ConceptSource:
    """A concept to remember before evaluating: its name, reference images and text."""

    name: str
    images: tuple[Path, ...]
    info: str = ""
    category: str = DEFAULT_CATEGORY


@dataclass(frozen=True)
class EvalItem:
    """One thing to evaluate.

    ``id`` is stable across runs (a resumed run skips finished ids). ``concepts``
    are the concepts truly in ``image``. For QA, ``options`` maps letters to
    choices and ``answer`` is the correct letter; for recognition, ``target`` is
    the concept asked about and ``answer`` is True or False; for captions,
    ``answer`` may hold reference captions (tuple of str).
    """

    id: str
    task: Task
    image: Path | None = None
    concepts: tuple[str, ...] = ()
    question: str | None = None
    options: dict[str, str] | None = None
    answer: str | bool | tuple[str, ...] | None = None
    target: str | None = None


@dataclass
class EvalSet:
    """Concepts to remember and items to evaluate, read from one data set."""

    concepts: dict[str, ConceptSource] = field(default_factory=dict)
    items: list[EvalItem] = field(default_factory=list)

    def missing_files(self) -> list[Path]:
        """Every referenced image that does not exist: reported before a run starts."""
        paths = [p for c in self.concepts.values() for p in c.images] + [i.image for i in self.items if i.image]
        return sorted({p for p in paths if not p.is_file()})
