"""``rap data stats``: what a built dataset holds, read from its files, not its manifest.

Reading ``data.jsonl`` itself checks the build as it is on disk: a crop deleted
since, or a file edited by hand, shows up here. Each line is read through
:class:`BuiltRecord`: rap's own ``meta`` forbids unknown fields; the record
around it ignores them, since general records pass through from LLaVA-Instruct
unchanged.
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, ValidationError

from rap.errors import InvalidFormat, InvalidInput
from rap.formats import OTHERS, OWN, NonBlank, problem


class BuildMeta(BaseModel):
    """What ``rap data build`` records about a personalized sample."""

    model_config = OWN

    task: NonBlank
    source: NonBlank
    noise: int = Field(ge=0)


class BuiltRecord(BaseModel):
    """The fields of a built record that the statistics read."""

    model_config = OTHERS

    meta: BuildMeta | None = None
    #: crop path -> what the prompt says about that concept (RAP-260K's field)
    extra: dict[str, Any] | None = None


def dataset_stats(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Counts per task and source, concepts per sample, the share with noise, missing crops.

    Records without rap's ``meta`` (general instruction data passed through)
    count as task and source ``general``.
    """
    folder = Path(path)
    data = folder / "data.jsonl"
    if not data.is_file():
        raise InvalidInput(f"{folder}: no data.jsonl here; is it a folder made by `rap data build`?")
    tasks: Counter[str] = Counter()
    sources: Counter[str] = Counter()
    concepts: Counter[int] = Counter()
    noisy = personalized = 0
    crops: set[str] = set()
    with data.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                record = BuiltRecord.model_validate_json(line)
            except ValidationError as exc:
                raise InvalidFormat(f"{data} line {number}: {problem(exc, BuiltRecord)}") from None
            if record.meta is None:
                tasks["general"] += 1
                sources["general"] += 1
            else:
                tasks[record.meta.task] += 1
                sources[record.meta.source] += 1
                personalized += 1
                noisy += record.meta.noise > 0
                concepts[len(record.extra or {})] += 1
            crops.update(record.extra or {})
    missing = sorted(c for c in crops if not (folder / c).is_file())
    return {
        "samples": sum(tasks.values()),
        "tasks": dict(sorted(tasks.items())),
        "sources": dict(sorted(sources.items())),
        "concepts_per_sample": {str(k): v for k, v in sorted(concepts.items())},
        "noise_share": round(noisy / personalized, 4) if personalized else 0.0,
        "crops": len(crops),
        "missing_crops": len(missing),
        "missing_examples": missing[:10],
    }
