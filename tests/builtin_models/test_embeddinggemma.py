"""EmbeddingGemma (``Gemma3TextModel``, bidirectional): the native family vs Sentence Transformers and transformers.

The checkpoint (``builders_gemma3.py``) is EmbeddingGemma's layout at toy size: layers sliding,
full, sliding with a window of 8 in config.json (transformers: ``|i - j| < 5``, 4 tokens each
side), so most test texts (10 to 80 tokens) are longer than the band; Sentence Transformers'
mean -> Dense 64->256 -> Dense 256->64 -> Normalize, and EmbeddingGemma's prompts.
References: ``SentenceTransformer(dir).encode`` (the embeddings), transformers' eager
``Gemma3TextModel`` (hidden states), both fp32 on the same random weights.
"""

from __future__ import annotations

import httpx
import pytest
import torch
from safetensors.torch import load_file

from poolkit import Engine, testing
from poolkit.builtin_models.gemma3 import Gemma3TextEncoder
from poolkit.builtin_models.transformers_fallback import TransformersFallback
from poolkit.errors import InvalidRequestError
from tests.builtin_models.builders_gemma3 import PROMPTS, build_embeddinggemma, build_tiny_gemma3
from tests.builtin_models.helpers import PARITY_TOL, model_init, native, reference_hidden
from tests.corpus import SENTENCES

TEXTS = [*SENTENCES[:12], "a", "word " * 60, "The window is eight tokens wide, so this sentence is longer than it is."]
WINDOW = 4  # tokens each side, from config.json's sliding_window=8


@pytest.fixture(scope="module")
def gemma_dir(tmp_path_factory):
    return build_embeddinggemma(tmp_path_factory.mktemp("embeddinggemma"))


@pytest.fixture(scope="module")
def st_model(gemma_dir):
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(gemma_dir), device="cpu")


@pytest.fixture(scope="module")
def engine(gemma_dir):
    return Engine(str(gemma_dir))


def _st(st_model, texts, **kwargs):
    return st_model.encode(texts, convert_to_tensor=True, batch_size=4, **kwargs).float()


def _embed(engine, texts, **kwargs):
    return torch.stack([o.outputs.data for o in engine.embed(texts, **kwargs)])


def _packed(ids):
    from poolkit.batch import PackedBatch

    return PackedBatch.from_token_lists(ids)


def _ids(path, texts):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path)(texts)["input_ids"]


def test_native_matches_sentence_transformers(engine, st_model):
    assert isinstance(engine.model, Gemma3TextEncoder)
    ref = _st(st_model, TEXTS)
    assert float(torch.pdist(ref).min()) > 0.05  # distinct texts give distinct vectors: the comparison can fail
    assert testing.max_abs_diff(_embed(engine, TEXTS), ref) <= PARITY_TOL


@pytest.mark.parametrize("prompt_name", ["query", "document"])
def test_prompts_give_sentence_transformers_results(engine, st_model, prompt_name):
    assert engine.model_config.st.prompts == PROMPTS
    ref = _st(st_model, TEXTS, prompt_name=prompt_name)
    got = _embed(engine, TEXTS, prompt_name=prompt_name)
    assert testing.max_abs_diff(got, ref) <= PARITY_TOL
    assert testing.max_abs_diff(got, _embed(engine, TEXTS)) > 1e-2  # the prompt changed the vectors
    assert len(engine.embed("x", prompt_name=prompt_name)[0].prompt_token_ids) > 3  # prompt tokens + [CLS] x [SEP]


def test_unknown_prompt_name_is_a_clear_request_error(engine):
    with pytest.raises(InvalidRequestError, match="'search_query' is not in this model's prompts"):
        engine.embed("x", prompt_name="search_query")


def test_dense_layers_applied_after_mean_pooling(gemma_dir, engine):
    """mean of transformers' hidden states -> both Dense weights -> L2 normalize, computed by hand."""
    from transformers import Gemma3TextModel

    hf = Gemma3TextModel.from_pretrained(gemma_dir, attn_implementation="eager").eval()
    ids = _ids(gemma_dir, TEXTS)
    means = torch.stack([h.mean(0) for h in reference_hidden(hf, ids)])  # (B, 64)
    up = load_file(gemma_dir / "2_Dense" / "model.safetensors")["linear.weight"]  # (256, 64)
    down = load_file(gemma_dir / "3_Dense" / "model.safetensors")["linear.weight"]  # (64, 256)
    assert up.shape == (256, 64) and down.shape == (64, 256)
    ref = torch.nn.functional.normalize(means @ up.T @ down.T, dim=-1)
    got = _embed(engine, TEXTS)
    assert testing.max_abs_diff(got, ref) <= PARITY_TOL
    assert testing.max_abs_diff(got, torch.nn.functional.normalize(means, dim=-1)) > 0.1  # the Dense layers matter


def test_hidden_states_match_transformers_with_the_window_in_effect(gemma_dir):
    """Every token's last hidden state vs transformers' (eager, padded batch); the band matters on these texts."""
    from transformers import Gemma3TextModel

    hf = Gemma3TextModel.from_pretrained(gemma_dir, attn_implementation="eager").eval()
    assert hf.config.sliding_window == WINDOW + 1 and hf.config.layer_types[0] == "sliding_attention"
    ids = _ids(gemma_dir, TEXTS)
    assert sum(len(s) > 2 * WINDOW + 1 for s in ids) >= 10
    ref = reference_hidden(hf, ids)
    model = native(None, gemma_dir)
    got = model(_packed(ids))
    assert testing.max_abs_diff(got, torch.cat(ref)) <= PARITY_TOL
    full = Gemma3TextModel.from_pretrained(gemma_dir, attn_implementation="eager",
                                           layer_types=["full_attention"] * 3).eval()
    assert testing.max_abs_diff(torch.cat(reference_hidden(full, ids)), torch.cat(ref)) > 0.05  # windowing matters


@pytest.mark.parametrize("bidirectional", [True, False], ids=["bidirectional", "causal"])
def test_other_gemma3_configs_match_transformers(tmp_path, bidirectional):
    """MQA (1 kv head), query_pre_attn_scalar != head_dim, linear RoPE scaling on the full layers; and the
    causal Gemma3 (sliding layers see the window's previous tokens only)."""
    from transformers import Gemma3TextModel

    path = build_tiny_gemma3(tmp_path, num_layers=4, num_kv_heads=1, sliding_window=6, bidirectional=bidirectional,
                             layer_types=["sliding_attention"] * 2 + ["full_attention", "sliding_attention"],
                             query_pre_attn_scalar=24, rope_scaling={"rope_type": "linear", "factor": 2.0}, seed=3)
    hf = Gemma3TextModel.from_pretrained(path, attn_implementation="eager").eval()
    assert hf.config.query_pre_attn_scalar == 24
    assert hf.config.rope_parameters["full_attention"]["rope_type"] == "linear"
    ids = _ids(path, TEXTS)
    model = native(None, path)
    assert model.default_pooling == ("MEAN" if bidirectional else "LAST")
    assert testing.max_abs_diff(model(_packed(ids)), torch.cat(reference_hidden(hf, ids))) <= PARITY_TOL


def test_transformers_fallback_matches_too(gemma_dir, st_model):
    """The transformers fallback (what the native family replaces) computes the same hidden states."""
    from poolkit.config import ModelConfig
    from poolkit.model.weights import load_state_dict

    cfg = ModelConfig.load(str(gemma_dir))
    fallback = TransformersFallback(model_init(cfg.hf_config, load_state_dict(gemma_dir))).eval()
    ids = _ids(gemma_dir, TEXTS)
    with torch.no_grad():
        got = fallback(_packed(ids))
    assert testing.max_abs_diff(got, native(None, gemma_dir)(_packed(ids))) <= PARITY_TOL


def test_bf16_close_to_fp32(gemma_dir, engine):
    bf16 = Engine(str(gemma_dir), dtype="bfloat16")
    assert bf16.model.layers[0].qkv.compute_dtype == torch.bfloat16
    got, ref = _embed(bf16, TEXTS, prompt_name="query"), _embed(engine, TEXTS, prompt_name="query")
    assert got.dtype == torch.float32
    assert float(torch.nn.functional.cosine_similarity(got, ref, dim=-1).min()) >= 0.999


def test_served_embedding_is_the_same_vector(engine, st_model):
    from poolkit.server.app import create_app
    from tests.server.conftest import LiveServer

    live = LiveServer(create_app(lambda: {"embeddinggemma": engine}))
    try:
        body = httpx.post(live.url + "/v1/embeddings", json={"input": TEXTS[:4]}).json()
        served = torch.tensor([d["embedding"] for d in body["data"]])
        assert served.shape == (4, 64)
        assert testing.max_abs_diff(served, _st(st_model, TEXTS[:4])) <= PARITY_TOL
        query = httpx.post(live.url + "/embed", json={"inputs": TEXTS[:2], "prompt_name": "query"}).json()
        assert testing.max_abs_diff(torch.tensor(query), _st(st_model, TEXTS[:2], prompt_name="query")) <= PARITY_TOL
    finally:
        live.stop()


@pytest.mark.parametrize("causal,window", [(False, None), (False, 3), (True, None), (True, 3)])
def test_grouped_query_packed_attention_equals_repeated_heads(causal, window):
    """``packed_attention(num_kv_heads=...)`` (kv heads as projected) = the same attention on repeated kv heads."""
    from poolkit.layers import AttentionPlan, packed_attention

    H, Hkv, D = 4, 2, 8
    lengths = [9, 3, 8, 1, 5]  # several chunks, padded ones among them
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(sum(lengths), h, D, generator=g) for h in (H, Hkv, Hkv))
    grouped = packed_attention(torch.cat([q, k, v], 1).flatten(1), AttentionPlan(lengths), H, causal, window,
                               num_kv_heads=Hkv)
    repeated = torch.cat([q, k.repeat_interleave(H // Hkv, 1), v.repeat_interleave(H // Hkv, 1)], 1).flatten(1)
    assert testing.max_abs_diff(grouped, packed_attention(repeated, AttentionPlan(lengths), H, causal, window)) <= 1e-6
    one = packed_attention(torch.cat([q, k, v], 1).flatten(1)[:9], AttentionPlan([9]), H, causal, window,
                           num_kv_heads=Hkv)  # a single sequence: the path without a gather
    assert testing.max_abs_diff(one, grouped[:9]) <= 1e-6
