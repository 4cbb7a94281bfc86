"""The built-in IO processors vs a direct computation on the same weights with transformers."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from poolkit import Engine, PoolingParams, testing
from poolkit.io_processor import IOProcessorError
from poolkit.io_plugins.long_text import LongTextEmbedding
from poolkit.io_plugins.sparse_lexical import LexicalWeights


def _bert(path):
    from transformers import AutoTokenizer, BertModel

    return AutoTokenizer.from_pretrained(path), BertModel.from_pretrained(path).eval()


# --- sparse-lexical ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def bge_m3_dir(tmp_path_factory):
    from tests.builtin_models.builders_roberta import build_tiny_bge_m3

    return build_tiny_bge_m3(tmp_path_factory.mktemp("bge_m3"), colbert_dim=16)


def _flag_embedding_sparse(path, text):
    """FlagEmbedding's BGEM3Model: relu(sparse_linear(h)), then _process_token_weights (ids -> max weight)."""
    from transformers import AutoTokenizer, XLMRobertaModel

    tok = AutoTokenizer.from_pretrained(path)
    model = XLMRobertaModel.from_pretrained(path).eval()
    head = torch.nn.Linear(model.config.hidden_size, 1)
    head.load_state_dict(torch.load(path / "sparse_linear.pt", weights_only=True))
    ids = tok(text)["input_ids"]
    with torch.no_grad():
        weights = torch.relu(head(model(input_ids=torch.tensor([ids])).last_hidden_state[0]))[:, 0]
    unused = {tok.cls_token_id, tok.eos_token_id, tok.pad_token_id, tok.unk_token_id}
    result: dict[int, float] = {}
    for w, i in zip(weights.tolist(), ids):
        if i not in unused and w > 0 and w > result.get(i, 0):
            result[i] = w
    return {tok.convert_ids_to_tokens(i): w for i, w in result.items()}, ids


def test_sparse_lexical_matches_flag_embedding(bge_m3_dir):
    engine = Engine(str(bge_m3_dir), hf_overrides={"architectures": ["BgeM3EmbeddingModel"]},
                    io_processor_plugin="sparse-lexical")
    from tests.corpus import varied_texts

    texts = varied_texts(6, seed=11) + ["the the the cat sat on the the mat"]  # repeated tokens: max-pooled
    outs = engine.encode(texts, task="plugin")
    seen_dropped = False
    for text, out in zip(texts, outs):
        want, ids = _flag_embedding_sparse(bge_m3_dir, text)
        assert isinstance(out, LexicalWeights) and set(out.weights) == set(want)
        assert all(abs(out.weights[t] - w) <= 1e-5 for t, w in want.items())
        assert list(out.weights.values()) == sorted(out.weights.values(), reverse=True)
        assert "<s>" not in out.weights and "</s>" not in out.weights
        seen_dropped |= len(want) < len(set(ids)) - 2  # some tokens got relu(...) == 0 and are left out
    assert seen_dropped
    [with_ids] = engine.encode({"text": texts[0], "return_token_ids": True}, task="plugin")
    assert sorted(with_ids.token_ids.values()) == sorted(with_ids.weights.values())
    body = engine.io_processor.to_response(outs[0])
    assert set(body) == {"weights"} and json.dumps(body)


def test_sparse_lexical_needs_a_one_weight_token_classifier(tiny_bert_dir):
    with pytest.raises(IOProcessorError, match=r"IO processor 'sparse-lexical' from plugin 'io_plugins' "
                                               r"\(distribution poolkit .*BgeM3EmbeddingModel"):
        Engine(str(tiny_bert_dir), io_processor_plugin="sparse-lexical")


# --- long-text --------------------------------------------------------------------------------------


LONG = " ".join(f"word{i % 37} and more text number {i}" for i in range(12)) + " the end"  # 86 tokens


def _chunked_reference(path, text, chunk, pooling):
    """Chunks of ``chunk`` content tokens, each [CLS] c [SEP] through BertModel, pooled, token-weighted mean."""
    tok, model = _bert(path)
    ids = tok(text, add_special_tokens=False)["input_ids"]
    vectors, weights = [], []
    for start in range(0, len(ids), chunk):
        c = ids[start:start + chunk]
        with torch.no_grad():
            h = model(input_ids=torch.tensor([[tok.cls_token_id, *c, tok.sep_token_id]])).last_hidden_state[0]
        vectors.append(h[0] if pooling == "CLS" else h.mean(0))
        weights.append(len(c))
    w = torch.tensor(weights, dtype=torch.float32)
    return F.normalize((torch.stack(vectors) * w[:, None]).sum(0) / w.sum(), dim=-1), len(ids)


@pytest.mark.parametrize("pooling", ["CLS", "MEAN"])
def test_long_text_matches_chunked_reference(tiny_bert_dir, pooling):
    engine = Engine(str(tiny_bert_dir), max_model_len=16, io_processor_plugin="long-text",
                    pooler_config={"pooling_type": pooling})
    [out] = engine.encode(LONG, task="plugin")
    want, n_tokens = _chunked_reference(tiny_bert_dir, LONG, 14, pooling)  # 16 - [CLS] - [SEP]
    assert isinstance(out, LongTextEmbedding)
    assert out.num_tokens == n_tokens and out.num_chunks == -(-n_tokens // 14) >= 5
    assert n_tokens % 14  # a shorter last chunk: the token-count weights matter
    assert testing.max_abs_diff(out.embedding, want) <= 1e-5
    with pytest.raises(ValueError, match="maximum context length is 16 tokens"):
        engine.embed(LONG)  # what long-text is for


def test_long_text_short_input_is_plain_embed_and_unnormalized_on_request(tiny_bert_dir):
    engine = Engine(str(tiny_bert_dir), max_model_len=16, io_processor_plugin="long-text")
    short, unnormalized = engine.encode(["a short text", {"text": LONG, "normalize": False}], task="plugin")
    assert short.num_chunks == 1
    assert testing.max_abs_diff(short.embedding, engine.embed("a short text")[0].outputs.data) <= 1e-6
    assert abs(float(unnormalized.embedding.norm()) - 1) > 1e-3
    assert engine.io_processor.to_response(short).keys() == {"embedding", "num_chunks", "num_tokens"}


def test_long_text_chunk_cap(tiny_bert_dir):
    engine = Engine(str(tiny_bert_dir), max_model_len=16, io_processor_plugin="long-text",
                    hf_overrides={"io_processor_options": {"max_chunks": 2}})
    ok, too_long = engine.encode_plugin_batch(["fits in two chunks of fourteen tokens", LONG])
    assert isinstance(ok, LongTextEmbedding)
    assert isinstance(too_long, IOProcessorError) and too_long.client_error and too_long.stage == "pre_process"
    assert "more than max_chunks=2" in str(too_long) and "IO processor 'long-text'" in str(too_long)


# --- multi-vector-matryoshka ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def matryoshka_dir(tmp_path_factory):
    return testing.build_tiny_bert(tmp_path_factory.mktemp("mrl"), matryoshka_dimensions=[32, 16, 8])


def test_matryoshka_vectors_match_truncated_reference(matryoshka_dir):
    engine = Engine(str(matryoshka_dir), io_processor_plugin="multi-vector-matryoshka")
    texts = ["nested dolls", "one pass, several sizes of embedding"]
    outs = engine.encode([texts[0], {"text": texts[1], "dimensions": [8, 16]}], task="plugin")
    tok, model = _bert(matryoshka_dir)
    for text, out, dims in zip(texts, outs, ([32, 16, 8], [16, 8])):
        assert list(out.vectors) == dims
        with torch.no_grad():
            cls = model(**tok(text, return_tensors="pt")).last_hidden_state[0, 0]
        for d in dims:
            assert testing.max_abs_diff(out.vectors[d], F.normalize(cls[:d], dim=-1)) <= 1e-5
            same = engine.embed(text, PoolingParams(dimensions=d))[0].outputs.data  # the embed task agrees
            assert testing.max_abs_diff(out.vectors[d], same) <= 1e-5
    body = engine.io_processor.to_response(outs[1])
    assert json.loads(json.dumps(body))["vectors"].keys() == {"16", "8"}
    [bad] = engine.encode_plugin_batch([{"text": "x", "dimensions": [12]}])
    assert isinstance(bad, IOProcessorError) and "not among the model's matryoshka_dimensions" in str(bad)


def test_long_text_far_over_the_cap_is_refused_from_a_prefix(tiny_bert_dir, monkeypatch):
    """A text far longer than max_chunks allows is refused without tokenizing all of it."""
    engine = Engine(str(tiny_bert_dir), max_model_len=16, io_processor_plugin="long-text",
                    hf_overrides={"io_processor_options": {"max_chunks": 2}})
    huge = "many words of text " * 20000  # 380,000 characters
    seen = []
    tokenizer = engine.io_processor.processor.ctx.tokenizer
    real = type(tokenizer).__call__
    monkeypatch.setattr(type(tokenizer), "__call__", lambda self, text, *a, **k: (
        seen.append(len(text) if isinstance(text, str) else 0), real(self, text, *a, **k))[1])
    (too_long,) = engine.encode_plugin_batch([huge])
    assert isinstance(too_long, IOProcessorError) and "more than 28 tokens" in str(too_long)
    assert max(seen) < 10_000
