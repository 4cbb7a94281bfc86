"""Moved to :mod:`poolkit.model.convert`; kept so that old imports work."""

from poolkit.model.convert import CLASSIFY_TASKS, EMBED_TASKS, default_convert, served_tasks  # noqa: F401
