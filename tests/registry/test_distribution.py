"""A real separate distribution (tests/plugins/poolkit_test_plugin) installed in the test run with pip.

It adds an architecture and a pooler through its own ``poolkit.plugins`` entry point; nothing is
monkeypatched into a registry.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from poolkit import Engine, testing
from poolkit.registry import get_host

PLUGIN_SRC = Path(__file__).parent.parent / "plugins" / "poolkit_test_plugin"


@pytest.fixture(scope="module")
def installed_plugin(tmp_path_factory):
    target = tmp_path_factory.mktemp("site")
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                    "--target", str(target), str(PLUGIN_SRC)], check=True)
    return target


@pytest.fixture
def plugin_on_path(installed_plugin, monkeypatch, fresh_host):
    monkeypatch.syspath_prepend(str(installed_plugin))
    monkeypatch.delenv("POOLKIT_PLUGINS", raising=False)
    yield installed_plugin
    for name in [m for m in sys.modules if m.startswith("poolkit_test_plugin")]:
        del sys.modules[name]


def test_installed_plugin_is_listed_with_version_and_parts(plugin_on_path):
    [info] = [p for p in get_host().plugins if p.dist == "poolkit-test-plugin"]
    assert info.version == "0.2.0" and info.error is None
    assert info.registered == {"architectures": ["TestPluginBertModel"], "poolers": ["FIRST_LAST", "SIF_MEAN"]}


def test_plugin_architecture_and_pooler_serve_embeddings(plugin_on_path, tmp_path):
    path = testing.build_tiny_bert(tmp_path, architectures=["TestPluginBertModel"])
    engine = Engine(str(path))
    assert engine.architecture == "TestPluginBertModel" and engine.pooler_config.pooling_type == "FIRST_LAST"
    [out] = engine.embed(["a plugin pooled this"])
    # reference: transformers' BertModel on the same weights, first and last token averaged, normalized
    from transformers import AutoTokenizer, BertModel

    tok = AutoTokenizer.from_pretrained(path)
    ids = tok(["a plugin pooled this"], return_tensors="pt")
    with torch.no_grad():
        h = BertModel.from_pretrained(path).eval()(**ids).last_hidden_state[0]
    want = torch.nn.functional.normalize((h[0] + h[-1]) / 2, dim=-1)
    assert testing.max_abs_diff(out.outputs.data, want) <= 1e-5


def test_a_learned_pooler_reads_its_weights_from_the_model_directory(plugin_on_path, tmp_path):
    """Issue 22: a plugin pooler may read its model's config and weights (PoolingMethod.load): SIF_MEAN's
    per-token weights ship in the model directory; checked against numpy on the same weights."""
    import numpy as np
    from safetensors.torch import save_file
    from transformers import AutoTokenizer

    path = testing.build_tiny_bert(tmp_path / "sif")
    tok = AutoTokenizer.from_pretrained(path)
    weights = torch.rand(len(tok), generator=torch.Generator().manual_seed(0)) + 0.1
    save_file({"weight": weights}, str(path / "sif_weights.safetensors"))
    engine = Engine(str(path), pooler_config={"pooling_type": "SIF_MEAN"})
    texts = ["a learned pooler", "weights shipped beside the model, read once"]
    got = [o.outputs.data.numpy() for o in engine.embed(texts)]
    for text, hidden, vec in zip(texts, testing.reference_hidden_states(path, texts), got):
        w = weights.numpy()[tok(text)["input_ids"]]
        want = (w[:, None] * hidden.numpy()).sum(0) / w.sum()
        assert np.abs(vec - want / np.linalg.norm(want)).max() <= 1e-5
    (path / "sif_weights.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="sif_weights.safetensors"):
        Engine(str(path), pooler_config={"pooling_type": "SIF_MEAN"})
    save_file({"weight": weights[:5]}, str(path / "sif_weights.safetensors"))
    with pytest.raises(ValueError, match=r"needs \(\d+,\)"):
        Engine(str(path), pooler_config={"pooling_type": "SIF_MEAN"})


def test_allow_list_can_exclude_the_plugin(plugin_on_path, monkeypatch, tmp_path):
    monkeypatch.setenv("POOLKIT_PLUGINS", "builtin_models,builtin_poolers,builtin_tasks")
    path = testing.build_tiny_bert(tmp_path, architectures=["TestPluginBertModel"])
    with pytest.raises(KeyError, match=r"TestPluginBertModel.*Registered architectures: \[.*'BertModel'.*plugin") as err:
        Engine(str(path))
    assert "'TestPluginBertModel'" not in str(err.value).split("Registered architectures:")[1]


def test_cli_lists_the_installed_plugin(installed_plugin):
    env = {"PYTHONPATH": str(installed_plugin), "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-m", "poolkit.cli", "plugins", "--third-party"], env=env,
                         capture_output=True, text=True, check=True).stdout
    [row] = json.loads(out)
    assert row["distribution"] == "poolkit-test-plugin" and row["version"] == "0.2.0"
    assert row["registered"]["poolers"] == ["FIRST_LAST", "SIF_MEAN"] and row["builtin"] is False


@pytest.mark.parametrize("src", ["typo", "poolkit-test-plugin==0.2.0", "https://example.com/x.whl"])
def test_install_distribution_takes_local_paths_only(src, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    calls = []
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: calls.append(a))
    with pytest.raises(ValueError, match=r"not a local project directory.*never from a package index"):
        testing.install_distribution(src, tmp_path / "site")
    assert calls == []  # refused before pip runs


def test_install_distribution_never_consults_an_index(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(subprocess, "run", lambda args, **k: calls.append(args))
    testing.install_distribution(PLUGIN_SRC, tmp_path / "site")
    [args] = calls
    assert {"--no-index", "--no-deps", "--no-build-isolation"} <= set(args) and args[-1] == str(PLUGIN_SRC.resolve())
