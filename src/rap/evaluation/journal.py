"""Per-item results written as they finish, so an interrupted run resumes where it stopped.

Each finished item is one JSON line in ``items.jsonl``, keyed by
``(repeat, variant, item id)``. A resumed run reads the file, skips the keys it
holds, and appends the rest; a line cut short by a crash is ignored.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


class Journal:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.rows: dict[tuple[int, str, str], dict[str, Any]] = {}
        if path.exists():
            data = path.read_bytes()
            complete = data[: data.rfind(b"\n") + 1]
            if len(complete) < len(data):  # a line cut short by a killed run: drop it
                with path.open("r+b") as handle:
                    handle.truncate(len(complete))
            for line in complete.decode("utf-8").splitlines():
                row = json.loads(line)
                self.rows[(row["repeat"], row["variant"], row["id"])] = row
        self._handle = path.open("a", encoding="utf-8")

    def done(self, repeat: int, variant: str, item_id: str) -> bool:
        return (repeat, variant, item_id) in self.rows

    def record(self, repeat: int, variant: str, item_id: str, result: dict[str, Any]) -> None:
        row = {"repeat": repeat, "variant": variant, "id": item_id} | result
        self.rows[(repeat, variant, item_id)] = row
        self._handle.write(json.dumps(row, ensure_ascii=False) + "\n")
        self._handle.flush()

    def select(self, repeat: int | None = None, variant: str | None = None) -> list[dict[str, Any]]:
        return [
            row
            for (r, v, _), row in self.rows.items()
            if (repeat is None or r == repeat) and (variant is None or v == variant)
        ]

    def close(self) -> None:
        self._handle.close()
