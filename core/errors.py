"""The error families poolkit raises, so that a caller (the server above all) can tell whose fault it is.

:class:`InvalidRequestError` is raised only where input is validated, before any work is shared with
other requests: the request asked for something this model cannot do (HTTP 4xx). Anything else that
escapes a request is a bug in poolkit, a model or a plugin (HTTP 500, logged). The request errors
subclass ``ValueError`` (``TypeError`` for a wrong type), so code that caught those keeps working.
"""

from __future__ import annotations

from poolkit.registry.errors import PoolkitError, UnknownTaskError


def printable(message: str) -> str:
    """``message`` with any lone surrogate written as ``\\udXXX``: a message may quote the client's own bad
    text, and an error answer must still encode as UTF-8 (else the 400 would become a 500)."""
    return message if message.isascii() else message.encode("utf-8", "backslashreplace").decode("utf-8")


def unencodable(text: str) -> int | None:
    """The index of the first character of ``text`` that has no UTF-8 encoding (a lone UTF-16 surrogate, which
    JSON's ``"\\ud800"`` escape can carry, or a byte of invalid UTF-8 in a command line argument, which Python
    keeps as ``"\\udcXX"``), else None. An ASCII text answers at once (CPython keeps that flag)."""
    if text.isascii():
        return None
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        return exc.start
    return None


class InvalidRequestError(PoolkitError, ValueError):
    """One request's input is invalid; ``status`` is the HTTP status the server answers with.

    ``param`` names the offending request field when one is known (OpenAI's error ``param``).
    """

    status = 400

    def __init__(self, message: str, param: str | None = None) -> None:
        message = printable(message)
        super().__init__(message)
        self.message, self.param = message, param

    def __str__(self) -> str:
        return self.message


class InvalidInputTypeError(InvalidRequestError, TypeError):
    """A prompt or field of the wrong type (a dict without ``prompt``, a number where text belongs)."""


class InputTooLongError(InvalidRequestError):
    """A prompt longer than the model's limit, with no truncation configured (vLLM's wording)."""


class UnsupportedTaskError(InvalidRequestError, UnknownTaskError):
    """The request names a task this model does not serve; the message lists the ones it does."""


__all__ = ["InputTooLongError", "printable", "InvalidInputTypeError", "InvalidRequestError", "PoolkitError",
           "UnsupportedTaskError"]
