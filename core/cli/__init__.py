"""The ``poolkit`` command: ``embed``, ``serve``, ``models`` and ``plugins``, one module each.

:func:`main` is the console script and :func:`build_parser` puts the subcommands together;
:mod:`poolkit.cli.parser` holds what they share (the engine flags of ``embed`` and ``serve``, exit
statuses, argparse types); ``python -m poolkit.cli`` runs it too.
"""

from __future__ import annotations

import argparse
import sys

from poolkit.cli import embed, models, plugins, serve
from poolkit.cli.embed import DEFAULT_MODEL_ID, default_model
from poolkit.cli.models import models_markdown
from poolkit.cli.parser import HelpFormatter


def build_parser() -> argparse.ArgumentParser:
    """The ``poolkit`` parser with every subcommand; ``args.func(args)`` runs the chosen one."""
    parser = argparse.ArgumentParser(
        prog="poolkit",
        description="Serve pooling models: embeddings, classifiers, rerankers, reward models.",
        epilog="Examples:\n  poolkit embed 'hello world' 'another text'\n  poolkit embed -f texts.txt -o vectors.npy\n"
               "  poolkit plugins",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="store_true", help="print the poolkit version and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for command in (embed, serve, models, plugins):
        command.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the ``poolkit`` command; the exit status (2: a one-line error about the input or options)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.version:
        from importlib.metadata import version

        print(f"poolkit {version('poolkit')}")
        return 0
    if not args.command:
        parser.print_help()
        return 2
    try:
        return args.func(args)
    except (ValueError, TypeError, KeyError, FileNotFoundError) as exc:
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"poolkit {args.command}: error: {message}", file=sys.stderr)
        return 2


__all__ = ["DEFAULT_MODEL_ID", "HelpFormatter", "build_parser", "default_model", "main", "models_markdown"]
