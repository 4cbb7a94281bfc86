"""``poolkit plugins``: the loaded plugins and what they registered (JSON); ``--check`` finds broken parts."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from poolkit.cli.parser import HelpFormatter


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    plugins = sub.add_parser("plugins", formatter_class=HelpFormatter,
                             help="list loaded plugins and what they registered (JSON)",
                             description="List every plugin of the poolkit.plugins entry-point group, built-ins "
                                         "included: distribution, version, hooks, registered parts, load error.\n\n"
                                         "--check imports every registered part instead and prints the broken "
                                         "ones (JSON, [] when all is well; one line each on stderr): a plugin "
                                         "that failed to load, a target that does not import or resolve, an "
                                         "object of the wrong kind, a name two plugins register (the first "
                                         "loaded wins), a name in POOLKIT_PLUGINS that no plugin has. It exits "
                                         "1 if there are any.")
    plugins.add_argument("--third-party", action="store_true", help="only plugins from other distributions")
    plugins.add_argument("--hook", help="only plugins implementing HOOK, e.g. register_architectures")
    plugins.add_argument("--strict", action="store_true", help="exit 1 if any plugin failed to load")
    plugins.add_argument("--check", action="store_true",
                         help="import and check every registered part; print the broken ones (failed plugins "
                              "included), exit 1 if any")
    plugins.set_defaults(func=run)
    return plugins


def run(args: argparse.Namespace) -> int:
    from poolkit.registry import get_host

    rows = [p.as_dict() for p in get_host().plugins]
    if args.third_party:
        rows = [r for r in rows if not r["builtin"]]
    if args.hook:
        rows = [r for r in rows if args.hook in r["hooks"]]
    if args.check:
        return check(rows, filtered=bool(args.third_party or args.hook))
    print(json.dumps(rows, indent=2))
    return 1 if any(r["error"] for r in rows) and args.strict else 0


def check(rows: list[dict[str, Any]], *, filtered: bool) -> int:
    """``--check``: the problems of :func:`poolkit.registry.check.check_plugins` on stdout, a line each on stderr.

    A plugin that failed to load is one of them (``name`` None). With ``--third-party`` or ``--hook``,
    only the problems of the plugins those select.
    """
    from poolkit.registry.check import check_plugins  # imports every part: only when asked

    problems = check_plugins()
    if filtered:  # the selected plugins' problems, and the names in POOLKIT_PLUGINS that select nothing
        selected = {r["name"] for r in rows}
        problems = [p for p in problems if p["plugin"] in selected or p["distribution"] is None]
    print(json.dumps(problems, indent=2))
    for p in problems:
        if p["distribution"] is None:  # a name in POOLKIT_PLUGINS that is no plugin
            what = f"POOLKIT_PLUGINS name {p['plugin']!r}"
        elif p["name"] is None:  # the plugin itself: its entry point did not load, or a hook raised
            what = f"plugin {p['plugin']!r} ({p['distribution']}, entry point {p['target']!r})"
        else:
            what = f"{p['kind']} {p['name']!r} of plugin {p['plugin']!r} ({p['distribution']}, target {p['target']!r})"
        print(f"poolkit plugins: broken {what}: {_one_line(p['problem'])}", file=sys.stderr)
    return 1 if problems else 0


def _one_line(text: Any) -> str:
    return " ".join(str(text).split())
