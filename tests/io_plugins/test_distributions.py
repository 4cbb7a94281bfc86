"""Real third-party distributions, pip-installed into a directory of their own for this test run.

- examples/poolkit-plugin-example: an architecture, a pooler, a task and an IO processor, by entry
  points only, used through ``Engine.encode(task="plugin")`` and listed by ``poolkit plugins``;
- tests/plugins/poolkit_broken_io_plugin: one plugin that fails at import and IO processors that
  fail at run time, each reported by name while everything else keeps working.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from poolkit import Engine, testing
from poolkit.io_processor import IOProcessorError
from poolkit.registry import PluginLoadError, get_host

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "poolkit-plugin-example"
BROKEN = ROOT / "tests" / "plugins" / "poolkit_broken_io_plugin"


@pytest.fixture(scope="module")
def example_site(tmp_path_factory):
    return testing.install_distribution(EXAMPLE, tmp_path_factory.mktemp("example_site"))


@pytest.fixture(scope="module")
def broken_site(tmp_path_factory):
    return testing.install_distribution(BROKEN, tmp_path_factory.mktemp("broken_site"))


@pytest.fixture
def example(example_site, monkeypatch):
    monkeypatch.delenv("POOLKIT_PLUGINS", raising=False)
    with testing.distribution_on_path(example_site):
        yield


@pytest.fixture
def broken(broken_site, monkeypatch):
    monkeypatch.delenv("POOLKIT_PLUGINS", raising=False)
    monkeypatch.delenv("POOLKIT_STRICT_PLUGINS", raising=False)
    with testing.distribution_on_path(broken_site):
        yield


# --- the example plugin -----------------------------------------------------------------------------


def test_example_plugin_serves_the_plugin_task(example, tmp_path):
    from poolkit_plugin_example.testing import build_tiny_bow
    from transformers import AutoTokenizer

    path = build_tiny_bow(tmp_path / "bow")
    engine = Engine(str(path), io_processor_plugin="keywords")
    assert engine.architecture == "MeanBagOfWordsModel"
    assert engine.supported_tasks == ("embed", "token_embed", "token_norms", "plugin")
    text = "plugins extend poolkit without touching poolkit"
    [result] = engine.encode({"text": text, "top_k": 4}, task="plugin")
    # reference: the bag-of-words states straight from the checkpoint, the special tokens left out
    from safetensors.torch import load_file

    sd = load_file(str(path / "model.safetensors"))
    tok = AutoTokenizer.from_pretrained(path)
    ids = tok(text)["input_ids"][1:-1]
    norms = torch.tanh(sd["embeddings.weight"][ids] @ sd["proj.weight"].T + sd["proj.bias"]).norm(dim=-1)
    best = {}
    for i, n in zip(ids, norms.tolist()):
        best[i] = max(n, best.get(i, 0.0))
    top = sorted(best.items(), key=lambda kv: -kv[1])[:4]
    assert [k.token for k in result.keywords] == tok.convert_ids_to_tokens([i for i, _ in top])
    assert max(abs(k.score - s) for k, (_, s) in zip(result.keywords, top)) <= 1e-5

    # the plugin's pooler works on a built-in architecture too
    bert = testing.tiny_engine(tmp_path / "bert", pooler_config={"pooling_type": "MEAN_SQRT_LEN", "normalize": False})
    [h] = testing.reference_hidden_states(tmp_path / "bert", ["sum over sqrt len"])
    testing.assert_close_to_reference(bert.embed("sum over sqrt len"), [h.sum(0) / len(h) ** 0.5])


def test_example_plugin_is_listed_with_version_and_parts(example_site):
    env = {**os.environ, "PYTHONPATH": str(example_site)}
    env.pop("POOLKIT_PLUGINS", None)
    out = subprocess.run([sys.executable, "-m", "poolkit.cli", "plugins", "--third-party"], env=env,
                         capture_output=True, text=True, check=True).stdout
    [row] = [r for r in json.loads(out) if r["distribution"] == "poolkit-plugin-example"]
    assert row["version"] == "0.1.0" and row["error"] is None and row["builtin"] is False
    assert row["entry_point"] == "example = poolkit_plugin_example"
    assert row["registered"] == {"architectures": ["MeanBagOfWordsModel"], "poolers": ["MEAN_SQRT_LEN"],
                                 "tasks": ["token_norms"], "io_processors": ["keywords"]}


def test_plugin_model_type_loads_without_transformers_warning(example, tmp_path, capfd):
    """The example's config.json has model_type "mean_bag_of_words", which transformers does not know."""
    from poolkit_plugin_example.testing import build_tiny_bow

    path = build_tiny_bow(tmp_path / "bow")
    capfd.readouterr()
    engine = Engine(str(path))
    assert engine.embed("a plugin model")[0].outputs.data.numel() > 0
    assert "You are using a model of type" not in capfd.readouterr().err


# --- the broken plugins -----------------------------------------------------------------------------


def test_plugin_failing_at_import_is_named_and_the_rest_load(broken, tiny_bert_dir):
    with pytest.warns(RuntimeWarning, match=r"(?s)plugin 'broken_at_import' \(distribution poolkit-broken-io-plugin "
                                            r"0.3.0.*RuntimeError: this plugin is broken on purpose"):
        host = get_host()
    [failed] = host.failures()
    assert failed.name == "broken_at_import"
    faulty = [p for p in host.plugins if p.name == "faulty_io"][0]
    assert faulty.error is None and len(faulty.registered["io_processors"]) == 3
    engine = Engine(str(tiny_bert_dir), io_processor_plugin="long-text")  # built-ins unaffected
    assert engine.encode("works", task="plugin")[0].num_chunks == 1


def test_strict_mode_raises_on_the_broken_plugin(broken, monkeypatch):
    monkeypatch.setenv("POOLKIT_STRICT_PLUGINS", "1")
    with pytest.raises(PluginLoadError, match="plugin 'broken_at_import'"):
        get_host()


@pytest.mark.filterwarnings("ignore:poolkit. plugin 'broken_at_import'")
@pytest.mark.parametrize("name, stage", [("raises-in-pre-process", "pre_process"),
                                         ("raises-in-post-process", "post_process")])
def test_processor_raising_fails_only_its_request(broken, tiny_bert_dir, name, stage):
    engine = Engine(str(tiny_bert_dir), io_processor_plugin=name)
    results = engine.encode_plugin_batch(["one", "boom", "three"])
    for text, r in zip(["one", "three"], results[::2]):
        assert testing.max_abs_diff(r, engine.embed(text)[0].outputs.data) <= 1e-6
    err = results[1]
    assert isinstance(err, IOProcessorError) and err.stage == stage
    assert str(err).startswith(f"IO processor '{name}' from plugin 'faulty_io' (distribution poolkit-broken-io-plugin "
                               f"0.3.0, entry point poolkit_broken_io) failed in {stage} for request 1: ")


@pytest.mark.filterwarnings("ignore:poolkit. plugin 'broken_at_import'")
def test_processor_module_missing_is_named(broken, tiny_bert_dir):
    with pytest.raises(PluginLoadError, match=r"(?i)IO processor 'missing-module' from plugin 'faulty_io' "
                                              r"\(distribution poolkit-broken-io-plugin 0.3.0.*No module named"):
        Engine(str(tiny_bert_dir), io_processor_plugin="missing-module")
