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



def missing_extra(exc: ImportError, extra: str) -> MissingDependency:
    """A one-line error for a library a model's code needs at load time (scipy for OWLv2, say)."""
    detail = " ".join(str(exc).split())
    return MissingDependency(f"{detail} Run: pip install 'rap-mllm[{extra}]'")
