"""The ``poolkit`` command: ``embed``, ``serve``, ``models`` and ``plugins``, one module each.

:func:`main` is the console script; :mod:`poolkit.cli.parser` builds the parser and holds the engine
flags ``embed`` and ``serve`` share; ``python -m poolkit.cli`` runs it too.
"""

from poolkit.cli.embed import DEFAULT_MODEL_ID, default_model
from poolkit.cli.models import models_markdown
from poolkit.cli.parser import HelpFormatter, build_parser, main

__all__ = ["DEFAULT_MODEL_ID", "HelpFormatter", "build_parser", "default_model", "main", "models_markdown"]
