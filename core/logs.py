"""Logging for the command line: one stderr handler on the ``poolkit`` logger tree.

Library modules only log, to ``poolkit.<package>`` loggers (``poolkit.server``, ``poolkit.engine``,
``poolkit.registry``...); they never print or configure handlers. ``poolkit serve`` and ``poolkit
embed`` call :func:`configure_logging` with ``--log-level`` or ``POOLKIT_LOG_LEVEL``.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings

LEVELS = ("critical", "error", "warning", "info", "debug")
FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def log_level(given: str | None = None, default: str = "info") -> str:
    """``given`` (a flag), else ``POOLKIT_LOG_LEVEL``, else ``default``; lower case, checked."""
    level = (given or os.environ.get("POOLKIT_LOG_LEVEL") or default).lower()
    if level not in LEVELS:
        raise ValueError(f"log level {level!r} is not one of {list(LEVELS)} (--log-level / POOLKIT_LOG_LEVEL)")
    return level


def configure_logging(level: str) -> None:
    """Send the ``poolkit`` loggers at ``level`` and above to stderr (once per process)."""
    root = logging.getLogger("poolkit")
    root.setLevel(level.upper())
    if not any(getattr(h, "_poolkit", False) for h in root.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(FORMAT))
        handler._poolkit = True  # type: ignore[attr-defined]
        root.addHandler(handler)  # still propagates: an application's own root handler sees poolkit's records too
    # a failed plugin is logged by poolkit.registry; its RuntimeWarning (for library users) would repeat it
    warnings.filterwarnings("ignore", message=r"poolkit: ", category=RuntimeWarning)
