"""``rap data stats``: what a built dataset holds, read from its files, not its manifest.

Reading ``data.jsonl`` itself checks the build as it is on disk: a crop deleted
since, or a file edited by hand, shows up here.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path
from typing import Any

from rap.errors import InvalidFormat, InvalidInput


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
            try:
                record = json.loads(line)
                meta = record.get("meta") or {"task": "general", "source": "general", "noise": 0}
                extra = record.get("extra") or {}
            except (json.JSONDecodeError, AttributeError):
                raise InvalidFormat(f"{data}:{number}: not a JSON record") from None
            tasks[meta["task"]] += 1
            sources[meta["source"]] += 1
            if "meta" in record:
                personalized += 1
                noisy += meta.get("noise", 0) > 0
                concepts[len(extra)] += 1
            crops.update(extra)
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
