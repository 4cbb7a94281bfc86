"""A third-party plugin: one architecture (a BERT saved under another name) and one pooler (FIRST_LAST)."""

import poolkit


@poolkit.hookimpl
def register_architectures(register):
    register("TestPluginBertModel", "poolkit_test_plugin.model:TestPluginBert", tasks=["embed"])


@poolkit.hookimpl
def register_poolers(register):
    register("FIRST_LAST", "poolkit_test_plugin.pooler:FirstLastPool")
