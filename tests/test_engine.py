"""Engine behaviour on a tiny random BERT: prompt shapes, batching, truncation, errors, configuration."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from poolkit import Engine, PoolingParams, testing
from poolkit.batch import make_batches


@pytest.fixture(scope="module")
def engine(tiny_bert_dir):
    return Engine(str(tiny_bert_dir), max_batch_tokens=256)


def _reference_cls(path, texts):
    """transformers' BertModel, CLS token, normalized: the default for a bare BertModel (no ST files)."""
    from transformers import AutoTokenizer, BertModel

    tok = AutoTokenizer.from_pretrained(path)
    model = BertModel.from_pretrained(path).eval()
    enc = tok(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        return torch.nn.functional.normalize(model(**enc).last_hidden_state[:, 0], dim=-1)


def test_outputs_match_transformers_in_input_order(engine, tiny_bert_dir):
    texts = ["short", "a somewhat longer text about pooling models", "x", "mid length text here"]
    outs = engine.embed(texts)
    assert [o.prompt_token_ids for o in outs] == [engine.tokenizer(t)["input_ids"] for t in texts]
    want = _reference_cls(tiny_bert_dir, texts)
    for o, w in zip(outs, want):
        assert o.finished and isinstance(o.request_id, str)
        assert len(o.outputs.embedding) == 32
        assert testing.max_abs_diff(o.outputs.data, w) <= 1e-5


def test_prompt_shapes(engine):
    ids = engine.tokenizer("hello there")["input_ids"]
    base = engine.embed("hello there")[0].outputs.data
    for prompts in (ids, [ids], {"prompt_token_ids": ids}, [{"prompt_token_ids": ids}], {"prompt": "hello there"}):
        [out] = engine.embed(prompts)
        assert testing.max_abs_diff(out.outputs.data, base) == 0
    assert engine.embed([]) == []


@pytest.mark.parametrize("bad", [None, 3, [1.5], ["ok", 7], [["a"]], {"text": "x"}])
def test_non_string_prompt_is_a_type_error(engine, bad):
    with pytest.raises(TypeError, match="prompt"):
        engine.embed(bad)


def test_batch_independence(engine):
    texts = [("word " * n).strip() for n in (1, 3, 9, 27, 81, 120)] + ["other", "第二个 文本", "🎉"]
    alone = [engine.embed(t)[0].outputs.data for t in texts]
    together = [o.outputs.data for o in engine.embed(texts)]
    shuffled = [o.outputs.data for o in engine.embed(texts[::-1])][::-1]
    for a, b, c in zip(alone, together, shuffled):
        assert testing.max_abs_diff(a, b) <= 1e-6 and testing.max_abs_diff(a, c) <= 1e-6


def test_token_budget_batches():
    lengths = [5, 100, 7, 50, 50, 300, 1]
    batches = make_batches(lengths, 128)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    for b in batches:
        assert len(b) == 1 or len(b) * max(lengths[i] for i in b) <= 128
    assert [5] in batches  # longer than the budget: alone


def test_too_long_input_is_an_error_naming_length_and_limit(tiny_bert_dir):
    engine = Engine(str(tiny_bert_dir), max_model_len=16)
    with pytest.raises(ValueError, match=r"maximum context length is 16 tokens. However, you requested 22 tokens in the input \(prompt 1\)"):
        engine.embed(["ok", "word " * 20])
    [out] = engine.embed(["word " * 20], truncate_prompt_tokens=-1)
    assert len(out.prompt_token_ids) == 16 and out.prompt_token_ids[-1] == engine.tokenizer.sep_token_id
    [out] = engine.embed(["word " * 20], PoolingParams(truncate_prompt_tokens=5))
    assert len(out.prompt_token_ids) == 5
    with pytest.raises(ValueError, match="larger than the model's max_model_len=16"):
        engine.embed("x", truncate_prompt_tokens=100)


def test_token_ids_outside_vocabulary(engine):
    with pytest.raises(ValueError, match="outside the vocabulary"):
        engine.embed([[101, 99999999, 102]])


def test_matryoshka_refused_with_the_exact_message(engine, tiny_bert_dir):
    msg = (f'Model "{tiny_bert_dir}" does not support matryoshka representation, '
           f"changing output dimensions will lead to poor results.")
    with pytest.raises(ValueError) as err:
        engine.embed("x", PoolingParams(dimensions=8))
    assert str(err.value) == msg


def test_matryoshka_truncates_then_normalizes(tiny_bert_dir):
    engine = Engine(str(tiny_bert_dir), hf_overrides={"matryoshka_dimensions": [8, 16]})
    full = engine.embed("hello", PoolingParams(normalize=False))[0].outputs.data
    [out] = engine.embed("hello", PoolingParams(dimensions=8))
    assert testing.max_abs_diff(out.outputs.data, torch.nn.functional.normalize(full[:8], dim=-1)) <= 1e-6
    with pytest.raises(ValueError, match=r"dimensions=12 is not one of this model's matryoshka_dimensions \[8, 16\]"):
        engine.embed("hello", PoolingParams(dimensions=12))
    any_dims = Engine(str(tiny_bert_dir), hf_overrides={"is_matryoshka": True})
    assert any_dims.embed("hello", PoolingParams(dimensions=12))[0].outputs.data.shape == (12,)


def test_token_embed(engine, tiny_bert_dir):
    from transformers import AutoTokenizer, BertModel

    [out] = engine.encode("tokens please", task="token_embed", pooling_params=PoolingParams(normalize=False))
    enc = AutoTokenizer.from_pretrained(tiny_bert_dir)("tokens please", return_tensors="pt")
    with torch.no_grad():
        want = BertModel.from_pretrained(tiny_bert_dir).eval()(**enc).last_hidden_state[0]
    assert out.outputs.data.shape == want.shape
    assert testing.max_abs_diff(out.outputs.data, want) <= 1e-5
    [normed] = engine.encode("tokens please", pooling_task="token_embed")
    assert torch.allclose(normed.outputs.data.norm(dim=-1), torch.ones(len(want)), atol=1e-5)


def test_unsupported_task_lists_supported(engine):
    with pytest.raises(KeyError, match=r"Task 'classify' is not supported.*Supported tasks: \['embed', 'token_embed'\]"):
        engine.encode("x", task="classify")


def test_unknown_architecture(tmp_path, tiny_bert_dir):
    shutil.copytree(tiny_bert_dir, tmp_path / "m")
    cfg = json.loads((tmp_path / "m" / "config.json").read_text())
    cfg["architectures"] = ["MadeUpModel"]
    (tmp_path / "m" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(KeyError, match=r"\['MadeUpModel'\].*Registered architectures: \[.*'BertModel'.*plugin may provide"):
        Engine(str(tmp_path / "m"))


def test_pooler_config_precedence(tmp_path, tiny_bert_dir):
    d = tmp_path / "st"
    shutil.copytree(tiny_bert_dir, d)
    (d / "modules.json").write_text(json.dumps([
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]))
    (d / "1_Pooling").mkdir()
    (d / "1_Pooling" / "config.json").write_text(json.dumps({"word_embedding_dimension": 32, "pooling_mode_mean_tokens": True}))
    assert Engine(str(tiny_bert_dir)).pooler_config.pooling_type == "CLS"  # model default
    st = Engine(str(d)).pooler_config
    assert (st.pooling_type, st.normalize) == ("MEAN", False)  # ST: mean, and no Normalize module
    user = Engine(str(d), pooler_config={"pooling_type": "LAST", "normalize": True}).pooler_config
    assert (user.pooling_type, user.normalize) == ("LAST", True)


def test_bad_arguments(tiny_bert_dir):
    with pytest.raises(ValueError, match="runner='generate'"):
        Engine(str(tiny_bert_dir), runner="generate")
    with pytest.raises(ValueError, match="dtype='float8'"):
        Engine(str(tiny_bert_dir), dtype="float8")
    with pytest.raises(FileNotFoundError, match="neither an existing directory nor a hub id"):
        Engine("/no/such/dir/anywhere")
    with pytest.raises(Exception, match="pooling_typo"):
        Engine(str(tiny_bert_dir), pooler_config={"pooling_typo": "MEAN"})


def test_hub_id_resolves_through_huggingface_hub(monkeypatch, tiny_bert_dir):
    calls = []

    def fake_snapshot_download(repo_id, revision=None, local_files_only=False, allow_patterns=None):
        calls.append((repo_id, revision, local_files_only))
        if local_files_only:
            raise FileNotFoundError("not cached")
        return str(tiny_bert_dir)

    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    engine = Engine("org/tiny-bert", revision="abc123")
    assert calls == [("org/tiny-bert", "abc123", True), ("org/tiny-bert", "abc123", False)]
    assert engine.embed("x")[0].outputs.data.shape == (32,)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    calls.clear()
    with pytest.raises(FileNotFoundError, match="HF_HUB_OFFLINE"):
        Engine("org/tiny-bert")
    assert calls == [("org/tiny-bert", None, True)]


def test_default_dimensions_in_pooler_config_are_checked(tiny_bert_dir):
    with pytest.raises(ValueError, match="does not support matryoshka representation"):
        Engine(str(tiny_bert_dir), pooler_config={"dimensions": 8}).embed("x")


def test_max_model_len_below_st_max_seq_length_truncates(minilm_dir):
    engine = Engine(str(minilm_dir), max_model_len=128)
    [out] = engine.embed("word " * 400)
    assert len(out.prompt_token_ids) == 128


def test_bad_text_and_truncation_are_request_errors(engine):
    """Issue 21: a lone surrogate is an InvalidRequestError (a ValueError) naming the input, not the tokenizer's
    TypeError; truncate_prompt_tokens=0 is refused (vLLM: -1 or >= 1); numbers are strict; "" embeds the
    special tokens alone (as SentenceTransformer.encode(""))."""
    import pydantic

    from poolkit import PoolingParams
    from poolkit.errors import InvalidRequestError

    with pytest.raises(InvalidRequestError, match=r"input 1 is not valid Unicode text.*U\+DC00\) at character 2"):
        engine.embed(["fine", "ab\udc00"])
    with pytest.raises(InvalidRequestError, match="instruction prompt"):
        engine.embed("fine", prompt="query\ud800: ")
    with pytest.raises(InvalidRequestError, match="at least 1, got 0"):
        engine.embed("fine", truncate_prompt_tokens=0)
    for bad in ({"truncate_prompt_tokens": 0}, {"dimensions": True}, {"dimensions": "8"}, {"normalize": "no"}):
        with pytest.raises(pydantic.ValidationError):
            PoolingParams(**bad)
    assert engine.embed("")[0].prompt_token_ids == engine.tokenizer("")["input_ids"]
    assert engine.embed("fine \U0001f389")[0].outputs.data.shape  # a real (paired) non-BMP character is fine
