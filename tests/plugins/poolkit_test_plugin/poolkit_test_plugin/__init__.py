"""A third-party plugin: one architecture (a BERT saved under another name) and two poolers
(FIRST_LAST, and SIF_MEAN: a learned pooler that reads its weights from the model directory)."""

import poolkit


@poolkit.hookimpl
def register_architectures(register):
    register("TestPluginBertModel", "poolkit_test_plugin.model:TestPluginBert", tasks=["embed"])


@poolkit.hookimpl
def register_poolers(register):
    register("FIRST_LAST", "poolkit_test_plugin.pooler:FirstLastPool")
    register("SIF_MEAN", "poolkit_test_plugin.sif:SifMeanPool")
