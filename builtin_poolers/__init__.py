"""Built-in pooling methods and activations, registered through the ``poolkit.plugins`` entry point
``builtin_poolers`` exactly as a third-party plugin registers its own. Importing this module does
not import torch: targets are strings resolved on first use."""

from poolkit.registry.hookspecs import hookimpl

_METHODS = "poolkit.builtin_poolers.methods"
_ACTIVATIONS = "poolkit.builtin_poolers.activations"


@hookimpl
def register_poolers(register):
    for name, cls in [("CLS", "CLSPool"), ("MAX", "MaxPool"), ("LAST", "LastPool"), ("ALL", "AllPool"),
                      ("STEP", "StepPool")]:
        register(name, f"{_METHODS}:{cls}")
    register("MEAN", "poolkit.pooling:MeanPool")  # in core, where plugin poolers subclass it
    # SPLADE: a masked-LM head's vocabulary logits, pooled (selected by a SparseEncoder's SpladePooling)
    register("SPLADE_MAX", "poolkit.builtin_poolers.splade:SpladeMaxPool")
    register("SPLADE_SUM", "poolkit.builtin_poolers.splade:SpladeSumPool")


@hookimpl
def register_activations(register):
    for name in ("normalize", "softmax", "sigmoid", "identity"):
        register(name, f"{_ACTIVATIONS}:{name}")
