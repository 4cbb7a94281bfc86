"""``import poolkit`` stays light: no torch, no transformers, no plugin loaded; built-in entry modules too."""

from __future__ import annotations

import subprocess
import sys

import pytest

CHECK = "import sys, {mod}; heavy = [m for m in ('torch', 'transformers') if m in sys.modules]; print(heavy)"


@pytest.mark.parametrize("mod", ["poolkit", "poolkit.builtin_models", "poolkit.builtin_poolers",
                                 "poolkit.builtin_poolers.tasks_plugin", "poolkit.io_plugins", "poolkit.registry"])
def test_import_is_light(mod):
    out = subprocess.run([sys.executable, "-c", CHECK.format(mod=mod)], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_import_loads_no_plugin():
    code = "import poolkit, poolkit.registry.loading as l; print(l._host is None)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "True"
