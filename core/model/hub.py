"""Turn a ``model`` argument into a local directory: a path, the Hugging Face cache, or the hub."""

from __future__ import annotations

import os
from pathlib import Path

# Files a pooling model may need; weights in other formats (.onnx, .h5, flax) are never fetched.
ALLOW_PATTERNS = ["*.json", "*.txt", "*.model", "*.safetensors", "*.bin", "*.pt", "*.tiktoken", "*/*.json",
                  "*/*.safetensors", "*/*.bin"]


def resolve_model_dir(model: str | os.PathLike[str], revision: str | None = None) -> Path:
    """A directory holding ``config.json``: ``model`` itself, else a cached or downloaded hub snapshot.

    The cache is tried first (no network); the hub only when ``HF_HUB_OFFLINE`` is not set.
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
