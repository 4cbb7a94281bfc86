"""check_plugins and declared_tasks: every registered target imported and checked against
its kind's base class (``poolkit plugins --check``, ``poolkit models``)."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from poolkit import IOProcessor, PoolingMethod, PoolingModel, TaskAdapter, testing
from poolkit.outputs import EmbeddingOutput
from poolkit.registry import PluginHost, check_plugins, declared_tasks, get_host

BUILTINS = "builtin_models,builtin_poolers,builtin_tasks,io_plugins"


def _testing_rows(rows):
    return [r for r in rows if r["plugin"] == "testing"]  # the parts of poolkit.testing.plugin_parts


# --- parts written to the contract --------------------------------------------------------------


class GoodModel(PoolingModel):
    supported_tasks = ("embed",)

    def __init__(self, init):
        super().__init__(init)

    def forward(self, batch):
        return batch


class GoodPool(PoolingMethod):
    name, supported_tasks = "GOOD", frozenset({"embed"})

    def __call__(self, hidden, batch):
        return hidden


class GoodTask(TaskAdapter):
    name, output_cls = "good_task", EmbeddingOutput

    def pool(self, hidden, batch, params):
        return []


class GoodProcessor(IOProcessor):
    def pre_process(self, data, params):
        return data

    def post_process(self, outputs, request):
        return outputs


def test_builtins_pass(fresh_host, monkeypatch):
    monkeypatch.setenv("POOLKIT_PLUGINS", BUILTINS)
    host = get_host()
    assert all(host.registry(kind).names() for kind in host.registries)  # every kind has built-in parts
    assert check_plugins() == []


def test_good_parts_pass(fresh_host):
    with testing.plugin_parts(architectures={"GoodArch": GoodModel}, poolers={"GOOD": GoodPool},
                              tasks={"good_task": GoodTask}, io_processors={"good-proc": GoodProcessor},
                              activations={"double": lambda x: 2 * x}) as host:
        assert _testing_rows(check_plugins(host)) == []


def test_misspelled_targets_are_reported(fresh_host):
    with testing.plugin_parts(architectures={"TypoArch": "poolkit.builtin_models.bert:BertForEmbeding"},
                              poolers={"NOMOD": "poolkit_no_such_module:Pool"}) as host:
        rows = {r["name"]: r for r in _testing_rows(check_plugins(host))}
    assert rows["TypoArch"] == {
        "plugin": "testing", "distribution": "poolkit.testing", "kind": "architectures", "name": "TypoArch",
        "target": "poolkit.builtin_models.bert:BertForEmbeding",
        "problem": "cannot import 'poolkit.builtin_models.bert:BertForEmbeding': AttributeError: module "
                   "'poolkit.builtin_models.bert' has no attribute 'BertForEmbeding'",
    }
    assert rows["NOMOD"]["problem"].startswith("cannot import 'poolkit_no_such_module:Pool': ModuleNotFoundError")
    assert set(rows) == {"TypoArch", "NOMOD"}


class NotAModel:
    supported_tasks = ("embed",)


class PlainModule(torch.nn.Module):
    """A model class as written before the PoolingModel contract: a plain module built from four arguments."""

    def __init__(self, cfg, sd, dtype=torch.float32, kernels="auto"):
        super().__init__()

    def forward(self, batch):
        return batch


class ModelWithFourArguments(PoolingModel):
    def __init__(self, cfg, sd, dtype=torch.float32, kernels="auto"):
        super().__init__()

    def forward(self, batch):
        return batch


class ModelWithoutForward(PoolingModel):
    pass


class ModelWithStringTasks(GoodModel):
    supported_tasks = ("embed")  # noqa: UP034  (the missing comma is the bug under test)


class ModelWithStringQuantization(GoodModel):
    supported_quantizations = ("int8")  # noqa: UP034  (the missing comma is the bug under test)


class ModelWithUnknownQuantization(GoodModel):
    supported_quantizations = ("int4",)


class NotAPool:
    supported_tasks = frozenset({"embed"})

    def __call__(self, hidden, batch):
        return hidden


class PoolWithoutTasks(PoolingMethod):
    def __call__(self, hidden, batch):
        return hidden


class PoolWithInstanceLoad(GoodPool):
    def load(self, init):  # the hook is a classmethod: built before there is an instance
        return self


class TaskWithoutPool(TaskAdapter):
    name, output_cls = "bad_task", EmbeddingOutput


class TaskWithoutName(TaskAdapter):
    output_cls = EmbeddingOutput

    def pool(self, hidden, batch, params):
        return []


class TaskWithOtherName(GoodTask):
    pass  # name "good_task", registered as "bad_task"


class ProcessorWithoutPostProcess(IOProcessor):
    def pre_process(self, data, params):
        return data


def not_a_class():
    pass


@pytest.mark.parametrize("kind, name, part, problem", [
    ("architectures", "BadArch", not_a_class, "not a class but function"),
    ("architectures", "BadArch", NotAModel, "NotAModel is not a subclass of poolkit.PoolingModel"),
    ("architectures", "BadArch", PlainModule, "PlainModule is not a subclass of poolkit.PoolingModel: subclass it"),
    ("architectures", "BadArch", ModelWithFourArguments,
     "has an __init__(cfg, sd, dtype=torch.float32, kernels='auto') that does not take one poolkit.ModelInit"),
    ("architectures", "BadArch", ModelWithoutForward, "does not implement forward(batch)"),
    ("architectures", "BadArch", ModelWithStringTasks, "supported_tasks is the string 'embed', not a tuple"),
    ("architectures", "BadArch", ModelWithStringQuantization, "supported_quantizations is the string 'int8'"),
    ("architectures", "BadArch", ModelWithUnknownQuantization, "supported_quantizations names ['int4']"),
    ("poolers", "BAD", NotAPool, "NotAPool is not a subclass of poolkit.PoolingMethod"),
    ("poolers", "BAD", PoolWithoutTasks, "declares no supported_tasks"),
    ("poolers", "BAD", PoolWithInstanceLoad, "load must be a classmethod"),
    ("tasks", "bad_task", TaskWithoutPool, "does not implement pool(hidden, batch, params)"),
    ("tasks", "bad_task", TaskWithoutName, "has no name"),
    ("tasks", "bad_task", TaskWithOtherName, "its name 'good_task' is not the name it is registered by, 'bad_task'"),
    ("io_processors", "bad-proc", ProcessorWithoutPostProcess, "does not implement post_process"),
    ("io_processors", "bad-proc", GoodPool, "GoodPool is not a subclass of poolkit.IOProcessor"),
    ("activations", "bad_act", 42, "not callable: int 42"),
])
def test_wrong_parts_are_reported(fresh_host, kind, name, part, problem):
    with testing.plugin_parts(**{kind: {name: part}}) as host:
        [row] = _testing_rows(check_plugins(host))
    assert (row["kind"], row["name"], row["distribution"]) == (kind, name, "poolkit.testing")
    assert problem in row["problem"], row["problem"]


def test_plugins_that_failed_to_load_are_reported(add_plugin):
    def raises(register):
        raise RuntimeError("boom")

    add_plugin("broken", "dist-broken", module="pk_missing_for_check")
    raising = add_plugin("raises", "dist-raises", register_poolers=raises)
    add_plugin("typo", "dist-typo",
               register_poolers=lambda register: register("TYPO", "poolkit.builtin_poolers.methods:MeanPol"))
    with pytest.warns(RuntimeWarning):
        host = PluginHost().load()
    rows = check_plugins(host)
    assert rows[:2] == [
        {"plugin": "broken", "distribution": "dist-broken", "kind": None, "name": None,
         "target": "pk_missing_for_check", "problem": "failed to load: ModuleNotFoundError: No module named 'pk_missing_for_check'"},
        {"plugin": "raises", "distribution": "dist-raises", "kind": "poolers", "name": None, "target": raising,
         "problem": "raised in register_poolers: RuntimeError: boom"},
    ]
    [typo] = rows[2:]
    assert (typo["plugin"], typo["kind"], typo["name"]) == ("typo", "poolers", "TYPO")
    assert typo["problem"].startswith("cannot import 'poolkit.builtin_poolers.methods:MeanPol': AttributeError")


def test_declared_tasks_come_from_the_class(add_plugin):
    def register_architectures(register):
        register("FromClass", f"{module}:Model", tasks=["not", "these"])
        register("Ghost", "pk_ghost_module:Model", tasks=["embed"])
        register("Bare", "pk_ghost_module:Model")

    module = add_plugin("decl", "dist-decl", register_architectures=register_architectures)
    sys.modules[module].Model = GoodModel
    archs = PluginHost().load().registry("architectures")
    assert declared_tasks(archs.get("FromClass")) == ("embed",)
    assert declared_tasks(archs.get("Ghost")) == ("embed",)  # the import fails: the register(tasks=...) meta
    assert declared_tasks(archs.get("Bare")) == ()


def test_declared_tasks_of_builtins(fresh_host):
    host = get_host()
    assert declared_tasks(host.registry("architectures").get("BertModel")) == ("embed", "token_embed")
    assert declared_tasks(host.registry("poolers").get("MEAN")) == ("classify", "embed", "score")
    for entry in host.registry("architectures").entries.values():
        if entry.plugin.dist == "poolkit":
            assert declared_tasks(entry), entry.name
            if "tasks" in entry.meta:  # a second declaration, only while it is still there: it must agree
                assert set(entry.meta["tasks"]) == set(declared_tasks(entry)), entry.name


def test_check_module_imports_light():
    code = "import sys, poolkit.registry.check; print([m for m in ('torch', 'transformers') if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
