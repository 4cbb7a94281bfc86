"""Moved to :mod:`poolkit.model.hub`; kept so that old imports work."""

from poolkit.model.hub import ALLOW_PATTERNS, resolve_model_dir  # noqa: F401
