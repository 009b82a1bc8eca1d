"""Every limit the service enforces, written into its OpenAPI document.

The routes declare their fields; the limits come from the app's own
:class:`~rap.settings.Settings` (and the concept rules of :mod:`rap.concepts`)
and are written into the document here, so a generated client sends only what
the service accepts, and a changed setting changes the document with it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from rap.concepts import MAX_CATEGORY_LENGTH, MAX_INFO_LENGTH, MAX_NAME_LENGTH
from rap.settings import Settings

NAME_PATTERN = r"^[A-Za-z0-9](?:[A-Za-z0-9_.\-]*[A-Za-z0-9])?$"
"""The ASCII names every concept-name rule accepts (letters of any script are accepted too)."""
CURSOR_PATTERN = r"^(?:[A-Za-z0-9_\-]{4})*(?:[A-Za-z0-9_\-]{2,3})?$"
"""Unpadded URL-safe base64, which every ``next_cursor`` is."""
DATA_URL_PATTERN = r"^data:image/[a-z0-9.+\-]+;base64,(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$"
_ATTRIBUTE = r'"[A-Za-z0-9_\-]{1,64}"[ \t\n\r]*:[ \t\n\r]*"[^"\\\x00-\x1f\x7f-\x9f]{0,200}"[ \t\n\r]*'
ATTRIBUTES_PATTERN = rf"^\{{[ \t\n\r]*(?:{_ATTRIBUTE}(?:,[ \t\n\r]*{_ATTRIBUTE}){{0,63}})?\}}$"
"""A JSON object of up to 64 plain string attributes: the common case of what the form field takes."""
NON_BLANK = r"\S"
CONTROL_FREE = r"^[^\x00-\x08\x0b-\x1f\x7f-\x9f]*$"
"""No control characters but tab and newline (what :func:`rap.concepts.validate_text` refuses)."""


def _strings(schema: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """The string schemas of a property: itself, or the string branches of its ``anyOf``."""
    if schema.get("type") == "string":
        yield schema
    for branch in schema.get("anyOf", []):
        yield from _strings(branch)


def _limits(settings: Settings) -> dict[str, dict[str, Any]]:
    """The constraints of each field name, wherever it appears (a form field, a JSON property, a parameter)."""
    name = {"pattern": NAME_PATTERN, "maxLength": MAX_NAME_LENGTH}
    text = {"maxLength": settings.max_text_chars, "pattern": CONTROL_FREE}
    return {
        "name": name,
        "concept": name,
        "question": {**text, "minLength": 1, "pattern": NON_BLANK},
        "text": text,
        "info": {"maxLength": MAX_INFO_LENGTH, "pattern": CONTROL_FREE},
        "category": {"maxLength": MAX_CATEGORY_LENGTH, "minLength": 1, "pattern": r"^[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$"},
        "cursor": {"pattern": CURSOR_PATTERN, "minLength": 2},
        "attributes": {"pattern": ATTRIBUTES_PATTERN, "contentMediaType": "application/json"},
        "url": {"pattern": DATA_URL_PATTERN, "maxLength": settings.max_upload_bytes * 4 // 3 + 64},
    }


def _numbers(settings: Settings) -> dict[str, dict[str, Any]]:
    return {"size": {"maximum": settings.max_thumbnail_side}, "limit": {"maximum": settings.max_page_size}}


def _refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        if isinstance(node.get("$ref"), str):
            yield node["$ref"].rsplit("/", 1)[-1]
        for value in node.values():
            yield from _refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from _refs(value)


def _request_schemas(document: dict[str, Any]) -> set[str]:
    """The component schemas a request body uses (responses keep theirs: what the service sends is not limited)."""
    schemas = document.get("components", {}).get("schemas", {})
    found: set[str] = set()
    pending = [ref for ops in document.get("paths", {}).values() for op in ops.values() for ref in _refs(op.get("requestBody"))]
    while pending:
        name = pending.pop()
        if name not in found and name in schemas:
            found.add(name)
            pending.extend(_refs(schemas[name]))
    return found


def declare_limits(document: dict[str, Any], settings: Settings) -> dict[str, Any]:
    """``document`` with the service's limits written into its bodies and parameters."""
    strings, numbers = _limits(settings), _numbers(settings)

    def constrain(field: str, schema: dict[str, Any]) -> None:
        for string in _strings(schema):
            string.update(strings.get(field, {}))
        for branch in [schema, *schema.get("anyOf", [])]:
            if branch.get("type") == "integer":
                branch.update(numbers.get(field, {}))
            if field == "image" and branch.get("type") == "array":
                branch.update(minItems=1, maxItems=settings.max_images_per_request)

    schemas = document.get("components", {}).get("schemas", {})
    for name in _request_schemas(document):
        schema = schemas[name]
        for field, prop in schema.get("properties", {}).items():
            if name.startswith("Body_") and "anyOf" in prop:  # a form leaves out what it lacks: it has no null
                kept = [branch for branch in prop.pop("anyOf") if branch.get("type") != "null"]
                prop.update(kept[0] if len(kept) == 1 else {"anyOf": kept})
            constrain(field, prop)
        if "text" in schema.get("properties", {}) and "image" in schema["properties"]:
            # /v1/retrieve: a photo or a text
            schema["anyOf"] = [{"required": ["image"]}, {"required": ["text"], "properties": {"text": {"type": "string", "minLength": 1}}}]
    for operations in document.get("paths", {}).values():
        for operation in operations.values():
            body = operation.get("requestBody")
            if body is not None and any("anyOf" in schemas.get(ref, {}) for ref in _refs(body)):
                body["required"] = True  # one of its fields must be sent
            for parameter in operation.get("parameters", []):
                constrain(parameter["name"], parameter["schema"])
    return document


def limited_openapi(app: Any, settings: Settings) -> Callable[[], dict[str, Any]]:
    """An ``app.openapi`` that declares the limits of ``settings`` (made once, then kept)."""
    plain = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = declare_limits(plain(), settings)
        return app.openapi_schema

    return openapi
