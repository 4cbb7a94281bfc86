"""poolkit-plugin-example: every kind of poolkit part, registered through one entry point.

``pyproject.toml`` names this module under ``[project.entry-points."poolkit.plugins"]``; poolkit
calls the hooks below when it first needs a registry. Targets are ``"module:attr"`` strings, so
``poolkit plugins`` lists them without importing torch or the model code.
"""

import poolkit


@poolkit.hookimpl
def register_architectures(register):
    register("MeanBagOfWordsModel", "poolkit_plugin_example.model:MeanBagOfWords",
             tasks=["embed", "token_embed", "token_norms"])


@poolkit.hookimpl
def register_poolers(register):
    register("MEAN_SQRT_LEN", "poolkit_plugin_example.pooler:MeanSqrtLenPool")


@poolkit.hookimpl
def register_tasks(register):
    register("token_norms", "poolkit_plugin_example.task:TokenNormsTask")


@poolkit.hookimpl
def register_io_processors(register):
    register("keywords", "poolkit_plugin_example.processor:KeywordsProcessor")
