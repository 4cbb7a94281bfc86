"""Built-in model families, registered through the ``builtin_models`` entry point like any plugin's.

One file per family; this table maps HF ``architectures`` names to ``module:Class`` targets, so
nothing is imported until a model of that architecture is loaded.
"""

from poolkit.registry.hookspecs import hookimpl

ARCHITECTURES = {
    # HF architecture -> (module in this package, class, tasks)
    "BertModel": ("bert", "BertForEmbedding", ("embed", "token_embed")),
    "BertForSequenceClassification": ("bert", "BertForSequenceClassification", ("classify", "score")),
    "BertForTokenClassification": ("bert", "BertForTokenClassification", ("token_classify",)),
}


@hookimpl
def register_architectures(register):
    for arch, (module, cls, tasks) in ARCHITECTURES.items():
        register(arch, f"poolkit.builtin_models.{module}:{cls}", tasks=tasks)
