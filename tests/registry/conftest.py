"""Fake entry points (pluggy's own test technique): plugin modules made in the test, no distribution installed.

``importlib_metadata.entry_points`` is monkeypatched to return :class:`FakeEntryPoint` objects; a
``PluginHost()`` built in the test loads them like installed ones. The real-distribution test is
test_distribution.py.
"""

from __future__ import annotations

import itertools
import sys
import types

import pytest

from poolkit.registry import hookimpl, loading

_count = itertools.count()


class FakeDist:
    def __init__(self, name, version="1.0"):
        self.name, self.version, self.metadata = name, version, {"Name": name}


class FakeEntryPoint:
    def __init__(self, name, module, dist):
        self.name, self.value, self.dist, self.group = name, module, FakeDist(dist), loading.ENTRY_POINT_GROUP

    def load(self):
        __import__(self.value)
        return sys.modules[self.value]


@pytest.fixture
def fake_eps(monkeypatch):
    """The list of entry points the plugin host sees (none of the installed ones)."""
    eps = []
    monkeypatch.setattr(loading.metadata, "entry_points", lambda group: [e for e in eps if e.group == group])
    monkeypatch.delenv("POOLKIT_PLUGINS", raising=False)
    monkeypatch.delenv("POOLKIT_STRICT_PLUGINS", raising=False)
    yield eps
    for e in eps:
        sys.modules.pop(e.value, None)


@pytest.fixture
def add_plugin(fake_eps):
    """``add_plugin(name, dist, **hooks) -> module name``: an entry point ``name`` of distribution ``dist``
    whose module has the given ``@hookimpl`` functions; ``module=`` points it at an existing (or missing) one."""

    def add(name, dist, module=None, **hooks):
        if module is None:
            module = f"pk_{name}_{next(_count)}"
            mod = types.ModuleType(module)
            for hook_name, fn in hooks.items():
                setattr(mod, hook_name, hookimpl(fn))
            sys.modules[module] = mod
        fake_eps.append(FakeEntryPoint(name, module, dist))
        return module

    return add
