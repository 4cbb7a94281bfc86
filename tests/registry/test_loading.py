"""Plugin loading: isolation of broken plugins, the allow-list, conflicts, typos, de-duplication.

Entry points are faked by monkeypatching ``importlib_metadata.entry_points`` (pluggy's own test
technique) with modules created in the test; the real-distribution test is in test_distribution.py.
"""

from __future__ import annotations

import sys
import types

import pytest

from poolkit.registry import (
    PluginHost,
    PluginLoadError,
    RegistryConflictError,
    UnknownArchitectureError,
    UnknownPoolerError,
    hookimpl,
    loading,
)


class FakeDist:
    def __init__(self, name, version="1.0"):
        self.name, self.version, self.metadata = name, version, {"Name": name}


class FakeEntryPoint:
    def __init__(self, name, module, dist):
        self.name, self.value, self.dist, self.group = name, module, FakeDist(dist), loading.ENTRY_POINT_GROUP

    def load(self):
        __import__(self.value)
        return sys.modules[self.value]


def _module(name, **hooks):
    mod = types.ModuleType(name)
    for hook_name, fn in hooks.items():
        setattr(mod, hook_name, hookimpl(fn))
    sys.modules[name] = mod
    return name


@pytest.fixture
def fake_eps(monkeypatch):
    eps = []
    monkeypatch.setattr(loading.metadata, "entry_points", lambda group: [e for e in eps if e.group == group])
    monkeypatch.delenv("POOLKIT_PLUGINS", raising=False)
    monkeypatch.delenv("POOLKIT_STRICT_PLUGINS", raising=False)
    yield eps
    for e in eps:
        sys.modules.pop(e.value, None)


def _arch_plugin(arch, target="x:Y"):
    return lambda register: register(arch, target)


def test_plugins_register_parts(fake_eps):
    fake_eps.append(FakeEntryPoint("a", _module("pk_a", register_architectures=_arch_plugin("AModel")), "dist-a"))
    host = PluginHost().load()
    assert host.registry("architectures").get("AModel").plugin.dist == "dist-a"
    assert host.plugins[0].registered == {"architectures": ["AModel"]}


def test_broken_import_is_reported_by_name_and_others_load(fake_eps, caplog):
    fake_eps.append(FakeEntryPoint("broken", "pk_does_not_exist", "dist-broken"))
    fake_eps.append(FakeEntryPoint("good", _module("pk_good", register_architectures=_arch_plugin("GoodModel")), "dist-good"))
    with pytest.warns(RuntimeWarning, match=r"(?s)plugin 'broken' \(distribution dist-broken 1.0.*No module named 'pk_does_not_exist'"):
        host = PluginHost().load()
    [logged] = [r for r in caplog.records if r.name == "poolkit.registry"]  # logged too, with its traceback
    assert logged.levelname == "WARNING" and "plugin 'broken'" in logged.getMessage() and logged.exc_info
    assert "GoodModel" in host.registry("architectures")
    [failed] = host.failures()
    assert failed.name == "broken" and "ModuleNotFoundError" in failed.error


def test_hook_that_raises_is_isolated_and_rolled_back(fake_eps):
    def bad(register):
        register("HalfModel", "x:Y")
        raise RuntimeError("boom")

    fake_eps.append(FakeEntryPoint("bad", _module("pk_bad", register_architectures=bad), "dist-bad"))
    fake_eps.append(FakeEntryPoint("good", _module("pk_good2", register_architectures=_arch_plugin("GoodModel")), "dist-good"))
    with pytest.warns(RuntimeWarning, match="(?s)raised in register_architectures.*RuntimeError: boom"):
        host = PluginHost().load()
    archs = host.registry("architectures")
    assert "GoodModel" in archs and "HalfModel" not in archs


def test_strict_mode_raises(fake_eps, monkeypatch):
    monkeypatch.setenv("POOLKIT_STRICT_PLUGINS", "1")
    fake_eps.append(FakeEntryPoint("broken", "pk_does_not_exist2", "dist-broken"))
    with pytest.raises(PluginLoadError, match="plugin 'broken'"):
        PluginHost().load()


def test_duplicate_name_names_both_plugins(fake_eps):
    fake_eps.append(FakeEntryPoint("one", _module("pk_one", register_architectures=_arch_plugin("SameModel")), "dist-one"))
    fake_eps.append(FakeEntryPoint("two", _module("pk_two", register_architectures=_arch_plugin("SameModel")), "dist-two"))
    with pytest.warns(RuntimeWarning, match="SameModel"):
        host = PluginHost().load()
    with pytest.raises(RegistryConflictError, match=r"plugin 'one'.*dist-one.*plugin 'two'.*dist-two"):
        host.registry("architectures").get("SameModel")


def test_allow_list(fake_eps, monkeypatch):
    fake_eps.append(FakeEntryPoint("a", _module("pk_al_a", register_architectures=_arch_plugin("AModel")), "dist-a"))
    fake_eps.append(FakeEntryPoint("b", _module("pk_al_b", register_architectures=_arch_plugin("BModel")), "dist-b"))
    monkeypatch.setenv("POOLKIT_PLUGINS", "b")
    host = PluginHost().load()
    assert host.registry("architectures").names() == ["BModel"]
    monkeypatch.setenv("POOLKIT_PLUGINS", "")
    assert PluginHost().load().plugins == []


def test_misspelled_hook_fails_loudly(fake_eps):
    fake_eps.append(FakeEntryPoint("typo", _module("pk_typo", register_architecture=_arch_plugin("X")), "dist-typo"))
    with pytest.warns(RuntimeWarning, match="unknown hook 'register_architecture'"):
        host = PluginHost().load()
    assert host.failures()[0].name == "typo"


def test_same_distribution_seen_twice_loads_once(fake_eps):
    mod = _module("pk_twice", register_architectures=_arch_plugin("TwiceModel"))
    fake_eps.extend([FakeEntryPoint("twice", mod, "dist-twice"), FakeEntryPoint("twice", mod, "dist-twice")])
    host = PluginHost().load()  # no conflict warning: lib64 -> lib symlinks show one dist-info twice
    assert len(host.plugins) == 1 and "TwiceModel" in host.registry("architectures")


def test_unknown_names_list_what_is_registered(fake_eps):
    fake_eps.append(FakeEntryPoint("a", _module("pk_un", register_architectures=_arch_plugin("AModel")), "dist-a"))
    host = PluginHost().load()
    with pytest.raises(UnknownArchitectureError, match=r"Unknown architecture 'Nope'. Registered: \['AModel'\].*plugin"):
        host.registry("architectures").get("Nope")
    with pytest.raises(UnknownPoolerError, match="Unknown pooling type 'MAXX'"):
        host.registry("poolers").get("MAXX")


def test_target_must_be_a_lazy_string(fake_eps):
    import poolkit.builtin_models.bert as bert  # noqa: F401  (a class object is refused, a string is not)

    fake_eps.append(FakeEntryPoint("cls", _module("pk_cls", register_architectures=lambda register: register("C", object)), "d"))
    with pytest.warns(RuntimeWarning, match="module:attr"):
        PluginHost().load()


def test_builtins_register_through_entry_points(fresh_host):
    from poolkit.registry import get_host

    host = get_host()
    builtin = {p.name: p for p in host.plugins if p.dist == "poolkit"}
    assert set(builtin) >= {"builtin_models", "builtin_poolers", "builtin_tasks", "io_plugins"}
    assert {"BertModel", "TransformersFallback"} <= set(builtin["builtin_models"].registered["architectures"])
    assert set(host.registry("poolers").names()) >= {"CLS", "MEAN", "LAST", "ALL", "STEP"}


def test_allow_list_applies_to_builtins_too(fresh_host, monkeypatch):
    from poolkit.registry import get_host

    monkeypatch.setenv("POOLKIT_PLUGINS", "builtin_poolers")
    host = get_host()
    assert host.registry("architectures").names() == []
    assert "MEAN" in host.registry("poolers")
