"""Read checkpoint tensors: safetensors (single or sharded) first, ``pytorch_model.bin`` as a fallback."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

_MISSING = object()


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


class Weights(dict):
    """A checkpoint's tensors by HF key name, handed to a model in :class:`poolkit.ModelInit`.

    A model pops what it uses with :meth:`take` (moved to the target device there, so the checkpoint
    is never copied to the device whole) and ends with :meth:`check_consumed`, which refuses tensors
    nothing used: a checkpoint of another architecture fails loudly instead of loading half.
    """

    def __init__(self, tensors: dict[str, torch.Tensor] | None = None, device: torch.device | str = "cpu") -> None:
        super().__init__(tensors or {})
        self.device = torch.device(device)

    def take(self, key: str, default: Any = _MISSING) -> torch.Tensor:
        """Pop tensor ``key`` (on the device); a missing key raises a ``KeyError`` naming similar keys,
        unless ``default`` is given."""
        if key not in self and default is not _MISSING:
            return default
        return take(self, key).to(self.device)

    def strip_prefix(self, *prefixes: str) -> Weights:
        """Drop the first of ``prefixes`` (e.g. ``bert.``) that some key has, in place; returns self."""
        stripped = strip_prefix(dict(self), prefixes)
        self.clear()
        self.update(stripped)
        return self

    def check_consumed(self, owner: str, ignore: tuple[str, ...] = ()) -> None:
        """Raise ``KeyError`` if tensors are left that the model did not take (keys starting with one of
        ``ignore`` are dropped: heads the task does not use)."""
        left = sorted(k for k in self if not k.startswith(ignore))
        self.clear()
        if left:
            raise KeyError(f"Unexpected tensors in a {owner} checkpoint: {left[:8]}"
                           f"{f' and {len(left) - 8} more' if len(left) > 8 else ''}")


def take(state: dict[str, torch.Tensor], key: str) -> torch.Tensor:
    """Pop one tensor, with an error that names the missing key and what the checkpoint has."""
    try:
        return dict.pop(state, key)
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
    """Tensors of the files ``names`` in ``model_dir`` (torch state dicts, or ``.safetensors``), keyed
    ``<file path without suffix, dots for slashes>.<key>``: ``sparse_linear.pt`` gives ``sparse_linear.weight``,
    ``1_Dense/model.safetensors`` gives ``1_Dense.model.linear.weight``.

    A missing file is skipped: the model class then raises a ``KeyError`` naming the key it lacks.
    """
    from safetensors.torch import load_file

    state: dict[str, torch.Tensor] = {}
    for name in names:
        path = Path(model_dir) / name
        if path.is_file():
            part = load_file(path) if path.suffix == ".safetensors" else torch.load(path, map_location="cpu",
                                                                                    weights_only=True)
            stem = Path(name).with_suffix("").as_posix().replace("/", ".")
            state.update({f"{stem}.{key}": value for key, value in part.items()})
    return state
