"""Command-line options that take their default and help from an options model, so the model stays the one source.

A flag such as ``rap train --rank`` is a second door to a field of an options
model (``TrainOptions.rank``). Writing its default again in the typer option
would let the two drift apart; :func:`field_option` reads the default (which
``--help`` shows) and the help text from the field instead.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import typer
from pydantic import BaseModel


def field_default(model: type[Any], name: str) -> Any:
    """The default of field ``name`` of a pydantic model or a dataclass."""
    if isinstance(model, type) and issubclass(model, BaseModel):
        return model.model_fields[name].get_default(call_default_factory=True)
    field = next(f for f in dataclasses.fields(model) if f.name == name)
    return field.default_factory() if field.default is dataclasses.MISSING else field.default  # type: ignore[misc]


def field_option(model: type[BaseModel], name: str, *flags: str, help: str | None = None, **kwargs: Any) -> Any:
    """A typer option for field ``name`` of ``model``: its default, and its description as help unless ``help`` is given."""
    field = model.model_fields[name]
    description = field.description or ""
    text = help if help is not None else description[:1].upper() + description[1:] + "."
    return typer.Option(field_default(model, name), *flags, help=text, **kwargs)
