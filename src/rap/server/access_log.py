"""The access log without query strings' values: a client that puts an API key in ``?api_key=``
(refused with 401) must not leave it in the log for whoever reads the log."""

from __future__ import annotations

import logging
import re

_VALUE = re.compile(r"=[^&#\s]*")


def redact_query(path: str) -> str:
    """``/v1/concepts?api_key=rap_x&limit=2`` -> ``/v1/concepts?api_key=…&limit=…``."""
    base, mark, query = path.partition("?")
    return base + mark + _VALUE.sub("=…", query) if mark else path


class RedactQueries(logging.Filter):
    """Rewrites uvicorn's access records, whose third argument is the path with its query."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple) and len(record.args) >= 3 and isinstance(record.args[2], str):
            record.args = (*record.args[:2], redact_query(record.args[2]), *record.args[3:])
        return True


REDACT_QUERIES = RedactQueries()
"""The one filter instance: adding it to a logger twice is adding it once."""
