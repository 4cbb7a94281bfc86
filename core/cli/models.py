"""``poolkit models``: the architectures x tasks table of the loaded plugins, as Markdown (docs/models.md)."""

from __future__ import annotations

import argparse

from poolkit.cli.parser import HelpFormatter

TASK_COLUMNS = ("embed", "token_embed", "classify", "score", "token_classify")


def models_markdown() -> str:
    """The architectures x tasks table of every loaded plugin: each class's own ``supported_tasks``
    (:func:`poolkit.registry.declared_tasks` imports it; a target that fails to import shows what its
    ``register(tasks=...)`` said)."""
    from poolkit.registry import declared_tasks, get_host

    registry = get_host().registry("architectures")
    lines = ["| architecture | " + " | ".join(TASK_COLUMNS) + " | plugin | target |",
             "|---|" + "---|" * len(TASK_COLUMNS) + "---|---|"]
    for name in registry.names():
        entry = registry.get(name)
        tasks = set(declared_tasks(entry))
        marks = " | ".join("yes" if t in tasks else "" for t in TASK_COLUMNS)
        label = f"any other transformers architecture ({name})" if entry.meta.get("fallback") else name
        lines.append(f"| {label} | {marks} | {entry.plugin.name} | `{entry.target}` |")
    return "\n".join(lines) + "\n"


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    models = sub.add_parser("models", formatter_class=HelpFormatter,
                            help="print the supported architectures x tasks table (Markdown)",
                            description="Architectures registered by the loaded plugins and the tasks each serves.")
    models.set_defaults(func=run)
    return models


def run(args: argparse.Namespace) -> int:
    print(models_markdown(), end="")
    return 0
