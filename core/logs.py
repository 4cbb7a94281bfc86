"""Logging for the command line: one stderr handler, as text or as one JSON object a line.

Library modules only log, to ``poolkit.<package>`` loggers (``poolkit.server``, ``poolkit.engine``,
``poolkit.registry``...); they never print or configure handlers. ``poolkit serve`` and ``poolkit
embed`` call :func:`configure_logging` with ``--log-level`` or ``POOLKIT_LOG_LEVEL``.

``--log-format json`` (``serve``) is for log collectors: every record of poolkit's loggers and of
uvicorn's (its access log included, once uvicorn is given ``log_config=None``) is one JSON object on one
line of stderr, a traceback in its ``exception`` field, never on lines of its own.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import warnings
from datetime import datetime, timezone

LEVELS = ("critical", "error", "warning", "info", "debug")
FORMATS = ("text", "json")
FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
_ACCESS_FIELDS = ("client", "method", "path", "http_version", "status")  # uvicorn.access's record args


def log_level(given: str | None = None, default: str = "info") -> str:
    """``given`` (a flag), else ``POOLKIT_LOG_LEVEL``, else ``default``; lower case, checked."""
    level = (given or os.environ.get("POOLKIT_LOG_LEVEL") or default).lower()
    if level not in LEVELS:
        raise ValueError(f"log level {level!r} is not one of {list(LEVELS)} (--log-level / POOLKIT_LOG_LEVEL)")
    return level


class JSONFormatter(logging.Formatter):
    """A record as one line of JSON: time (UTC, ISO 8601), level, logger, message; an access-log record's
    client, method, path, http_version and status as fields of their own; a traceback as ``exception``."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {"time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
                 "level": record.levelname, "logger": record.name, "message": record.getMessage()}
        if record.name == "uvicorn.access" and isinstance(record.args, tuple) and len(record.args) == 5:
            entry.update(zip(_ACCESS_FIELDS, record.args))
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


def configure_logging(level: str, fmt: str = "text") -> None:
    """Send the ``poolkit`` loggers at ``level`` and above to stderr (once per process).

    ``fmt="json"``: the handler, a :class:`JSONFormatter`, goes on the root logger instead, where the
    records of poolkit's, uvicorn's and other libraries' loggers all arrive.
    """
    if fmt not in FORMATS:
        raise ValueError(f"log format {fmt!r} is not one of {list(FORMATS)} (--log-format)")
    root = logging.getLogger("poolkit")
    root.setLevel(level.upper())
    target = logging.getLogger() if fmt == "json" else root
    if not any(getattr(h, "_poolkit", False) for h in (*root.handlers, *logging.getLogger().handlers)):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(JSONFormatter() if fmt == "json" else logging.Formatter(FORMAT))
        handler._poolkit = True  # type: ignore[attr-defined]
        target.addHandler(handler)  # on "poolkit": still propagates, so an application's root handler sees it too
    if fmt == "json":
        logging.captureWarnings(True)  # a Python warning is a record too, not a line of plain text
    # a failed plugin is logged by poolkit.registry; its RuntimeWarning (for library users) would repeat it
    warnings.filterwarnings("ignore", message=r"poolkit: ", category=RuntimeWarning)
