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
from poolkit.cli.parser import EXIT_FAILURE, EXIT_USAGE, HelpFormatter, Parser, validation_message

EPILOG = """\
Examples:
  poolkit embed 'hello world' 'another text'
  poolkit embed -f texts.txt -o vectors.npy
  poolkit plugins

Exit status, the same for every command:
  0  success
  1  the command ran and failed: a model that cannot be loaded, a port in use, a job that embedded nothing
  2  the command line or its input is wrong: an unknown flag, a bad value, a missing or unreadable input,
     an output that exists; reported on one line, before any model loads where it can be
  130  interrupted (Ctrl-C); an interrupted embed job resumes when the same command runs again"""


def build_parser() -> argparse.ArgumentParser:
    """The ``poolkit`` parser with every subcommand; ``args.func(args)`` runs the chosen one."""
    parser = Parser(
        prog="poolkit",
        description="Serve pooling models: embeddings, classifiers, rerankers, reward models.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="store_true", help="print the poolkit version and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    for command in (embed, serve, models, plugins):
        command.add_parser(sub)
    parser.set_defaults(subcommands=sub.choices)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the ``poolkit`` command; its exit status (:data:`EXIT_FAILURE`, :data:`EXIT_USAGE`: one line on stderr)."""
    from pydantic import ValidationError

    parser = build_parser()
    args, extras = parser.parse_known_args(argv)
    command = args.subcommands.get(args.command) if args.command else None
    if extras:  # argparse's top parser would report them with its own usage: the subcommand's is the one to see
        options = [e for e in extras if e.startswith("-") and e != "-"]
        (command or parser).error(f"unrecognized arguments: {' '.join(options or extras)}")
    if args.version:
        from importlib.metadata import version

        print(f"poolkit {version('poolkit')}")
        return 0
    if not args.command:
        parser.print_help()
        return EXIT_USAGE
    try:
        return args.func(args)
    except ValidationError as exc:  # a ValueError too: rendered as the fields and values, no pydantic URL
        for line in validation_message(exc, flags=command).splitlines():
            print(f"poolkit {args.command}: error: {line}", file=sys.stderr)
        return EXIT_USAGE
    except (ValueError, TypeError, KeyError, FileNotFoundError) as exc:
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"poolkit {args.command}: error: {message}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as exc:  # the disk, not the command line: full, gone, not permitted
        print(f"poolkit {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_FAILURE


__all__ = ["DEFAULT_MODEL_ID", "HelpFormatter", "build_parser", "default_model", "main", "models_markdown"]
