"""Layers applied to a pooled vector: Sentence Transformers ``Dense`` modules, Matryoshka, normalize."""

from __future__ import annotations

import importlib

import torch
from torch import nn

from poolkit.config import DenseLayer
from poolkit.model.weights import load_state_dict


def _st_activation(qualname: str) -> nn.Module:
    """Instantiate a Dense module's ``activation_function``; only ``torch.nn.modules`` classes load."""
    module_name, _, cls_name = qualname.rpartition(".")
    if not module_name.startswith("torch.nn.modules"):
        raise ValueError(f"Dense activation {qualname!r} is not a torch.nn.modules class; refusing to import it")
    return getattr(importlib.import_module(module_name), cls_name)()


class DenseStack(nn.Module):
    """The ``2_Dense``... modules of a Sentence Transformers model, in order (empty for most models)."""

    def __init__(self, layers: list[DenseLayer]) -> None:
        super().__init__()
        mods: list[nn.Module] = []
        for layer in layers:
            linear = nn.Linear(layer.in_features, layer.out_features, bias=layer.bias)
            state = {k.removeprefix("linear."): v for k, v in load_state_dict(layer.path).items()}
            linear.load_state_dict(state)
            mods += [linear, _st_activation(layer.activation)]
        self.layers = nn.Sequential(*mods)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x) if len(self.layers) else x


def matryoshka_truncate(x: torch.Tensor, dimensions: int | None) -> torch.Tensor:
    """Keep the first ``dimensions`` features (before normalizing, as vLLM does)."""
    return x if dimensions is None else x[..., :dimensions]
