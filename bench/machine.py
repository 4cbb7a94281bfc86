"""What every bench result records about the run: machine, versions, commit, load (stdlib + torch)."""

from __future__ import annotations

import os
import platform
import subprocess
from datetime import datetime, timezone
from importlib.metadata import version
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


def environment(packages: tuple[str, ...] = (), **extra: Any) -> dict[str, Any]:
    """The run's environment; ``packages`` adds their installed versions (keyed with ``_`` for ``-``)."""
    import torch

    cpuinfo = Path("/proc/cpuinfo")
    cpu = next((line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines()
                if line.startswith("model name")), platform.processor()) if cpuinfo.exists() else ""
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=HERE, capture_output=True, text=True).stdout.strip()
        dirty = bool(subprocess.run(["git", "status", "--porcelain"], cwd=HERE, capture_output=True, text=True).stdout)
    except OSError:
        commit, dirty = "", False
    return {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "cpu": cpu, "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(), "python": platform.python_version(), "torch": torch.__version__,
        "poolkit": version("poolkit"), **{p.replace("-", "_"): version(p) for p in packages}, **extra,
        "git_commit": commit, "git_dirty": dirty,
        "loadavg_at_start": os.getloadavg(),  # others' load on a shared machine skews every timing
    }
