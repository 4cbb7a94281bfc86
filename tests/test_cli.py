"""The ``poolkit`` command: embed to JSONL and .npy, plugins listing, help, clear errors."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from poolkit import Engine, testing
from poolkit.cli import main


def test_embed_texts_to_jsonl_on_stdout(tiny_bert_dir, capsys):
    assert main(["embed", "--model", str(tiny_bert_dir), "-q", "hello", "world"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    want = Engine(str(tiny_bert_dir)).embed(["hello", "world"])
    assert [r["index"] for r in rows] == [0, 1]
    for r, w in zip(rows, want):
        assert testing.max_abs_diff(torch.tensor(r["embedding"]), w.outputs.data) <= 1e-6


def test_embed_file_to_npy_with_progress_bar(tiny_bert_dir, tmp_path, capsys):
    texts = [f"line number {i} " + "word " * (i % 50) for i in range(300)]
    (tmp_path / "in.txt").write_text("\n".join(texts) + "\n")
    out = tmp_path / "out.npy"
    assert main(["embed", "--model", str(tiny_bert_dir), "--max-batch-tokens", "512", "-f", str(tmp_path / "in.txt"),
                 "-o", str(out)]) == 0
    err = capsys.readouterr().err
    assert "batch" in err and "wrote 300 embeddings of 32 dimensions" in err  # tqdm bar + summary on stderr
    vectors = np.load(out)
    want = torch.stack([o.outputs.data for o in Engine(str(tiny_bert_dir)).embed(texts)])
    assert vectors.shape == (300, 32) and testing.max_abs_diff(vectors, want) <= 1e-6


def test_embed_errors_are_one_line(tiny_bert_dir, capsys):
    assert main(["embed", "--model", str(tiny_bert_dir), "--dimensions", "8", "x"]) == 2
    assert "does not support matryoshka representation" in capsys.readouterr().err
    with pytest.raises(SystemExit, match="nothing to embed"):
        main(["embed", "--model", str(tiny_bert_dir)])


def test_help_reads_well():
    out = subprocess.run([sys.executable, "-m", "poolkit.cli", "--help"], capture_output=True, text=True).stdout
    assert "embed" in out and "plugins" in out and "Examples" in out
    out = subprocess.run([sys.executable, "-m", "poolkit.cli", "embed", "--help"], capture_output=True, text=True).stdout
    assert "--output" in out and "--dimensions" in out


def test_plugins_lists_builtins(capsys):
    assert main(["plugins"]) == 0
    rows = json.loads(capsys.readouterr().out)
    names = {r["name"]: r for r in rows}
    assert "BertModel" in names["builtin_models"]["registered"]["architectures"]
    assert names["builtin_models"]["builtin"] is True and names["builtin_models"]["version"]
