"""Reference libraries that cannot share the test environment, run in a subprocess of their own.

PyLate 1.6 (the reference for PyLate ColBERT checkpoints) needs sentence-transformers < 6, while the
test environment has the current one; it is installed once, without dependencies, into its own
directory (``.references/`` at the repository root, or ``$POOLKIT_REFERENCES``) that goes in front of
``sys.path`` only in the subprocess that runs it. Everything else it needs (torch, transformers,
pandas, pyarrow...) is the test environment's.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PYLATE = ["pylate==1.6.0", "sentence-transformers==5.3.0", "datasets==5.2.0", "dill==0.4.1",
          "multiprocess==0.70.19", "xxhash==4.1.0", "ujson==5.12.0"]


def _target(name: str, requirements: list[str]) -> Path:
    base = Path(os.environ.get("POOLKIT_REFERENCES", ROOT / ".references"))
    target = base / name
    marker = target / ".installed"
    if not marker.is_file() or marker.read_text() != "\n".join(requirements):
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--upgrade",
                        "--target", str(target), *requirements], check=True)
        marker.write_text("\n".join(requirements))
    return target


def run_pylate(spec: dict) -> dict:
    """Run ``pylate_encode.py`` on ``spec`` with PyLate importable; returns the JSON it writes."""
    target = _target("pylate-1.6.0", PYLATE)
    out = Path(spec["result"])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(target), str(ROOT)]), "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.run([sys.executable, str(Path(__file__).with_name("pylate_encode.py")), json.dumps(spec)],
                          env=env, capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        raise RuntimeError(f"the PyLate reference failed:\n{proc.stderr[-4000:]}")
    return json.loads(out.read_text())
