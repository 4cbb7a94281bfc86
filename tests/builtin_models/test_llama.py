"""The native packed Llama / Qwen2 / Qwen3 decoders vs transformers on the same random weights, fp32.

Every packed batch mixes lengths; each sequence is compared to transformers running it alone (no
padding), so max abs diff <= 1e-5 on last hidden states, last-token classification logits and the
Qwen3-Reranker yes/no score.
"""

from __future__ import annotations

import json

import pytest
import torch

from poolkit import testing
from poolkit.batch import PackedBatch
from poolkit.builtin_models.llama import Qwen3ForSequenceClassification
from poolkit.builtin_models.qwen3_reranker import format_qwen3_reranker_pair, resolve_classifier_from_token
from poolkit.config import ModelConfig
from poolkit.layers import rope_frequencies
from poolkit.model.weights import load_state_dict
from tests.builtin_models.builders_llama import EOS, SPECIAL_TOKENS, build_reward_checkpoint, build_tiny_decoder
from tests.builtin_models.helpers import PARITY_TOL, assert_bf16_close, model_init, native, native_class

LENGTHS = [1, 2, 5, 9, 17, 33, 34, 60, 3, 40]  # mixed lengths in one packed batch, some close
TOL = PARITY_TOL
LLAMA3_ROPE = {"rope_type": "llama3", "rope_theta": 5000.0, "factor": 8.0, "low_freq_factor": 1.0,
               "high_freq_factor": 4.0, "original_max_position_embeddings": 32}
YARN_ROPE = {"rope_type": "yarn", "rope_theta": 20000.0, "factor": 4.0, "original_max_position_embeddings": 64}

HIDDEN_CASES = {  # id -> (architecture, builder kwargs)
    "llama-mha": ("LlamaModel", dict(num_kv_heads=4)),
    "llama-gqa-bias": ("LlamaModel", dict(num_kv_heads=2, attention_bias=True, mlp_bias=True)),
    "llama-llama3-rope": ("LlamaModel", dict(num_kv_heads=2, rope_parameters=LLAMA3_ROPE)),
    "llama-linear-rope": ("LlamaModel", dict(rope_parameters={"rope_type": "linear", "rope_theta": 10000.0, "factor": 2.0})),
    "llama-causallm-mqa-tied": ("LlamaForCausalLM", dict(num_kv_heads=1, tie_word_embeddings=True)),
    "qwen2-gqa": ("Qwen2Model", dict(num_kv_heads=2)),
    "qwen2-causallm": ("Qwen2ForCausalLM", dict(num_kv_heads=4, rope_parameters={"rope_type": "default", "rope_theta": 1e6})),
    "qwen3-gqa-headdim32": ("Qwen3Model", dict(num_kv_heads=2, head_dim=32)),
    "qwen3-yarn-rope": ("Qwen3Model", dict(num_kv_heads=2, rope_parameters=YARN_ROPE)),
    "qwen3-causallm-tied-bias": ("Qwen3ForCausalLM", dict(num_kv_heads=2, tie_word_embeddings=True, attention_bias=True)),
}


def _random_ids(path, lengths=LENGTHS, seed=1):
    vocab = json.loads((path / "config.json").read_text())["vocab_size"]
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(len(SPECIAL_TOKENS), vocab, (n,), generator=g).tolist() for n in lengths]


def _native(path, *, kernels="auto", dtype=torch.float32, hf_overrides=None):
    return (native(None, path, kernels=kernels, dtype=dtype, hf_overrides=hf_overrides),
            ModelConfig.load(str(path), hf_overrides=hf_overrides))


def _hf(path, auto_class="AutoModel"):
    import transformers

    return getattr(transformers, auto_class).from_pretrained(path, attn_implementation="eager").eval()


def _hf_hidden(model, ids):
    """transformers' last hidden state of each sequence run alone."""
    base = model.base_model
    with torch.no_grad():
        return [base(input_ids=torch.tensor([s])).last_hidden_state[0] for s in ids]


def _packed_hidden(model, ids):
    batch = PackedBatch.from_token_lists(ids)
    with torch.no_grad():
        return model(batch), batch


@pytest.mark.parametrize("case", HIDDEN_CASES)
def test_last_hidden_state_matches_transformers(tmp_path, case):
    architecture, kwargs = HIDDEN_CASES[case]
    path = build_tiny_decoder(tmp_path, architecture, seed=len(case), **kwargs)
    ids = _random_ids(path)
    auto = "AutoModelForCausalLM" if architecture.endswith("ForCausalLM") else "AutoModel"
    want = _hf_hidden(_hf(path, auto), ids)
    model, _ = _native(path)
    assert model.is_generative == architecture.endswith("ForCausalLM")
    assert model.default_pooling == "LAST" and model.supported_tasks == ("embed", "token_embed")
    got, batch = _packed_hidden(model, ids)
    assert got.dtype == torch.float32 and got.shape == (sum(LENGTHS), model.hidden_size)
    for w, o in zip(want, got.split(batch.lengths)):
        assert o.shape == w.shape
        assert testing.max_abs_diff(o, w) <= TOL
    assert float(torch.cat(want).std()) > 0.3  # lively activations: the comparison can fail


@pytest.mark.parametrize("architecture", ["Qwen2Model", "Qwen3Model"])
def test_plain_kernels_match_too(tmp_path, architecture):
    path = build_tiny_decoder(tmp_path, architecture, num_kv_heads=2, num_layers=3, hidden_size=96, num_heads=6,
                              intermediate_size=160, seed=3)
    ids = _random_ids(path)
    want = _hf_hidden(_hf(path), ids)
    got, batch = _packed_hidden(_native(path, kernels="torch")[0], ids)
    for w, o in zip(want, got.split(batch.lengths)):
        assert testing.max_abs_diff(o, w) <= TOL


def test_transformers_4_style_rope_config(tmp_path):
    """``rope_theta`` / ``rope_scaling`` at the top of config.json (checkpoints saved before transformers 5)."""
    path = build_tiny_decoder(tmp_path, "LlamaModel", num_kv_heads=2, rope_parameters=LLAMA3_ROPE, seed=5)
    data = json.loads((path / "config.json").read_text())
    rope = data.pop("rope_parameters")
    data["rope_theta"] = rope.pop("rope_theta")
    data["rope_scaling"] = rope
    (path / "config.json").write_text(json.dumps(data))
    ids = _random_ids(path)
    want = _hf_hidden(_hf(path), ids)
    model, cfg = _native(path)
    assert cfg.hf_config.rope_parameters["rope_type"] == "llama3"
    got, batch = _packed_hidden(model, ids)
    for w, o in zip(want, got.split(batch.lengths)):
        assert testing.max_abs_diff(o, w) <= TOL


def test_default_rope_of_a_plain_config():
    from types import SimpleNamespace

    cfg = SimpleNamespace(rope_theta=500000.0, rope_scaling=None)
    inv_freq, scaling = rope_frequencies(cfg, 64)
    assert scaling == 1.0
    assert torch.allclose(inv_freq, 1.0 / 500000.0 ** (torch.arange(0, 64, 2).float() / 64))


@pytest.mark.parametrize("family", ["Llama", "Qwen2", "Qwen3"])
def test_classification_logits_match_transformers(tmp_path, family):
    architecture = f"{family}ForSequenceClassification"
    path = build_tiny_decoder(tmp_path, architecture, num_kv_heads=2, num_labels=3, seed=7)
    ids = _random_ids(path)  # no pad token inside: transformers' last non-pad token is the last token
    hf = _hf(path, "AutoModelForSequenceClassification")
    with torch.no_grad():
        want = torch.cat([hf(input_ids=torch.tensor([s])).logits for s in ids])  # (B, 3)
    model, _ = _native(path)
    assert model.supported_tasks == ("classify", "score") and model.default_pooling == "LAST"
    assert model.num_labels == 3 and model.id2label == {0: "class_0", 1: "class_1", 2: "class_2"}
    hidden, batch = _packed_hidden(model, ids)
    with torch.no_grad():
        got = model.classify(hidden[batch.cu_seqlens[1:] - 1])
    assert got.shape == want.shape
    assert testing.max_abs_diff(got, want) <= TOL
    assert float(want.std()) > 0.3


RERANKER_OVERRIDES = {"architectures": ["Qwen3ForSequenceClassification"], "classifier_from_token": ["no", "yes"],
                      "is_original_qwen3_reranker": True}
PAIRS = [
    ("What is the capital of China?", "The capital of China is Beijing."),
    ("Explain gravity", "Gravity is a force that attracts two bodies towards each other."),
    ("a", ""),
    ("How do I reset my password?", "Party time with friends! " * 6),
]


@pytest.mark.parametrize("tied", [True, False], ids=["tied", "lm_head"])
def test_qwen3_reranker_score_matches_causal_lm(tmp_path, tied):
    from transformers import AutoTokenizer

    path = build_tiny_decoder(tmp_path, "Qwen3ForCausalLM", num_kv_heads=2, tie_word_embeddings=tied, seed=11)
    tokenizer = AutoTokenizer.from_pretrained(path)
    no_id, yes_id = tokenizer.convert_tokens_to_ids(["no", "yes"])
    instructions = [None, "Judge relevance", None, "Find passwords"]
    ids = [tokenizer(format_qwen3_reranker_pair(q, d, ins), add_special_tokens=False)["input_ids"]
           for (q, d), ins in zip(PAIRS, instructions)]
    hf = _hf(path, "AutoModelForCausalLM")
    with torch.no_grad():
        logits = [hf(input_ids=torch.tensor([s])).logits[0, -1] for s in ids]  # (V,) each
    want = torch.stack([row[yes_id] - row[no_id] for row in logits])[:, None]  # (B, 1)

    cfg = ModelConfig.load(str(path), hf_overrides=RERANKER_OVERRIDES)
    resolve_classifier_from_token(cfg.hf_config, tokenizer)
    assert cfg.hf_config.classifier_from_token_ids == [no_id, yes_id]
    model = Qwen3ForSequenceClassification(model_init(cfg.hf_config, load_state_dict(path))).eval()
    assert model.num_labels == 1
    hidden, batch = _packed_hidden(model, ids)
    with torch.no_grad():
        got = model.classify(hidden[batch.cu_seqlens[1:] - 1])
    assert got.shape == want.shape
    assert testing.max_abs_diff(got, want) <= TOL
    assert float(want.std()) > 0.3
    # the model card's score: softmax over the [no, yes] logits, probability of yes
    card = torch.stack([torch.softmax(torch.stack([row[no_id], row[yes_id]]), 0)[1] for row in logits])
    assert torch.allclose(torch.sigmoid(got[:, 0]), card, atol=1e-6)


def test_qwen3_reranker_through_the_engine(tmp_path):
    """Engine.classify on formatted prompts, token ids given in hf_overrides: sigmoid = the model card's P(yes)."""
    from transformers import AutoTokenizer

    from poolkit import Engine

    path = build_tiny_decoder(tmp_path, "Qwen3ForCausalLM", num_kv_heads=2, tie_word_embeddings=True, seed=12)
    tokenizer = AutoTokenizer.from_pretrained(path)
    no_id, yes_id = tokenizer.convert_tokens_to_ids(["no", "yes"])
    prompts = [format_qwen3_reranker_pair(q, d) for q, d in PAIRS]
    hf = _hf(path, "AutoModelForCausalLM")
    with torch.no_grad():
        rows = [hf(input_ids=torch.tensor([tokenizer(p)["input_ids"]])).logits[0, -1] for p in prompts]
    card = torch.stack([torch.softmax(torch.stack([r[no_id], r[yes_id]]), 0)[1] for r in rows])
    engine = Engine(str(path), hf_overrides={**RERANKER_OVERRIDES, "classifier_from_token_ids": [no_id, yes_id]})
    assert engine.architecture == "Qwen3ForSequenceClassification"
    got = torch.tensor([o.outputs.probs[0] for o in engine.classify(prompts)])
    assert testing.max_abs_diff(got, card) <= TOL
    assert float(card.std()) > 0.05


def test_reranker_without_token_ids_says_how_to_get_them(tmp_path):
    path = build_tiny_decoder(tmp_path, "Qwen3ForCausalLM", num_layers=1, tie_word_embeddings=True)
    cfg = ModelConfig.load(str(path), hf_overrides=RERANKER_OVERRIDES)
    with pytest.raises(ValueError, match="classifier_from_token_ids"):
        Qwen3ForSequenceClassification(model_init(cfg.hf_config, load_state_dict(path)))


def test_reranker_prompt_is_the_model_cards():
    text = format_qwen3_reranker_pair("q?", "d.")
    assert text == (
        "<|im_start|>system\nJudge whether the Document meets the requirements based on the Query and the Instruct "
        "provided. Note that the answer can only be \"yes\" or \"no\".<|im_end|>\n<|im_start|>user\n"
        "<Instruct>: Given a web search query, retrieve relevant passages that answer the query\n"
        "<Query>: q?\n<Document>: d.<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
    )
    assert "<Instruct>: mine\n" in format_qwen3_reranker_pair("q", "d", "mine")


def test_engine_embeds_the_last_token(tmp_path):
    """Through the registry and Engine: a Qwen3-Embedding-like tokenizer appends <|endoftext|>; LAST pooling, normalized."""
    import torch.nn.functional as F
    from transformers import AutoTokenizer

    from poolkit import Engine

    path = build_tiny_decoder(tmp_path, "Qwen3Model", num_kv_heads=2, append_eos=True, seed=13)
    texts = ["What is the capital of China?", "Explain gravity", "a", "Party time with friends! " * 8]
    tokenizer = AutoTokenizer.from_pretrained(path)
    ids = [tokenizer(t)["input_ids"] for t in texts]
    assert all(s[-1] == EOS for s in ids)
    want = F.normalize(torch.stack([h[-1] for h in _hf_hidden(_hf(path), ids)]), dim=-1)
    engine = Engine(str(path), kernels="torch")
    assert engine.architecture == "Qwen3Model"
    outs = engine.embed(texts)
    assert [o.prompt_token_ids for o in outs] == ids
    got = torch.stack([o.outputs.data for o in outs])
    assert testing.max_abs_diff(got, want) <= TOL


def test_sliding_window_layers_run_within_the_window(tmp_path):
    path = build_tiny_decoder(tmp_path, "Qwen2Model", num_kv_heads=2, use_sliding_window=True, sliding_window=16,
                              max_window_layers=1, seed=17)
    model, _ = _native(path)
    assert model.model.sliding_window == 16
    ids = _random_ids(path, [16, 3, 9, 16, 1])
    want = _hf_hidden(_hf(path), ids)
    got, batch = _packed_hidden(model, ids)
    for w, o in zip(want, got.split(batch.lengths)):
        assert testing.max_abs_diff(o, w) <= TOL
    with pytest.raises(ValueError, match="sliding window"):
        _packed_hidden(model, _random_ids(path, [17]))


def test_bf16_mode_stays_close(tmp_path):
    path = build_tiny_decoder(tmp_path, "Qwen3Model", num_kv_heads=2, seed=19)
    ids = _random_ids(path)
    fp32, batch = _packed_hidden(_native(path)[0], ids)
    bf16, _ = _packed_hidden(_native(path, dtype=torch.bfloat16)[0], ids)
    last = batch.cu_seqlens[1:] - 1
    assert_bf16_close(bf16[last], fp32[last])  # the pooled (LAST) rows; BF16_MIN_COSINE's reason: helpers.py


def test_missing_tensor_names_the_key(tmp_path):
    path = build_tiny_decoder(tmp_path, "Qwen3Model", num_layers=2)
    state = load_state_dict(path)
    del state["layers.1.self_attn.k_norm.weight"]
    with pytest.raises(KeyError, match="layers.1.self_attn.k_norm.weight"):
        native(None, path, state=state)


def test_unexpected_tensors_are_refused(tmp_path):
    """A Qwen2 checkpoint (q/k/v biases) read as Llama without attention_bias leaves tensors unused."""
    path = build_tiny_decoder(tmp_path, "Qwen2Model", num_layers=1)
    with pytest.raises(KeyError, match="Unexpected tensors.*q_proj.bias"):
        native(native_class("LlamaModel"), path)


def test_qwen3_reranker_score_with_only_the_config_override(tmp_path):
    """Engine.score(query, docs) on a Qwen3ForCausalLM checkpoint served through the documented override:
    the Engine resolves the yes/no ids with the tokenizer and applies the model card's prompt template."""
    from transformers import AutoTokenizer

    from poolkit import Engine

    path = build_tiny_decoder(tmp_path, "Qwen3ForCausalLM", num_kv_heads=2, tie_word_embeddings=True, seed=13)
    tokenizer = AutoTokenizer.from_pretrained(path)
    no_id, yes_id = tokenizer.convert_tokens_to_ids(["no", "yes"])
    hf = _hf(path, "AutoModelForCausalLM")
    with torch.no_grad():  # the model card's recipe, computed with transformers directly
        rows = [hf(input_ids=torch.tensor([tokenizer(format_qwen3_reranker_pair(q, d), add_special_tokens=False)
                                           ["input_ids"]])).logits[0, -1] for q, d in PAIRS]
    want = torch.stack([torch.softmax(torch.stack([r[no_id], r[yes_id]]), 0)[1] for r in rows])
    engine = Engine(str(path), hf_overrides=RERANKER_OVERRIDES)
    assert engine.score_type == "cross-encoder"
    got = torch.tensor([o.outputs.score for o in engine.score([q for q, _ in PAIRS], [d for _, d in PAIRS])])
    assert testing.max_abs_diff(got, want) <= TOL
    ranked = engine.rerank(PAIRS[0][0], [d for _, d in PAIRS])
    assert sorted(r.relevance_score for r in ranked) == sorted(engine.score(PAIRS[0][0], [d for _, d in PAIRS])[i]
                                                               .outputs.score for i in range(len(PAIRS)))
    with torch.no_grad():  # the first query against every document, by transformers: rerank's order and scores
        first = [hf(input_ids=torch.tensor([tokenizer(format_qwen3_reranker_pair(PAIRS[0][0], d),
                                                      add_special_tokens=False)["input_ids"]])).logits[0, -1]
                 for _, d in PAIRS]
    want_first = [float(torch.softmax(torch.stack([r[no_id], r[yes_id]]), 0)[1]) for r in first]
    assert [r.index for r in ranked] == sorted(range(len(PAIRS)), key=lambda i: -want_first[i])
    assert max(abs(r.relevance_score - want_first[r.index]) for r in ranked) <= TOL


def _reward_reference(path, head, text):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path)
    ids = tok(text)["input_ids"]
    cfg = __import__("transformers").Qwen2Config.from_pretrained(path)
    base = __import__("transformers").Qwen2Model(cfg).eval()
    from safetensors.torch import load_file

    base.load_state_dict({k.removeprefix("model."): v for k, v in load_file(path / "model.safetensors").items()
                          if k.startswith("model.")})
    with torch.no_grad():
        h = base(input_ids=torch.tensor([ids])).last_hidden_state[0]
        hidden = torch.relu(h @ head["score.0.weight"].T + head["score.0.bias"])
        return ids, hidden @ head["score.2.weight"].T + head["score.2.bias"]


def test_qwen2_outcome_reward_model(tmp_path):
    from poolkit import Engine

    path, head = build_reward_checkpoint(tmp_path, "Qwen2ForRewardModel", 1, seed=21)
    text = "the answer is 42"
    _, want = _reward_reference(path, head, text)
    engine = Engine(str(path))
    assert engine.supported_tasks == ("token_classify",)
    [out] = engine.reward(text)
    assert out.outputs.data.shape == want.shape
    assert testing.max_abs_diff(out.outputs.data, want) <= TOL  # raw rewards, no activation


def test_qwen2_process_reward_model_step_pooling(tmp_path):
    from transformers import AutoTokenizer

    from poolkit import Engine

    path, head = build_reward_checkpoint(tmp_path, "Qwen2ForProcessRewardModel", 2, seed=22)
    tok = AutoTokenizer.from_pretrained(path)
    text = "step one <|im_end|> step two <|im_end|>"
    step = tok.convert_tokens_to_ids("<|im_end|>")
    ids, logits = _reward_reference(path, head, text)
    want = torch.softmax(logits[torch.tensor(ids) == step], -1)
    [out] = Engine(str(path), pooler_config={"step_tag_id": step}).reward(text)
    assert out.outputs.data.shape == (2, 2)
    assert testing.max_abs_diff(out.outputs.data, want) <= TOL
