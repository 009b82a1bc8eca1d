"""Import optional heavy dependencies where they are used, with a helpful error."""

from __future__ import annotations

import importlib
from types import ModuleType

from rap.errors import MissingDependency


def require(module: str, extra: str) -> ModuleType:
    """Import ``module`` or say which ``pip install 'rap-mllm[extra]'`` provides it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingDependency(
            f"{module} is not installed ({exc}); run: pip install 'rap-mllm[{extra}]'"
        ) from None
