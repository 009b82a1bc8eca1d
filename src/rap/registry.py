"""One registry mechanism for every kind of pluggable backend.

Encoders, face analyzers, region detectors (and later generators and stores) are
all named by a spec string ``scheme`` or ``scheme:argument``, e.g.
``clip:openai/clip-vit-large-patch14-336`` or ``offline:efficientnet-lite0``.
A registry maps each scheme to a factory that receives the argument.

Built-in backends register through the same call an external package uses: a
module that calls ``REGISTRY.register(...)`` at import. The registry knows which
built-in module provides each scheme and imports only that one, when the scheme
is first resolved, so importing :mod:`rap` never imports torch. Third-party
packages add backends through the ``rap.plugins`` entry-point group.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Generic, TypeVar

from rap.errors import InvalidInput, UnknownBackend

T = TypeVar("T")


@dataclass(frozen=True)
class Entry(Generic[T]):
    scheme: str
    factory: Callable[..., T]
    help: str
    default_argument: str


class Registry(Generic[T]):
    """Resolves ``scheme[:argument]`` specs to backend instances of one kind."""

    def __init__(self, kind: str, builtin: Mapping[str, str]) -> None:
        """``builtin`` maps each built-in scheme to the module that registers it."""
        self.kind = kind
        self._builtin = dict(builtin)
        self._entries: dict[str, Entry[T]] = {}
        self._loaded = False

    def register(
        self, scheme: str, *, help: str, default_argument: str = ""
    ) -> Callable[[Callable[..., T]], Callable[..., T]]:
        """Decorator: register ``factory(argument, **options) -> backend`` under ``scheme``."""

        def decorate(factory: Callable[..., T]) -> Callable[..., T]:
            self._entries[scheme] = Entry(scheme, factory, help, default_argument)
            return factory

        return decorate

    def _load(self, scheme: str | None = None) -> None:
        """Import the module providing ``scheme``, or every provider when None."""
        if scheme is not None and scheme in self._entries:
            return
        if scheme in self._builtin:
            importlib.import_module(self._builtin[scheme])
            return
        if self._loaded:
            return
        self._loaded = True
        for module in dict.fromkeys(self._builtin.values()):
            importlib.import_module(module)
        for plugin in entry_points(group="rap.plugins"):
            plugin.load()

    def entries(self) -> list[Entry[T]]:
        self._load()
        return [self._entries[s] for s in sorted(self._entries)]

    def names(self) -> list[str]:
        return [e.scheme for e in self.entries()]

    def parse(self, spec: str) -> tuple[Entry[T], str]:
        """Split a spec into its registry entry and argument, strictly."""
        if not isinstance(spec, str) or not spec.strip():
            raise InvalidInput(f"empty {self.kind} name; choose one of: {', '.join(self.names())}")
        scheme, _, argument = spec.strip().partition(":")
        self._load(scheme)
        entry = self._entries.get(scheme)
        if entry is None:
            raise UnknownBackend(
                f"unknown {self.kind} {spec!r}; known: {', '.join(self.names()) or 'none'}"
            )
        return entry, argument or entry.default_argument

    def canonical(self, spec: str) -> str:
        """The spec with its default argument filled in: what a store records."""
        entry, argument = self.parse(spec)
        return f"{entry.scheme}:{argument}" if argument else entry.scheme

    def create(self, spec: str, **options: object) -> T:
        """Build the backend; ``options`` are the backend's own settings (validated by it)."""
        entry, argument = self.parse(spec)
        return entry.factory(argument, **options)
