"""Plugin conflicts and the POOLKIT_PLUGINS allow-list as a user meets them: ``poolkit plugins`` in a subprocess,
with two third-party distributions installed (a ``.dist-info`` with entry points on PYTHONPATH) that register
the same names, one of them a built-in's.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

PLUGINS = {
    "a": """
        @poolkit.hookimpl
        def register_architectures(register):
            register("DupModel", "pk_conflict_a:Model")

        @poolkit.hookimpl
        def register_poolers(register):
            register("DUP", "pk_conflict_a:Pooler")
    """,
    "b": """
        @poolkit.hookimpl
        def register_architectures(register):
            register("DupModel", "pk_conflict_b:Model")

        @poolkit.hookimpl
        def register_poolers(register):
            register("DUP", "pk_conflict_b:Pooler")
            register("CLS", "pk_conflict_b:Pooler")  # a built-in's name
            register("OWN", "pk_conflict_b:Pooler")
    """,
}


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """Two installed distributions, poolkit-conflict-a and poolkit-conflict-b, with three conflicts between them."""
    site = tmp_path_factory.mktemp("conflict_site")
    for key, body in PLUGINS.items():
        (site / f"pk_conflict_{key}").mkdir()
        (site / f"pk_conflict_{key}" / "__init__.py").write_text("import poolkit\n" + textwrap.dedent(body))
        info = site / f"poolkit_conflict_{key}-1.0.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: poolkit-conflict-{key}\nVersion: 1.0\n")
        (info / "entry_points.txt").write_text(f"[poolkit.plugins]\nconflict_{key} = pk_conflict_{key}\n")
    return site


def poolkit(*args, pythonpath=None, plugins=None):
    env = {k: v for k, v in os.environ.items() if not k.startswith("POOLKIT_")}
    if pythonpath:
        env["PYTHONPATH"] = str(pythonpath)
    if plugins is not None:
        env["POOLKIT_PLUGINS"] = plugins
    return subprocess.run([sys.executable, "-m", "poolkit.cli", "plugins", *args], env=env, capture_output=True,
                          text=True, timeout=120)


def label(key):
    return f"plugin 'conflict_{key}' (distribution poolkit-conflict-{key} 1.0)"


def test_each_conflict_is_one_warning_line_and_the_first_loaded_wins(site):
    run = poolkit("--third-party", pythonpath=site)
    assert run.returncode == 0, run.stderr
    lines = run.stderr.splitlines()
    assert "Traceback" not in run.stderr and len(lines) == 3, run.stderr
    builtin = "plugin 'builtin_poolers' (distribution poolkit "
    assert lines[0].startswith(f"poolkit: architecture 'DupModel' is registered by both {label('a')} and {label('b')}; "
                               f"the first loaded, plugin 'conflict_a', wins")
    assert lines[1].startswith(f"poolkit: pooling type 'DUP' is registered by both {label('a')} and {label('b')}; "
                               f"the first loaded, plugin 'conflict_a', wins")
    assert lines[2].startswith(f"poolkit: pooling type 'CLS' is registered by both {builtin}")
    assert f"and {label('b')}; the first loaded, plugin 'builtin_poolers', wins" in lines[2]
    rows = {r["name"]: r for r in json.loads(run.stdout)}
    assert rows["conflict_a"]["registered"] == {"architectures": ["DupModel"], "poolers": ["DUP"]}
    assert rows["conflict_b"]["registered"] == {"poolers": ["OWN"]} and rows["conflict_b"]["error"] is None
    assert rows["conflict_b"]["conflicts"] == {"architectures": ["DupModel"], "poolers": ["DUP", "CLS"]}


def test_check_lists_every_conflict_and_fails(site):
    run = poolkit("--check", pythonpath=site)
    assert run.returncode == 1
    conflicts = [(p["plugin"], p["kind"], p["name"]) for p in json.loads(run.stdout)
                 if p["problem"].startswith("conflict:")]
    assert sorted(conflicts) == [("conflict_b", "architectures", "DupModel"), ("conflict_b", "poolers", "CLS"),
                                 ("conflict_b", "poolers", "DUP")]
    assert ("poolkit plugins: broken poolers 'DUP' of plugin 'conflict_b' (poolkit-conflict-b, target "
            f"'pk_conflict_b:Pooler'): conflict: {label('a')} registers 'DUP' too and wins") in run.stderr


def test_unknown_name_in_poolkit_plugins_warns_and_fails_check():
    run = poolkit("--check", plugins="poolkit,name-that-does-not-exist")
    assert run.returncode == 1, run.stdout
    [row] = json.loads(run.stdout)
    assert row["plugin"] == "name-that-does-not-exist" and row["distribution"] is None
    assert run.stderr.startswith("poolkit: POOLKIT_PLUGINS names 'name-that-does-not-exist', which no installed "
                                 "plugin is")
    assert "poolkit plugins: broken POOLKIT_PLUGINS name 'name-that-does-not-exist'" in run.stderr
