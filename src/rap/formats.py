"""One error path for the JSON files rap reads: pydantic models, one line naming file, record and field.

Each format is a pydantic model. rap's own formats (the eval manifest, the
``meta`` of ``rap data build``'s records) forbid unknown fields, so a typo is
an error rather than an ignored line. The formats of others (Yo'LLaVA's and
RAP's benchmark files, LLaVA's training records) ignore fields rap does not
read: their authors add fields users cannot remove, and reading the rest must
not break. Models are strict: ``"true"`` is not a boolean, ``1`` is not text.

:func:`validated` turns the first thing wrong into a one-line
:class:`~rap.errors.InvalidFormat` such as ``qa.json: bo/1.png: field
'options': should be a JSON object``.
"""

from __future__ import annotations

from typing import Annotated, Any, TypeVar, get_args

from pydantic import AfterValidator, BaseModel, ConfigDict, ValidationError

from rap.errors import InvalidFormat

M = TypeVar("M", bound=BaseModel)


def _not_blank(text: str) -> str:
    if not text.strip():
        raise ValueError("must be non-empty text")
    return text


#: text that is not empty or only spaces
NonBlank = Annotated[str, AfterValidator(_not_blank)]

OWN = ConfigDict(strict=True, extra="forbid", frozen=True)
"""The config of rap's own formats: unknown fields are errors."""

OTHERS = ConfigDict(strict=True, extra="ignore", frozen=True)
"""The config of formats rap reads but others write: unknown fields are skipped."""


def validated(model: type[M], data: Any, where: str, context: dict[str, Any] | None = None) -> M:
    """``data`` as ``model``, or an :class:`InvalidFormat` that starts with ``where`` (file and record)."""
    try:
        return model.model_validate(data, context=context)
    except ValidationError as exc:
        raise InvalidFormat(f"{where}: {problem(exc, model)}") from None


def problem(exc: ValidationError, model: type[BaseModel] | None = None) -> str:
    """The first error of ``exc`` in a few words: which field, and what is wrong with it."""
    errors = exc.errors(include_url=False)
    first = errors[0]
    field = ".".join(str(part) for part in first["loc"])
    if first["type"] == "extra_forbidden":
        owner = _model_at(model, first["loc"][:-1])
        known = f"; known: {', '.join(owner.model_fields)}" if owner is not None else ""
        said = f"unknown field {field!r}{known}"
    else:
        error = first.get("ctx", {}).get("error")
        if first["type"] in ("model_type", "dict_type"):
            message = "should be a JSON object"
        elif first["type"] == "value_error" and error is not None:
            message = str(error)
        else:
            message = first["msg"]
        said = f"field {field!r}: {message}" if field else message
    more = len(errors) - 1
    return said + (f" (and {more} more problem{'s' if more > 1 else ''})" if more else "")


def _model_at(model: type[BaseModel] | None, path: tuple[int | str, ...]) -> type[BaseModel] | None:
    """The model a nested field path leads to, through fields that are models themselves; None elsewhere."""
    for part in path:
        field = model.model_fields.get(str(part)) if model is not None else None
        candidates = (field.annotation, *get_args(field.annotation)) if field is not None else ()
        model = next((c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)), None)
    return model
