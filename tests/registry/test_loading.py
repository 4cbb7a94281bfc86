"""Plugin loading: isolation of broken plugins, the allow-list, conflicts, typos, de-duplication, and
hooks called through pluggy (argument pruning).

Entry points are faked (``add_plugin``/``fake_eps`` in conftest.py); the real-distribution test is in
test_distribution.py.
"""

from __future__ import annotations

import sys
import types
import warnings

import pytest

from poolkit.registry import (
    PluginHost,
    PluginLoadError,
    UnknownArchitectureError,
    UnknownPoolerError,
    hookimpl,
    hookspec,
    hookspecs,
    loading,
)


def _arch_plugin(arch, target="x:Y"):
    return lambda register: register(arch, target)


def test_plugins_register_parts(add_plugin):
    add_plugin("a", "dist-a", register_architectures=_arch_plugin("AModel"))
    host = PluginHost().load()
    assert host.registry("architectures").get("AModel").plugin.dist == "dist-a"
    assert host.plugins[0].registered == {"architectures": ["AModel"]}


def test_broken_import_is_reported_by_name_and_others_load(add_plugin, caplog):
    add_plugin("broken", "dist-broken", module="pk_does_not_exist")
    add_plugin("good", "dist-good", register_architectures=_arch_plugin("GoodModel"))
    with pytest.warns(RuntimeWarning, match=r"(?s)plugin 'broken' \(distribution dist-broken 1.0.*No module named 'pk_does_not_exist'"):
        host = PluginHost().load()
    [logged] = [r for r in caplog.records if r.name == "poolkit.registry"]  # logged too, with its traceback
    assert logged.levelname == "WARNING" and "plugin 'broken'" in logged.getMessage() and logged.exc_info
    assert "GoodModel" in host.registry("architectures")
    [failed] = host.failures()
    assert failed.name == "broken" and "ModuleNotFoundError" in failed.error


def test_hook_that_raises_is_isolated_and_rolled_back(add_plugin):
    def bad(register):
        register("HALF", "x:Y")
        raise RuntimeError("boom")

    add_plugin("bad", "dist-bad", register_architectures=_arch_plugin("HalfModel"), register_poolers=bad,
               register_tasks=lambda register: register("never", "x:Y"))
    add_plugin("good", "dist-good", register_architectures=_arch_plugin("GoodModel"))
    with pytest.warns(RuntimeWarning, match="(?s)plugin 'bad'.*raised in register_poolers.*RuntimeError: boom"):
        host = PluginHost().load()
    assert "GoodModel" in host.registry("architectures")
    # the whole plugin is rolled back (its architecture too, from a hook that did not raise) and skipped
    assert "HalfModel" not in host.registry("architectures") and "HALF" not in host.registry("poolers")
    assert "never" not in host.registry("tasks")
    [bad_info] = host.failures()
    assert bad_info.registered == {} and bad_info.failed_in == "register_poolers"
    assert not host.pm.has_plugin("dist-bad:bad") and host.pm.has_plugin("dist-good:good")


def test_strict_mode_raises(add_plugin, monkeypatch):
    monkeypatch.setenv("POOLKIT_STRICT_PLUGINS", "1")
    add_plugin("broken", "dist-broken", module="pk_does_not_exist2")
    with pytest.raises(PluginLoadError, match="plugin 'broken'"):
        PluginHost().load()


def test_duplicate_name_keeps_the_first_loaded_with_one_warning_line(add_plugin, caplog):
    add_plugin("two", "dist-b", register_architectures=_arch_plugin("SameModel", "b:Y"),
               register_poolers=lambda register: (register("SAME", "b:P"), register("OWN", "b:Q")))
    add_plugin("one", "dist-a", register_architectures=_arch_plugin("SameModel", "a:Y"),
               register_poolers=lambda register: register("SAME", "a:P"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no RuntimeWarning: a conflict is not a plugin failure
        host = PluginHost().load()
    # the rule: the first loaded wins, plugins of other distributions in distribution-name order
    assert host.registry("architectures").get("SameModel").target == "a:Y"
    assert host.registry("poolers").get("SAME").target == "a:P"
    assert host.registry("poolers").get("OWN").target == "b:Q"  # the rest of the second plugin loads
    records = [r for r in caplog.records if r.name == "poolkit.registry"]
    lines = [r.getMessage() for r in records]
    assert len(lines) == 2 and not any("\n" in line for line in lines) and not any(r.exc_info for r in records)
    assert lines[0] == ("poolkit: architecture 'SameModel' is registered by both plugin 'one' (distribution dist-a "
                        "1.0) and plugin 'two' (distribution dist-b 1.0); the first loaded, plugin 'one', wins "
                        "(built-ins load first, then by distribution name). Uninstall one, or leave one out with "
                        "POOLKIT_PLUGINS.")
    two = [p for p in host.plugins if p.name == "two"][0]
    assert two.error is None and two.conflicts == {"architectures": ["SameModel"], "poolers": ["SAME"]}
    assert two.registered == {"poolers": ["OWN"]}


def test_conflict_is_an_error_in_strict_mode(add_plugin, monkeypatch):
    monkeypatch.setenv("POOLKIT_STRICT_PLUGINS", "1")
    add_plugin("one", "dist-a", register_architectures=_arch_plugin("SameModel"))
    add_plugin("two", "dist-b", register_architectures=_arch_plugin("SameModel"))
    with pytest.raises(PluginLoadError, match=r"RegistryConflictError: architecture 'SameModel' .*plugin 'two'"):
        PluginHost().load()


def test_rolling_back_a_plugin_undoes_its_conflicts(add_plugin):
    def raises(register):
        raise RuntimeError("boom")

    add_plugin("one", "dist-one", register_architectures=_arch_plugin("SameModel"))
    add_plugin("two", "dist-two", register_architectures=_arch_plugin("SameModel"), register_poolers=raises)
    with pytest.warns(RuntimeWarning) as record:
        host = PluginHost().load()
    [warning] = record
    assert "plugin 'two'" in str(warning.message) and "RuntimeError: boom" in str(warning.message)
    assert host.registry("architectures").get("SameModel").plugin.name == "one"
    assert host.registry("architectures").conflicts == {}  # two was rolled back: no conflict left


def test_unknown_name_in_the_allow_list_warns(add_plugin, monkeypatch, caplog):
    add_plugin("a", "Dist_A", register_architectures=_arch_plugin("AModel"))
    monkeypatch.setenv("POOLKIT_PLUGINS", "dist-a, name-that-does-not-exist")
    host = PluginHost().load()
    assert host.registry("architectures").names() == ["AModel"]  # distribution names compare normalized
    assert host.unknown_selected == ["name-that-does-not-exist"]
    [line] = [r.getMessage() for r in caplog.records if r.name == "poolkit.registry"]
    assert "POOLKIT_PLUGINS names 'name-that-does-not-exist', which no installed plugin is" in line


def test_allow_list(add_plugin, monkeypatch):
    add_plugin("a", "dist-a", register_architectures=_arch_plugin("AModel"))
    add_plugin("b", "dist-b", register_architectures=_arch_plugin("BModel"))
    monkeypatch.setenv("POOLKIT_PLUGINS", "b")
    host = PluginHost().load()
    assert host.registry("architectures").names() == ["BModel"]
    monkeypatch.setenv("POOLKIT_PLUGINS", "")
    assert PluginHost().load().plugins == []


def test_misspelled_hook_fails_loudly(add_plugin):
    add_plugin("typo", "dist-typo", register_architecture=_arch_plugin("X"))
    with pytest.warns(RuntimeWarning, match="unknown hook 'register_architecture'"):
        host = PluginHost().load()
    assert host.failures()[0].name == "typo"


def test_same_distribution_seen_twice_loads_once(add_plugin):
    mod = add_plugin("twice", "dist-twice", register_architectures=_arch_plugin("TwiceModel"))
    add_plugin("twice", "dist-twice", module=mod)
    host = PluginHost().load()  # no conflict warning: lib64 -> lib symlinks show one dist-info twice
    assert len(host.plugins) == 1 and "TwiceModel" in host.registry("architectures")


def test_unknown_names_list_what_is_registered(add_plugin):
    add_plugin("a", "dist-a", register_architectures=_arch_plugin("AModel"))
    host = PluginHost().load()
    with pytest.raises(UnknownArchitectureError, match=r"Unknown architecture 'Nope'. Registered: \['AModel'\].*plugin"):
        host.registry("architectures").get("Nope")
    with pytest.raises(UnknownPoolerError, match="Unknown pooling type 'MAXX'"):
        host.registry("poolers").get("MAXX")


@pytest.mark.parametrize("target", [object, "pkg.module", "pkg.module:", ":Class", "pkg..module:Class", "pkg:1Class",
                                    "pkg:Class extra"])
def test_target_must_be_a_lazy_module_attr_string(add_plugin, target):
    add_plugin("cls", "d", register_architectures=lambda register: register("C", target))
    with pytest.warns(RuntimeWarning, match="needs a 'module:attr' string target"):
        host = PluginHost().load()
    assert "C" not in host.registry("architectures")


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


# --- hooks are called through pluggy ------------------------------------------------------------


def test_hooks_run_through_pluggy_one_plugin_at_a_time(add_plugin):
    add_plugin("a", "dist-a", register_architectures=_arch_plugin("AModel"), register_poolers=lambda register: None)
    add_plugin("b", "dist-b", register_architectures=_arch_plugin("BModel"))
    host, calls = PluginHost(), []
    host.pm.add_hookcall_monitoring(lambda hook, impls, kwargs: calls.append((hook, [i.plugin_name for i in impls])),
                                    lambda outcome, hook, impls, kwargs: None)
    host.load()
    assert calls == [("register_architectures", ["dist-a:a"]), ("register_poolers", ["dist-a:a"]),
                     ("register_architectures", ["dist-b:b"])]


def test_a_hookimpl_may_declare_fewer_arguments_than_the_spec(add_plugin):
    calls = []
    add_plugin("none", "dist-none", register_architectures=lambda: calls.append("called without arguments"))
    add_plugin("some", "dist-some", register_architectures=_arch_plugin("SomeModel"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no pluggy warning either
        host = PluginHost().load()
    assert calls == ["called without arguments"] and host.failures() == []
    [none, some] = host.plugins
    assert none.hooks == ["register_architectures"] and none.registered == {}
    assert some.registered == {"architectures": ["SomeModel"]}


def test_a_hookspec_argument_added_later_is_harmless(add_plugin, monkeypatch):
    """The compatibility policy: a hook may gain an argument; implementations written before it keep working."""
    specs = types.ModuleType("future_hookspecs")
    for name in dir(hookspecs):
        if name.startswith("register_"):
            setattr(specs, name, getattr(hookspecs, name))

    @hookspec
    def register_architectures(register, host):
        """Today's hook, plus the plugin host."""

    specs.register_architectures = register_architectures
    monkeypatch.setattr(loading, "hookspecs", specs)
    monkeypatch.setattr(PluginHost, "_hook_kwargs", lambda self, register: {"register": register, "host": self})
    seen = []

    def new(register, host):
        seen.append(host)
        register("NewModel", "x:Y")

    add_plugin("old", "dist-old", register_architectures=_arch_plugin("OldModel"))
    add_plugin("new", "dist-new", register_architectures=new)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        host = PluginHost().load()
    assert host.failures() == [] and host.registry("architectures").names() == ["NewModel", "OldModel"]
    assert seen == [host]


def test_a_hookimpl_argument_the_spec_lacks_fails_that_plugin(add_plugin):
    add_plugin("extra", "dist-extra", register_architectures=lambda register, bogus: register("ExtraModel", "x:Y"))
    add_plugin("good", "dist-good", register_architectures=_arch_plugin("GoodModel"))
    with pytest.warns(RuntimeWarning, match=r"(?s)plugin 'extra'.*failed to load.*Argument\(s\) \{'bogus'\}"):
        host = PluginHost().load()
    assert host.registry("architectures").names() == ["GoodModel"] and host.failures()[0].name == "extra"


def test_a_hookimpl_under_another_name_is_refused(add_plugin):
    """pluggy's subset_hook_caller finds plugins by attribute name: a ``specname=`` alias could not be left out."""
    module = add_plugin("alias", "dist-alias")
    sys.modules[module].my_architectures = hookimpl(specname="register_architectures")(_arch_plugin("AliasModel"))
    add_plugin("good", "dist-good", register_architectures=_arch_plugin("GoodModel"))
    with pytest.warns(RuntimeWarning, match="(?s)plugin 'alias'.*implemented under another name"):
        host = PluginHost().load()
    archs = host.registry("architectures")
    assert archs.names() == ["GoodModel"] and archs.get("GoodModel").plugin.name == "good"


# --- register() keywords ------------------------------------------------------------------------


def test_unknown_register_keyword_fails_only_that_plugin(add_plugin):
    def typo(register):
        register("TypoModel", "x:Y", tasks=["embed"])  # accepted (and rolled back with the plugin)
        register("TypoModel2", "x:Y", task=["embed"])

    add_plugin("typo", "dist-typo", register_architectures=typo)
    add_plugin("pool", "dist-pool", register_poolers=lambda register: register("P", "x:Y", tasks=["embed"]))
    add_plugin("good", "dist-good", register_architectures=_arch_plugin("GoodModel"),
               register_poolers=lambda register: register("GOOD", "x:Y"))
    with pytest.warns(RuntimeWarning) as record:
        host = PluginHost().load()
    messages = [str(w.message) for w in record]
    assert any("plugin 'typo' (distribution dist-typo" in m and "unknown keyword argument(s) ['task']" in m
               and "it accepts ['tasks', 'fallback']" in m for m in messages), messages
    assert any("plugin 'pool' (distribution dist-pool" in m and "unknown keyword argument(s) ['tasks']" in m
               and "it accepts none" in m for m in messages), messages
    assert sorted(p.name for p in host.failures()) == ["pool", "typo"]
    assert host.registry("architectures").names() == ["GoodModel"] and host.registry("poolers").names() == ["GOOD"]


def test_unknown_register_keyword_raises_in_strict_mode(add_plugin, monkeypatch):
    monkeypatch.setenv("POOLKIT_STRICT_PLUGINS", "1")
    add_plugin("typo", "dist-typo", register_architectures=lambda register: register("T", "x:Y", fallbak=True))
    with pytest.raises(PluginLoadError, match=r"(?s)plugin 'typo'.*unknown keyword argument\(s\) \['fallbak'\]"):
        PluginHost().load()


def test_register_tasks_keyword_is_checked_and_kept_as_a_tuple(add_plugin):
    add_plugin("ok", "dist-ok", register_architectures=lambda register: register("OkModel", "x:Y", tasks=["embed"]))
    add_plugin("str", "dist-str", register_architectures=lambda register: register("StrModel", "x:Y", tasks="embed"))
    with pytest.warns(RuntimeWarning, match=r"(?s)plugin 'str'.*needs a list of task names, got 'embed'"):
        host = PluginHost().load()
    assert host.registry("architectures").names() == ["OkModel"]
    assert host.registry("architectures").get("OkModel").meta == {"tasks": ("embed",)}
