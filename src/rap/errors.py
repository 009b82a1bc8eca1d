"""One error hierarchy for the whole of rap.

Every error a user can cause is a :class:`RapError`. Each class knows the exit
code the command line returns and the HTTP status a service answers with, so the
CLI and the server translate errors in one place and never print a traceback for
bad input. Messages are one line and say what to do.
"""

from __future__ import annotations

import shlex


class RapError(Exception):
    """Base class of all errors that rap reports to a user."""

    exit_code: int = 1
    http_status: int = 500

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(message.split()))

    @property
    def message(self) -> str:
        return str(self)


class InvalidInput(RapError):
    """The request itself is malformed: a bad name, an empty question, a bad option."""

    exit_code = 2
    http_status = 400


class InvalidImage(InvalidInput):
    """An image is missing, unreadable, truncated, too large or of an unsupported format."""

    http_status = 422


class InvalidName(InvalidInput):
    """A concept name is empty, too long, unprintable or uses characters that cannot be typed."""


class ConceptNotFound(RapError):
    """A concept named in edit, remove or show does not exist."""

    exit_code = 3
    http_status = 404


class ConceptExists(RapError):
    """Adding or renaming would give two concepts the same name."""

    exit_code = 4
    http_status = 409


class StoreError(RapError):
    """The store folder cannot be opened: unreadable, foreign or from a newer rap."""

    exit_code = 5
    http_status = 500


class StoreDamaged(StoreError):
    """The store's database is damaged: SQLite says so, or a row no longer matches its digest.

    A store that raised it takes no more writes; ``rap check`` says what is wrong.
    """


class EncoderMismatch(StoreError):
    """The store's vectors were made by another encoder than the one asked for."""

    http_status = 409


class InvalidFormat(InvalidInput):
    """An import file (database.json, a folder layout) does not have the expected shape."""


class ConfigError(RapError):
    """A config file or setting is broken or names something unknown."""

    exit_code = 6
    http_status = 500


class UnknownBackend(ConfigError):
    """A registry was asked for a name it does not know; the message lists the known ones."""


class MissingDependency(ConfigError):
    """An optional dependency is not installed; the message names the extra that provides it."""


class BackendError(RapError):
    """A model server failed: unreachable, too slow, or answering with an error or nonsense.

    The fault is upstream of rap, so a service built on rap answers 502 (Bad Gateway).
    """

    exit_code = 7
    http_status = 502


class Unauthorized(RapError):
    """A service request lacks a valid API key (``Authorization: Bearer <key>``)."""

    http_status = 401


class PayloadTooLarge(InvalidInput):
    """A request body (an upload, a text) is larger than the service accepts."""

    http_status = 413


class RateLimited(RapError):
    """One API key sent more requests than its rate allows; retry after ``retry_after`` seconds."""

    http_status = 429

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class Overloaded(RapError):
    """The service's generation queue is full; retry after ``retry_after`` seconds."""

    http_status = 503

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class RequestTimeout(RapError):
    """A request ran longer than the service allows."""

    http_status = 504


class InvalidHost(InvalidInput):
    """A service request names a host the service does not answer to (a DNS-rebinding page's, say)."""


class CrossSiteRequest(RapError):
    """A browser sent a write to the service from another site's page."""

    http_status = 403


class ImageNotFound(ConceptNotFound):
    """A concept has no reference image with the id asked for."""


class NotReady(RapError):
    """A service worker is still loading its models, or failed to."""

    http_status = 503


def shell_word(text: str) -> str:
    """``text`` as one shell word for a command an error message suggests.

    Double quotes where quoting is needed, because messages put a suggested
    command in single quotes.
    """
    if shlex.quote(text) == text:
        return text
    return '"' + "".join("\\" + c if c in '\\"$`' else c for c in text) + '"'
