"""Import optional heavy dependencies where they are used, and load checkpoints with them, with helpful errors."""

from __future__ import annotations

import importlib
import os
from collections.abc import Iterator
from contextlib import contextmanager
from types import ModuleType

from rap.errors import ConfigError, MissingDependency


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


@contextmanager
def loading_checkpoint(what: str, name_or_path: str, extra: str = "paper") -> Iterator[None]:
    """Turn what ``from_pretrained`` raises inside the block into one line that says what to do.

    A library the model's code imports at load time names the extra that
    provides it; a checkpoint that cannot be found or read asks for a cached or
    downloadable hub name or a folder written by ``save_pretrained``. rap's own
    errors raised inside (a model of the wrong family, say) pass through.

    Offline (``HF_HUB_OFFLINE``), transformers' hub kernels are turned off
    unless ``USE_HUB_KERNELS`` says otherwise: on a GPU transformers otherwise
    fetches a kernel for LLaVA's activations from the hub at load time, which
    fails offline and stops the model loading (seen on an H200).
    """
    if os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in {"1", "ON", "YES", "TRUE"}:
        os.environ.setdefault("USE_HUB_KERNELS", "NO")
    try:
        yield
    except ImportError as exc:
        raise missing_extra(exc, extra) from None
    except (OSError, ValueError) as exc:
        raise ConfigError(
            f"cannot load {what} {name_or_path!r} ({exc}); give a hub name that is cached or "
            "downloadable, or a folder written by save_pretrained"
        ) from None

