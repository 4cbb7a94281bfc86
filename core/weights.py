"""Read checkpoint tensors: safetensors (single or sharded) first, ``pytorch_model.bin`` as a fallback."""

from __future__ import annotations

import json
from pathlib import Path

import torch


def load_state_dict(model_dir: str | Path) -> dict[str, torch.Tensor]:
    """All tensors of the checkpoint in ``model_dir``, keyed by their names in the file."""
    from safetensors.torch import load_file

    d = Path(model_dir)
    if (d / "model.safetensors").is_file():
        return load_file(d / "model.safetensors")
    if (d / "model.safetensors.index.json").is_file():
        shards = sorted(set(json.loads((d / "model.safetensors.index.json").read_text())["weight_map"].values()))
        state: dict[str, torch.Tensor] = {}
        for shard in shards:
            state.update(load_file(d / shard))
        return state
    if (d / "pytorch_model.bin").is_file():
        return torch.load(d / "pytorch_model.bin", map_location="cpu", weights_only=True)
    raise FileNotFoundError(
        f"No weights in {d}: expected model.safetensors, model.safetensors.index.json or pytorch_model.bin"
    )


def take(state: dict[str, torch.Tensor], key: str) -> torch.Tensor:
    """Pop one tensor, with an error that names the missing key and what the checkpoint has."""
    try:
        return state.pop(key)
    except KeyError:
        near = sorted(k for k in state if k.split(".")[-1] == key.split(".")[-1])[:5]
        raise KeyError(f"Checkpoint has no tensor '{key}' (similar: {near})") from None


def strip_prefix(state: dict[str, torch.Tensor], prefixes: tuple[str, ...]) -> dict[str, torch.Tensor]:
    """Drop a wrapper prefix such as ``bert.`` that task heads add in front of the encoder's keys."""
    for prefix in prefixes:
        if any(k.startswith(prefix) for k in state):
            return {(k[len(prefix):] if k.startswith(prefix) else k): v for k, v in state.items()}
    return state


def load_extra_weight_files(model_dir: str | Path, names: tuple[str, ...]) -> dict[str, torch.Tensor]:
    """Tensors of the torch state-dict files ``names`` in ``model_dir``, keyed ``<file stem>.<key>``.

    A missing file is skipped: the model class then raises a ``KeyError`` naming the key it lacks.
    """
    state: dict[str, torch.Tensor] = {}
    for name in names:
        path = Path(model_dir) / name
        if path.is_file():
            part = torch.load(path, map_location="cpu", weights_only=True)
            state.update({f"{path.stem}.{key}": value for key, value in part.items()})
    return state
