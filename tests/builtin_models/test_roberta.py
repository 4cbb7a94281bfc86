"""The native packed (XLM-)RoBERTa vs transformers and Sentence Transformers' CrossEncoder on the same random weights."""

from __future__ import annotations

import pytest
import torch

from poolkit import testing
from poolkit.batch import PackedBatch
from poolkit.builtin_models.roberta import RobertaForEmbedding, RobertaForSequenceClassification, roberta_positions
from poolkit.model.weights import load_state_dict
from tests.builtin_models.builders_roberta import PAD, build_tiny_roberta
from tests.builtin_models.helpers import PARITY_TOL, assert_bf16_close, native, native_class, padded, reference_hidden

LENGTHS = [1, 2, 7, 7, 13, 40, 41, 100, 3, 64]  # mixed lengths in one packed batch, some equal


def _ids(vocab_size: int, seed: int = 1) -> list[list[int]]:
    g = torch.Generator().manual_seed(seed)
    ids = [torch.randint(5, vocab_size, (n,), generator=g).tolist() for n in LENGTHS]
    ids[5][17] = PAD  # a pad id inside a sequence keeps position padding_idx in transformers
    return ids


def _reference_hidden(path, ids, token_types=None):
    from transformers import AutoModel

    return reference_hidden(AutoModel.from_pretrained(path).eval(), ids, PAD, token_types)


def _load(cls, path, kernels="auto", dtype=torch.float32):
    return native(cls, path, kernels=kernels, dtype=dtype)


def _cls_logits(model, batch):
    with torch.no_grad():
        hidden = model(batch)
        return model.classify(hidden[batch.cu_seqlens[:-1]])  # CLS pooling: each sequence's <s> row


@pytest.mark.parametrize("kernels", ["auto", "torch"])
@pytest.mark.parametrize("arch,size,types", [
    ("XLMRobertaModel", (32, 2, 4, 64), 1),
    ("XLMRobertaModel", (48, 3, 3, 96), 1),
    ("RobertaModel", (64, 2, 8, 256), 1),
    ("RobertaModel", (32, 2, 4, 64), 2),  # a checkpoint with two token types: segment ids are used
])
def test_last_hidden_state_matches_transformers(tmp_path, arch, size, types, kernels):
    hidden, layers, heads, inter = size
    path = build_tiny_roberta(tmp_path, arch, hidden_size=hidden, num_layers=layers, num_heads=heads,
                              intermediate_size=inter, type_vocab_size=types, seed=sum(size))
    model = _load(RobertaForEmbedding, path, kernels)
    ids = _ids(model.config.vocab_size)
    g = torch.Generator().manual_seed(2)
    token_types = [torch.randint(0, 2, (len(s),), generator=g).tolist() for s in ids] if types == 2 else None
    want = _reference_hidden(path, ids, token_types)
    batch = PackedBatch.from_token_lists(ids, token_types)
    with torch.no_grad():
        got = model(batch).split(batch.lengths)
    for w, o in zip(want, got):
        assert o.shape == w.shape
        assert testing.max_abs_diff(o, w) <= PARITY_TOL


def test_segment_ids_are_ignored_with_one_token_type(tmp_path):
    """XLM-R has type_vocab_size 1: segment ids from a pair tokenizer must not index past the table."""
    path = build_tiny_roberta(tmp_path, "XLMRobertaModel")
    model = _load(RobertaForEmbedding, path)
    ids = _ids(model.config.vocab_size)
    types = [[0] * (len(s) // 2) + [1] * (len(s) - len(s) // 2) for s in ids]
    with torch.no_grad():
        with_types = model(PackedBatch.from_token_lists(ids, types))
        without = model(PackedBatch.from_token_lists(ids))
    assert testing.max_abs_diff(with_types, without) == 0


def test_positions_match_transformers_helper():
    from transformers.models.roberta.modeling_roberta import RobertaEmbeddings

    ids = _ids(700)
    batch = PackedBatch.from_token_lists(ids)
    want = torch.cat([RobertaEmbeddings.create_position_ids_from_input_ids(torch.tensor([s]), PAD)[0] for s in ids])
    assert torch.equal(roberta_positions(batch, PAD), want)
    assert roberta_positions(batch, PAD)[0] == PAD + 1


def test_mlm_checkpoint_serves_as_encoder(tmp_path):
    """A RobertaForMaskedLM checkpoint ("roberta." prefix, lm_head) loads as the encoder; lm_head is ignored."""
    path = build_tiny_roberta(tmp_path, "RobertaForMaskedLM")
    model = _load(RobertaForEmbedding, path)
    ids = _ids(model.config.vocab_size)
    want = _reference_hidden(path, ids)  # AutoModel: the RobertaModel inside the MLM checkpoint
    batch = PackedBatch.from_token_lists(ids)
    with torch.no_grad():
        got = model(batch).split(batch.lengths)
    for w, o in zip(want, got):
        assert testing.max_abs_diff(o, w) <= PARITY_TOL


@pytest.mark.parametrize("arch", ["XLMRobertaForSequenceClassification", "RobertaForSequenceClassification"])
@pytest.mark.parametrize("num_labels", [1, 3])
def test_classifier_logits_match_transformers(tmp_path, arch, num_labels):
    from transformers import AutoModelForSequenceClassification

    path = build_tiny_roberta(tmp_path, arch, num_labels=num_labels, seed=num_labels)
    model = _load(RobertaForSequenceClassification, path)
    assert model.num_labels == num_labels
    assert model.id2label == ({0: "LABEL_0"} if num_labels == 1 else {0: "negative", 1: "neutral", 2: "positive"})
    ids = _ids(model.config.vocab_size)
    ref = AutoModelForSequenceClassification.from_pretrained(path).eval()
    with torch.no_grad():
        want = ref(**padded(ids, PAD)).logits
    got = _cls_logits(model, PackedBatch.from_token_lists(ids))
    assert got.shape == (len(ids), num_labels)
    assert testing.max_abs_diff(got, want) <= PARITY_TOL


def test_cross_encoder_predict_matches_sigmoid_of_logits(tmp_path):
    from sentence_transformers import CrossEncoder
    from transformers import AutoTokenizer

    from tests.corpus import varied_texts

    path = build_tiny_roberta(tmp_path, "XLMRobertaForSequenceClassification", num_labels=1, seed=7)
    texts = varied_texts(24, seed=3)
    pairs = [(texts[i], texts[i + 1]) for i in range(0, len(texts), 2)]
    want = torch.as_tensor(CrossEncoder(str(path), device="cpu").predict(pairs, batch_size=4))
    tok = AutoTokenizer.from_pretrained(path)
    ids = [tok(a, b, truncation=True, max_length=500)["input_ids"] for a, b in pairs]
    assert len({len(s) for s in ids}) > 3  # mixed lengths in one batch
    model = _load(RobertaForSequenceClassification, path)
    got = torch.sigmoid(_cls_logits(model, PackedBatch.from_token_lists(ids)))[:, 0]
    assert testing.max_abs_diff(got, want) <= PARITY_TOL


def test_bfloat16_runs_close_to_fp32(tmp_path):
    path = build_tiny_roberta(tmp_path, "XLMRobertaForSequenceClassification", num_labels=3)
    model = _load(RobertaForSequenceClassification, path)
    bf16_model = _load(RobertaForSequenceClassification, path, dtype=torch.bfloat16)
    batch = PackedBatch.from_token_lists(_ids(model.config.vocab_size))
    fp32, bf16 = _cls_logits(model, batch), _cls_logits(bf16_model, batch)
    assert bf16.dtype == torch.float32
    # bf16's rounding (up to 2^-9 per matmul input, see helpers.py) measured 0.6% of the largest logit
    # here, so a tenth leaves ~16x headroom; with 3 logits a row a cosine would say little, hence a
    # bound relative to the logits' scale. The hidden states get every family's cosine check.
    assert testing.max_abs_diff(bf16, fp32) < 0.1 * float(fp32.abs().max())
    with torch.no_grad():
        assert_bf16_close(bf16_model(batch), model(batch))


def test_too_long_sequence_is_refused(tmp_path):
    path = build_tiny_roberta(tmp_path, "XLMRobertaModel", max_position_embeddings=20)
    model = _load(RobertaForEmbedding, path)
    assert model.max_model_len == 20 - PAD - 1
    model(PackedBatch.from_token_lists([[5] * 18]))
    with pytest.raises(ValueError, match="exceeds"):
        model(PackedBatch.from_token_lists([[5] * 19]))


def test_missing_and_unexpected_tensors(tmp_path):
    path = build_tiny_roberta(tmp_path, "XLMRobertaForSequenceClassification", num_labels=3)
    state = load_state_dict(path)
    del state["classifier.out_proj.bias"]
    with pytest.raises(KeyError, match="classifier.out_proj.bias"):
        native(RobertaForSequenceClassification, path, state=state)
    state = load_state_dict(path)
    del state["roberta.encoder.layer.1.attention.self.key.weight"]
    with pytest.raises(KeyError, match="encoder.layer.1.attention.self.key.weight"):
        native(RobertaForSequenceClassification, path, state=state)
    with pytest.raises(KeyError, match="Unexpected tensors.*classifier"):
        native(RobertaForEmbedding, path)  # a classifier checkpoint is not an encoder


@pytest.mark.parametrize("arch,cls,tasks", [
    ("RobertaModel", RobertaForEmbedding, ("embed", "token_embed")),
    ("XLMRobertaModel", RobertaForEmbedding, ("embed", "token_embed")),
    ("RobertaForSequenceClassification", RobertaForSequenceClassification, ("classify", "score")),
    ("XLMRobertaForSequenceClassification", RobertaForSequenceClassification, ("classify", "score")),
])
def test_architecture_rows(arch, cls, tasks):
    from poolkit.registry import declared_tasks, get_host

    assert native_class(arch) is cls
    assert declared_tasks(get_host().registry("architectures").get(arch)) == tasks == cls.supported_tasks


def test_engine_score_matches_cross_encoder(tmp_path):
    """End to end: the Engine's pair tokenization, CLS pooling and sigmoid vs CrossEncoder.predict."""
    from sentence_transformers import CrossEncoder

    from poolkit.engine import Engine
    from tests.corpus import varied_texts

    path = build_tiny_roberta(tmp_path, "XLMRobertaForSequenceClassification", num_labels=1, seed=11)
    query, *docs = varied_texts(9, seed=4)
    want = torch.as_tensor(CrossEncoder(str(path), device="cpu").predict([(query, d) for d in docs]))
    engine = Engine(str(path), device="cpu", dtype="float32")
    got = torch.tensor([o.outputs.score for o in engine.score(query, docs)])
    assert testing.max_abs_diff(got, want) <= PARITY_TOL
