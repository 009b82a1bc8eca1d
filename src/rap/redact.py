"""Secrets never leave rap in the clear: one function masks them wherever settings are shown or written.

Backend options may carry credentials (``RAP_GENERATOR_OPTIONS='{"api_key": ...}'``).
``rap config show``, the files ``rap eval`` writes and anything else that prints
or stores settings pass them through :func:`redact` first. An option is a secret
when its name says so (``api_key``, ``token``, ``secret``, ``password``,
``credentials``, ``authorization``, or ends in ``_key``) or when its value is a
pydantic ``SecretStr`` / ``SecretBytes``, which is how an options model marks a
field secret (the ``openai`` backend's ``api_key``). A password inside a URL
(``postgresql://rap:PASSWORD@host/db``, ``?password=...``) is masked in any text.
The mask keeps only whether a value was set, so a shown configuration still
tells "no key" from "a key".
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from pydantic import SecretBytes, SecretStr

MASK = "********"
_URL_PASSWORD = re.compile(r"(://[^:/@\s]*):[^@/\s]*@")
_QUERY_PASSWORD = re.compile(r"([?&]password=)[^&\s]*", re.IGNORECASE)
_SECRET_NAME = re.compile(r"(?:^|[_-])(?:api[_-]?key|key|token|secret|password|passwd|credentials?|authorization|auth)$", re.IGNORECASE)


def is_secret_name(name: str) -> bool:
    """Whether an option called ``name`` holds a credential."""
    return bool(_SECRET_NAME.search(name))


def redact(value: Any) -> Any:
    """``value`` with every secret masked, at any depth of mappings and lists; the input is not changed."""
    if isinstance(value, (SecretStr, SecretBytes)):
        return MASK if value.get_secret_value() else ""
    if isinstance(value, Mapping):
        return {key: _masked(value[key]) if isinstance(key, str) and is_secret_name(key) else redact(value[key]) for key in value}
    if isinstance(value, (list, tuple)):
        return type(value)(redact(item) for item in value)
    if isinstance(value, str):
        return _QUERY_PASSWORD.sub(rf"\g<1>{MASK}", _URL_PASSWORD.sub(rf"\g<1>:{MASK}@", value))
    return value


def _masked(value: Any) -> Any:
    if isinstance(value, (SecretStr, SecretBytes)):
        value = value.get_secret_value()
    return MASK if value not in (None, "", b"") else value
