"""Loading a model: the registered class for a checkpoint's architecture, built from its tensors."""

from __future__ import annotations

from typing import Any

import torch

from poolkit.model.interface import ModelInit, PoolingModel, contract_problems
from poolkit.model.weights import Weights, load_extra_weight_files, load_state_dict
from poolkit.registry.errors import UnknownArchitectureError


def resolve_architecture(host: Any, model_config: Any) -> tuple[str, type[PoolingModel]]:
    """(architecture name, class) for the first of the config's ``architectures`` a plugin registered,
    else for the first fallback whose ``accepts(config)`` takes it; a class off the model contract is refused.

    A Sentence Transformers checkpoint saved by another library's model class names it in
    ``config_sentence_transformers.json``'s ``model_type`` (PyLate: ``ColBERT``); when an architecture is
    registered under that name it comes first (unless ``hf_overrides`` names the architectures):
    ``config.json``'s architectures then describe the backbone.
    """
    archs = model_config.architectures
    registry = host.registry("architectures")
    st_type = model_config.st.model_type if model_config.st else None
    overridden = "architectures" in model_config.hf_overrides
    if st_type and not overridden and st_type in registry and not registry.get(st_type).meta.get("fallback"):
        archs = [st_type, *archs]
    for arch in archs:
        if arch in registry and not registry.get(arch).meta.get("fallback"):
            return arch, _on_contract(registry.load(arch), arch)
    for name in registry.names():
        if registry.get(name).meta.get("fallback") and archs:
            cls = registry.load(name)
            if cls.accepts(model_config.hf_config):
                return archs[0], _on_contract(cls, name)
    raise UnknownArchitectureError(
        f"Model architectures {archs} of '{model_config.served_name}' are not supported. Registered "
        f"architectures: {[n for n in registry.names() if not registry.get(n).meta.get('fallback')]}. "
        f"A plugin may provide it: install it and run 'poolkit plugins'."
    )


def _on_contract(cls: Any, name: str) -> type[PoolingModel]:
    problems = contract_problems(cls)
    if problems:
        where = f"class {cls.__module__}.{cls.__qualname__}" if isinstance(cls, type) else repr(cls)
        raise TypeError(f"architecture {name!r}: {where} {'; '.join(problems)} (docs/plugins.md, 'Architectures')")
    return cls


def build_model(model_cls: type[PoolingModel], model_config: Any, dtype: torch.dtype, device: torch.device,
                kernels: str, tokenizer: Any = None, quantization: str | None = None) -> PoolingModel:
    """``model_cls`` built from the checkpoint's tensors, on ``device``, in eval mode."""
    state = load_state_dict(model_config.path)  # + e.g. BGE-M3's sparse_linear.pt:
    state.update(load_extra_weight_files(model_config.path, model_cls.extra_weight_files))
    init = ModelInit(model_config.hf_config, Weights(state, device), dtype, device, kernels,
                     st=model_config.st, tokenizer=tokenizer, quantization=quantization)
    del state
    with torch.no_grad():  # built where it runs: prepacked CPU kernels only exist on CPU
        model = model_cls(init).eval()
    del init
    release_freed_memory()  # the checkpoint's tensors were copied into packed kernels
    return model


def release_freed_memory(collect: bool = True) -> None:
    """Hand freed heap pages back to the OS (glibc keeps them otherwise), so RSS stays the model's.

    ``collect`` runs the garbage collector first (after a model build); a streaming job trims only.
    """
    import ctypes
    import gc

    if collect:
        gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: nothing to do
        pass
