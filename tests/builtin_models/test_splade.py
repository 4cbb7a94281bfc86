"""SPLADE (BertForMaskedLM + SpladePooling) vs Sentence Transformers' SparseEncoder.encode on the same
random weights (fp32), offline and through the server.

The reference runs padded batches through transformers' BertForMaskedLM and SpladePooling's masked
max/sum; poolkit runs packed batches and its own MLM head, chunked over tokens. Tolerance: max abs
diff <= 1e-4 x max(1, largest reference entry). Max-pooled entries stay below 1 and differ by 8e-7;
sum-pooled ones grow with the text (~97 for 302 tokens), and fp32 sums of 300 terms differ with
the order they are added in: 4.6e-5 there, while both sides are 2-4e-5 from a float64 reference.
"""

from __future__ import annotations

import httpx
import pytest
import torch

from poolkit import Engine, PoolingParams, testing
from poolkit.errors import InvalidRequestError, UnsupportedTaskError
from tests.builtin_models.builders_splade import build_tiny_mlm, save_as_sparse_encoder, sparse_encoder_reference

TOL = 1e-4
V = 30522
TEXTS = ["hello world", "SPLADE expands a query into weighted vocabulary terms", "x",
         "a much longer document " * 12]
VLLM = {"architectures": ["BertSpladeSparseEmbeddingModel"]}


@pytest.fixture(scope="module")
def mlm_dir(tmp_path_factory):
    return build_tiny_mlm(tmp_path_factory.mktemp("mlm"))


@pytest.fixture(scope="module")
def sparse_dirs(mlm_dir, tmp_path_factory):
    """(style, strategy) -> a SparseEncoder directory of the same weights."""
    return {(style, strategy): save_as_sparse_encoder(mlm_dir, tmp_path_factory.mktemp(f"se_{style}_{strategy}"),
                                                      strategy=strategy, style=style)
            for style in ("new", "old") for strategy in ("max", "sum")}


@pytest.fixture(scope="module")
def references(sparse_dirs):
    return {key: sparse_encoder_reference(path, TEXTS) for key, path in sparse_dirs.items()}


def _vectors(outputs) -> torch.Tensor:
    return torch.stack([o.outputs.data for o in outputs])


def _assert_close(got: torch.Tensor, ref: torch.Tensor) -> None:
    assert got.shape == ref.shape
    diff, scale = testing.max_abs_diff(got, ref), max(1.0, float(ref.abs().max()))
    assert diff <= TOL * scale, f"max abs diff {diff:.3g} > {TOL:g} x {scale:.3g}"


def _assert_reference_is_sparse_and_varies(ref: torch.Tensor) -> None:
    """The comparison can fail: most entries are 0, some are not, and the texts differ."""
    nonzero = (ref > 0).sum(1)
    assert bool((nonzero > 100).all() and (nonzero < V // 4).all()), nonzero
    assert testing.max_abs_diff(ref[0], ref[1]) > 0.1


@pytest.mark.parametrize("strategy", ["max", "sum"])
@pytest.mark.parametrize("style", ["new", "old"])
def test_embed_matches_sparse_encoder(sparse_dirs, references, style, strategy):
    engine = Engine(str(sparse_dirs[style, strategy]))
    assert engine.architecture == "BertForMaskedLM"
    assert engine.pooler_config.pooling_type == f"SPLADE_{strategy.upper()}"
    ref = references[style, strategy]
    _assert_reference_is_sparse_and_varies(ref)
    got = _vectors(engine.embed(TEXTS))
    assert got.shape == (len(TEXTS), V)
    _assert_close(got, ref)
    assert not torch.allclose(got.norm(dim=1), torch.ones(len(TEXTS)), atol=0.1)  # not normalized, as SparseEncoder
    normalized = _vectors(engine.embed(TEXTS, PoolingParams(normalize=True)))  # a request may ask for it
    _assert_close(normalized, torch.nn.functional.normalize(ref, dim=1))
    configured = Engine(str(sparse_dirs[style, strategy]), pooler_config={"normalize": True})  # and the config
    _assert_close(_vectors(configured.embed(TEXTS)), torch.nn.functional.normalize(ref, dim=1))


def test_max_and_sum_differ(references):
    assert testing.max_abs_diff(references["new", "max"], references["new", "sum"]) > 1.0


def test_vllm_architecture_name(mlm_dir, sparse_dirs, references):
    """hf_overrides with vLLM's name: SPLADE max on a directory without ST files, un-normalized;
    on a SparseEncoder directory its SpladePooling strategy still decides."""
    bare = Engine(str(mlm_dir), hf_overrides=VLLM)
    assert bare.architecture == "BertSpladeSparseEmbeddingModel" and bare.pooler_config.pooling_type == "SPLADE_MAX"
    _assert_close(_vectors(bare.embed(TEXTS)), references["new", "max"])
    summed = Engine(str(sparse_dirs["old", "sum"]), hf_overrides=VLLM)
    _assert_close(_vectors(summed.embed(TEXTS)), references["old", "sum"])
    chosen = Engine(str(mlm_dir), hf_overrides=VLLM, pooler_config={"pooling_type": "SPLADE_SUM"})
    _assert_close(_vectors(chosen.embed(TEXTS)), references["new", "sum"])


@pytest.mark.parametrize("strategy", ["max", "sum"])
def test_chunked_logits_equal_unchunked_and_stay_bounded(sparse_dirs, references, strategy):
    """Chunks of 7 tokens cut through sequences; the head never sees more than 7 rows at a time."""
    long_text = "token " * 300  # 302 tokens: 44 chunks
    texts = [*TEXTS, long_text]
    path = sparse_dirs["new", strategy]
    whole = Engine(str(path), max_batch_tokens=4096)
    whole.task("embed").method.chunk_tokens = 10**6  # one chunk per batch
    chunked = Engine(str(path), max_batch_tokens=4096)
    method = chunked.task("embed").method
    method.chunk_tokens = 7
    seen: list[int] = []
    head = method.mlm_logits
    method.mlm_logits = lambda h: seen.append(h.shape[0]) or head(h)
    outputs = chunked.embed(texts)
    got, want = _vectors(outputs), _vectors(whole.embed(texts))
    assert max(seen) <= 7 and sum(seen) == sum(len(o.prompt_token_ids) for o in outputs) > 300
    assert testing.max_abs_diff(got, want) <= 1e-6 * max(1.0, float(want.max()))  # only the matmul shapes differ
    ref = torch.cat([references["new", strategy], sparse_encoder_reference(path, [long_text])])
    _assert_close(got, ref)


@pytest.mark.parametrize("strategy", ["max", "sum"])
def test_excluded_prompt_tokens_are_not_pooled(sparse_dirs, strategy):
    """include_prompt false: the instruction's tokens ([CLS] included, as ST counts them) are left out;
    reference: transformers' MLM logits of the whole input, pooled over the remaining rows by hand."""
    from transformers import BertForMaskedLM

    path = sparse_dirs["new", strategy]
    engine = Engine(str(path), pooler_config={"include_prompt": False})
    [out] = engine.embed(TEXTS[1], prompt="query: ")
    skip = len(engine.tokenizer("query: ")["input_ids"]) - 1
    with torch.no_grad():
        logits = BertForMaskedLM.from_pretrained(path).eval()(input_ids=torch.tensor([out.prompt_token_ids])).logits[0]
    scores = torch.log1p(torch.relu(logits))
    pool = (lambda x: x.amax(0)) if strategy == "max" else (lambda x: x.sum(0))
    assert skip == 3  # [CLS] query :
    _assert_close(out.outputs.data, pool(scores[skip:]))
    assert testing.max_abs_diff(pool(scores[skip:]), pool(scores)) > 1e-2  # leaving the prompt out shows


def test_bf16_mode_stays_close(sparse_dirs):
    """bf16 matmuls (fp32 logits out of the head): within the families' bf16 bound of the fp32 vectors."""
    from tests.builtin_models.helpers import assert_bf16_close

    path = str(sparse_dirs["new", "sum"])
    fp32 = _vectors(Engine(path).embed(TEXTS))
    bf16 = _vectors(Engine(path, dtype="bfloat16").embed(TEXTS))
    assert_bf16_close(bf16, fp32)


def test_untied_decoder_weight(tmp_path):
    """A checkpoint that saves cls.predictions.decoder.weight uses it, not the word embeddings."""
    path = save_as_sparse_encoder(build_tiny_mlm(tmp_path / "mlm", seed=5, tie_word_embeddings=False),
                                  tmp_path / "se", style="new")
    from safetensors import safe_open

    with safe_open(str(path / "model.safetensors"), "pt") as f:
        assert "cls.predictions.decoder.weight" in set(f.keys())
    ref = sparse_encoder_reference(path, TEXTS)
    _assert_reference_is_sparse_and_varies(ref)
    _assert_close(_vectors(Engine(str(path)).embed(TEXTS)), ref)


def test_plain_masked_lm_embeds_hidden_states(mlm_dir):
    """A BertForMaskedLM without SpladePooling (bert-base-uncased) embeds like BertModel: normalized [CLS]."""
    from transformers import BertForMaskedLM

    engine = Engine(str(mlm_dir))
    assert engine.pooler_config.pooling_type == "CLS" and engine.supported_tasks == ("embed", "token_embed")
    hf = BertForMaskedLM.from_pretrained(mlm_dir).eval()
    for text, out in zip(TEXTS, engine.embed(TEXTS)):
        with torch.no_grad():
            h = hf(**engine.tokenizer(text, return_tensors="pt"), output_hidden_states=True).hidden_states[-1][0]
        assert testing.max_abs_diff(out.outputs.data, torch.nn.functional.normalize(h[0], dim=0)) <= 1e-5


def test_bad_requests_and_configurations(sparse_dirs, tiny_bert_dir, tmp_path):
    engine = Engine(str(sparse_dirs["new", "max"]))
    with pytest.raises(InvalidRequestError, match="does not support matryoshka"):
        engine.embed("x", PoolingParams(dimensions=8))
    with pytest.raises(UnsupportedTaskError, match="Task 'classify' is not supported"):
        engine.classify("x")
    with pytest.raises(ValueError, match="'SPLADE_MAX' pools a masked-LM head's vocabulary logits; "
                                         "BertForEmbedding has none"):
        Engine(str(tiny_bert_dir), pooler_config={"pooling_type": "SPLADE_MAX"})
    opensearch = save_as_sparse_encoder(sparse_dirs["new", "max"], tmp_path / "os", style="old",
                                        activation="log1p_relu")
    with pytest.raises(ValueError, match="SpladePooling activation_function 'log1p_relu' is not supported"):
        Engine(str(opensearch))


# --- through the server ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(sparse_dirs):
    from poolkit.server.app import create_app
    from tests.server.conftest import LiveServer

    engines = {"splade": Engine(str(sparse_dirs["new", "max"]), io_processor_plugin="sparse-lexical")}
    live = LiveServer(create_app(lambda: engines))
    yield live
    live.stop()


def _post(server, path, **body):
    return httpx.post(server.url + path, json=body, timeout=60)


def test_server_embeddings_and_pooling_return_the_vocabulary_vector(server, references):
    ref = references["new", "max"]
    r = _post(server, "/v1/embeddings", model="splade", input=TEXTS[:2])
    assert r.status_code == 200, r.text
    got = torch.tensor([d["embedding"] for d in r.json()["data"]])
    _assert_close(got, ref[:2])
    r = _post(server, "/pooling", model="splade", input=TEXTS[2], task="embed")
    assert r.status_code == 200, r.text
    _assert_close(torch.tensor(r.json()["data"][0]["data"]), ref[2])
    bad = _post(server, "/v1/embeddings", model="splade", input="x", dimensions=8)
    assert bad.status_code == 400 and "matryoshka" in bad.json()["message"]


def test_server_sparse_lexical_plugin(server, sparse_dirs):
    from sentence_transformers import SparseEncoder

    st = SparseEncoder(str(sparse_dirs["new", "max"]), device="cpu")
    r = _post(server, "/pooling", model="splade", task="plugin", data={"text": TEXTS[1], "top_k": 8})
    assert r.status_code == 200, r.text
    got = r.json()["data"]["weights"]
    want = st.decode(st.encode(TEXTS[1], convert_to_tensor=True), top_k=8)
    assert list(got) == [t for t, _ in want]
    assert all(abs(got[t] - w) <= TOL for t, w in want)
    bad = _post(server, "/pooling", model="splade", task="plugin", data={"text": "x", "top_k": 0})
    assert bad.status_code == 400 and "top_k" in bad.json()["message"], bad.text
