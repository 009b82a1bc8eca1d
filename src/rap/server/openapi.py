"""The API's OpenAPI document, as committed under ``docs/openapi.json``.

Regenerate it after changing a route or a limit: ``python -m rap.server.openapi > docs/openapi.json``
(a test fails while the committed copy is stale).
"""

from __future__ import annotations

import json
import sys
import tempfile
from typing import Any

from rap.settings import Settings


def document() -> dict[str, Any]:
    """The document of an app with the built-in settings."""
    from rap.server import create_app

    with tempfile.TemporaryDirectory() as home:
        return create_app(Settings(home=home), auth=False).openapi()


def main() -> None:
    sys.stdout.write(json.dumps(document(), indent=2, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
