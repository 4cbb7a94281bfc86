"""classify / score / rerank / token_classify on BERT heads, vs transformers and Sentence Transformers."""

from __future__ import annotations

import pytest
import torch

from poolkit import Engine, PoolingParams, testing
from poolkit.errors import InvalidRequestError
from poolkit.model.convert import default_convert, served_tasks

PAIRS = [("how do I bake bread", "Mix flour, water and yeast, then bake."),
         ("capital of France", "Paris is the capital of France."),
         ("capital of France", "Bread needs yeast."),
         ("短い", "長い文書 " * 20)]


@pytest.fixture(scope="module")
def cls3_dir(tmp_path_factory):
    return testing.build_tiny_bert(tmp_path_factory.mktemp("cls3"), head="sequence", num_labels=3, seed=5,
                                   id2label={0: "neg", 1: "neu", 2: "pos"}, label2id={"neg": 0, "neu": 1, "pos": 2})


@pytest.fixture(scope="module")
def cross_dir(tmp_path_factory):
    return testing.build_tiny_bert(tmp_path_factory.mktemp("cross"), head="sequence", num_labels=1, seed=6)


@pytest.fixture(scope="module")
def ner_dir(tmp_path_factory):
    return testing.build_tiny_bert(tmp_path_factory.mktemp("ner"), head="token", num_labels=5, seed=7)


def _hf_logits(path, cls_name, *texts):
    import transformers

    tok = transformers.AutoTokenizer.from_pretrained(path)
    model = getattr(transformers, cls_name).from_pretrained(path).eval()
    enc = tok(*texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        return model(**enc).logits, enc["attention_mask"]


def test_classify_matches_transformers(cls3_dir):
    texts = ["great movie", "terrible, would not watch again", "it was fine I guess", "ok"]
    want, _ = _hf_logits(cls3_dir, "BertForSequenceClassification", texts)
    engine = Engine(str(cls3_dir))
    assert engine.supported_tasks == ("classify", "score") and engine.id2label == {0: "neg", 1: "neu", 2: "pos"}
    probs = torch.stack([o.outputs.data for o in engine.classify(texts)])
    assert testing.max_abs_diff(probs, torch.softmax(want, -1)) <= 1e-5
    raw = torch.stack([o.outputs.data for o in engine.classify(texts, PoolingParams(use_activation=False))])
    assert testing.max_abs_diff(raw, want) <= 1e-5
    assert len(engine.classify("x")[0].outputs.probs) == 3


def test_cross_encoder_score_matches_sentence_transformers(cross_dir):
    from sentence_transformers import CrossEncoder

    want = torch.tensor(CrossEncoder(str(cross_dir), device="cpu").predict(PAIRS))
    engine = Engine(str(cross_dir))
    assert engine.score_type == "cross-encoder"
    got = torch.tensor([o.outputs.score for o in engine.score([a for a, _ in PAIRS], [b for _, b in PAIRS])])
    assert testing.max_abs_diff(got, want) <= 1e-5
    logits, _ = _hf_logits(cross_dir, "BertForSequenceClassification", [a for a, _ in PAIRS], [b for _, b in PAIRS])
    assert testing.max_abs_diff(got, torch.sigmoid(logits[:, 0])) <= 1e-5


def test_cross_encoder_tokenizes_every_pair_as_sentence_transformers(cross_dir):
    """Empty documents and queries and over-long pairs: the same ids and scores as CrossEncoder.predict."""
    from sentence_transformers import CrossEncoder

    pairs = [("a query", ""), ("", "a document"), ("long words " * 300, "and more " * 300), ("q", "d")]
    reference = CrossEncoder(str(cross_dir), device="cpu")
    want = torch.tensor(reference.predict(pairs, batch_size=2))
    engine = Engine(str(cross_dir))
    plan = engine.prepare_score([a for a, _ in pairs], [b for _, b in pairs], truncate_prompt_tokens=-1)
    enc = reference.tokenizer([a for a, _ in pairs], [b for _, b in pairs], truncation=True,
                              max_length=engine.max_model_len)
    assert [t.ids for t in plan.tokens] == enc["input_ids"]
    assert plan.tokens[0].ids[-2:] == [102, 102]  # [CLS] q [SEP] [SEP]
    got = torch.tensor([o.outputs.score for o in engine.score([a for a, _ in pairs], [b for _, b in pairs],
                                                               truncate_prompt_tokens=-1)])
    assert testing.max_abs_diff(got, want) <= 1e-5


def test_score_shapes_and_errors(cross_dir):
    engine = Engine(str(cross_dir))
    one_to_n = engine.score("capital of France", ["Paris.", "Bread.", "Berlin."])
    n_to_n = engine.score(["capital of France"] * 3, ["Paris.", "Bread.", "Berlin."])
    assert [o.outputs.score for o in one_to_n] == pytest.approx([o.outputs.score for o in n_to_n], abs=1e-6)
    assert len(engine.score("a", "b")) == 1
    with pytest.raises(ValueError, match="Input lengths must be either 1:1, 1:N or N:N"):
        engine.score(["a", "b"], ["c", "d", "e"])
    for a, b, message in ((["a", "b"], [], "text_2 is empty"), ([], ["x"], "text_1 is empty")):
        with pytest.raises(InvalidRequestError, match=message):
            engine.score(a, b)


def test_rerank(cross_dir):
    engine = Engine(str(cross_dir))
    docs = [b for _, b in PAIRS]
    scores = [o.outputs.score for o in engine.score("capital of France", docs)]
    ranked = engine.rerank("capital of France", docs, top_n=2, return_documents=True)
    order = sorted(range(len(docs)), key=lambda i: -scores[i])[:2]
    assert [r.index for r in ranked] == order
    assert [r.relevance_score for r in ranked] == pytest.approx([scores[i] for i in order])
    assert ranked[0].document == docs[order[0]]
    assert engine.rerank("q", docs)[0].document is None
    with pytest.raises(InvalidRequestError, match="at least one document"):
        engine.rerank("q", [])
    with pytest.raises(InvalidRequestError, match="text_2 is empty"):
        engine.score("q", [])


def test_bi_encoder_score_is_cosine(tiny_bert_dir):
    engine = Engine(str(tiny_bert_dir))
    assert engine.score_type == "bi-encoder"
    [out] = engine.score("first text", "second text")
    from transformers import AutoTokenizer, BertModel

    tok, model = AutoTokenizer.from_pretrained(tiny_bert_dir), BertModel.from_pretrained(tiny_bert_dir).eval()
    with torch.no_grad():
        h = [model(**tok(t, return_tensors="pt")).last_hidden_state[0, 0] for t in ("first text", "second text")]
    assert out.outputs.score == pytest.approx(torch.cosine_similarity(h[0], h[1], dim=0).item(), abs=1e-5)


def test_token_classification_matches_transformers(ner_dir):
    texts = ["John lives in New York", "Paris"]
    engine = Engine(str(ner_dir))
    logits, mask = _hf_logits(ner_dir, "BertForTokenClassification", texts)
    outs = engine.reward(texts)
    for o, lg, m in zip(outs, logits, mask):
        want = torch.softmax(lg[m.bool()], -1)
        assert o.outputs.data.shape == want.shape
        assert testing.max_abs_diff(o.outputs.data, want) <= 1e-5
    raw = engine.encode(texts[:1], task="token_classify", pooling_params=PoolingParams(use_activation=False))
    assert testing.max_abs_diff(raw[0].outputs.data, logits[0][mask[0].bool()]) <= 1e-5


def test_unsupported_task_lists_supported_tasks(cls3_dir, ner_dir):
    with pytest.raises(KeyError, match=r"Task 'embed' is not supported.*Supported tasks: \['classify', 'score'\]"):
        Engine(str(cls3_dir)).embed("x")
    with pytest.raises(KeyError, match=r"Supported tasks: \['token_classify'\]"):
        Engine(str(ner_dir)).classify("x")
    with pytest.raises(ValueError, match="cross-encoder score needs a classifier with 1 label"):
        Engine(str(cls3_dir)).score("a", "b")


@pytest.mark.parametrize("arch,kind", [
    ("FooForTextEncoding", "embed"), ("FooEmbeddingModel", "embed"), ("BertModel", "embed"),
    ("Qwen2ForRewardModeling", "embed"), ("Qwen2RewardModel", "embed"),
    ("BertForSequenceClassification", "classify"), ("BertForTokenClassification", "classify"),
    ("JambaForSequenceClassification", "classify"), ("FooClassificationModel", "classify"),
    ("Qwen3ForCausalLM", None), ("T5ForConditionalGeneration", None),
])
def test_convert_suffix_rules(arch, kind):
    assert default_convert(arch) == kind


def test_convert_choices(tiny_bert_dir, cls3_dir):
    assert served_tasks("XForCausalLM", ("embed", "token_embed"), "auto", generative=True) == ("embed", "token_embed")
    with pytest.raises(ValueError, match="generative checkpoint.*convert='embed'"):
        served_tasks("XForCausalLM", ("embed",), "none", generative=True)
    assert Engine(str(tiny_bert_dir), convert="embed").supported_tasks == ("embed", "token_embed")
    with pytest.raises(ValueError, match="cannot be converted to classify"):
        Engine(str(tiny_bert_dir), convert="classify")
    with pytest.raises(ValueError, match="cannot be converted to embed"):
        Engine(str(cls3_dir), convert="embed")
    assert Engine(str(cls3_dir), convert="classify").supported_tasks == ("classify", "score")
    with pytest.raises(ValueError, match="convert='reward'"):
        Engine(str(cls3_dir), convert="reward")


@pytest.fixture(scope="module")
def distilbert_dirs(tmp_path_factory):
    """Architectures with no native family: served by the transformers fallback."""
    import transformers

    dirs = {}
    for name, extra in (("DistilBertModel", {}), ("DistilBertForSequenceClassification", {"num_labels": 1}),
                        ("DistilBertForTokenClassification", {"num_labels": 4})):
        cfg = transformers.DistilBertConfig(vocab_size=30522, dim=32, n_layers=2, n_heads=4, hidden_dim=64, **extra)
        torch.manual_seed(11)
        model = getattr(transformers, name)(cfg).eval()
        d = tmp_path_factory.mktemp(name)
        model.save_pretrained(d, safe_serialization=True)
        testing.copy_wordpiece_tokenizer(d)
        dirs[name] = d
    return dirs


def test_transformers_fallback_serves_unknown_architectures(distilbert_dirs):
    import transformers

    texts = ["a short one", "and a noticeably longer text for padding", "x"]
    tok = transformers.AutoTokenizer.from_pretrained(distilbert_dirs["DistilBertModel"])
    base = Engine(str(distilbert_dirs["DistilBertModel"]))
    assert base.supported_tasks == ("embed", "token_embed") and base.pooler_config.pooling_type == "CLS"
    ref = transformers.DistilBertModel.from_pretrained(distilbert_dirs["DistilBertModel"]).eval()
    for text, out in zip(texts, base.embed(texts)):
        with torch.no_grad():
            h = ref(**tok(text, return_tensors="pt")).last_hidden_state[0, 0]
        assert testing.max_abs_diff(out.outputs.data, torch.nn.functional.normalize(h, dim=-1)) <= 1e-5

    cross = Engine(str(distilbert_dirs["DistilBertForSequenceClassification"]))
    assert cross.score_type == "cross-encoder"
    ref = transformers.DistilBertForSequenceClassification.from_pretrained(
        distilbert_dirs["DistilBertForSequenceClassification"]).eval()
    [out] = cross.score("query", "document text")
    with torch.no_grad():
        want = torch.sigmoid(ref(**tok("query", "document text", return_tensors="pt")).logits[0, 0])
    assert out.outputs.score == pytest.approx(want.item(), abs=1e-5)

    ner = Engine(str(distilbert_dirs["DistilBertForTokenClassification"]))
    ref = transformers.DistilBertForTokenClassification.from_pretrained(
        distilbert_dirs["DistilBertForTokenClassification"]).eval()
    for text, out in zip(texts, ner.reward(texts)):
        with torch.no_grad():
            want = torch.softmax(ref(**tok(text, return_tensors="pt")).logits[0], -1)
        assert testing.max_abs_diff(out.outputs.data, want) <= 1e-5


def test_step_reward_pooling(ner_dir):
    """vLLM's PRM setup: STEP keeps the step-tag tokens, returned_token_ids picks label columns, then softmax."""
    import transformers

    tok = transformers.AutoTokenizer.from_pretrained(ner_dir)
    step = tok.convert_tokens_to_ids(".")
    text = "first step . second step . done ."
    engine = Engine(str(ner_dir), pooler_config={"pooling_type": "STEP", "step_tag_id": step,
                                                 "returned_token_ids": [0, 3]})
    [out] = engine.reward(text)
    logits, _ = _hf_logits(ner_dir, "BertForTokenClassification", [text])
    ids = torch.tensor(tok(text)["input_ids"])
    want = torch.softmax(logits[0][ids == step][:, [0, 3]], -1)
    assert out.outputs.data.shape == (3, 2)
    assert testing.max_abs_diff(out.outputs.data, want) <= 1e-5
    [raw] = engine.reward(text, PoolingParams(use_activation=False))
    assert testing.max_abs_diff(raw.outputs.data, logits[0][ids == step][:, [0, 3]]) <= 1e-5


def test_pooler_config_selects_a_registered_activation_by_name(cls3_dir):
    texts = ["great movie", "terrible, would not watch again"]
    logits, _ = _hf_logits(cls3_dir, "BertForSequenceClassification", texts)
    sig = Engine(str(cls3_dir), pooler_config={"activation": "sigmoid"}).classify(texts)
    assert testing.max_abs_diff(torch.stack([o.outputs.data for o in sig]), torch.sigmoid(logits)) <= 1e-5

    def halve(x):  # a plugin's activation, registered like any part
        return x / 2

    with testing.plugin_parts(activations={"halve": halve}):
        half = Engine(str(cls3_dir), pooler_config={"activation": "halve"}).classify(texts)
    assert testing.max_abs_diff(torch.stack([o.outputs.data for o in half]), logits / 2) <= 1e-5
    with pytest.raises(KeyError, match="no_such_activation"):  # refused when the Engine is built
        Engine(str(cls3_dir), pooler_config={"activation": "no_such_activation"})


def test_sentence_transformers_pooling_modes_map_onto_registered_methods(tmp_path):
    """A checkpoint whose Pooling module names a mode no built-in serves loads once a plugin pooler
    declares that mode; its vectors then match Sentence Transformers'."""
    from sentence_transformers import SentenceTransformer

    from poolkit.pooling import MeanPool

    path = testing.save_as_sentence_transformer(testing.build_tiny_bert(tmp_path / "m", seed=9),
                                                pooling_mode="mean_sqrt_len_tokens", normalize=False)
    with pytest.raises(ValueError, match="pooling mode 'mean_sqrt_len' has no registered pooling method"):
        Engine(str(path))

    class MeanSqrtLen(MeanPool):
        name, st_modes = "MEAN_SQRT_LEN_TEST", ("mean_sqrt_len",)

        def __call__(self, hidden, batch):  # ST: sum / sqrt(len)
            lengths = torch.tensor(batch.lengths, dtype=hidden.dtype)
            return super().__call__(hidden, batch) * lengths.sqrt()[:, None]

    texts = ["a short text", "a somewhat longer text with more words in it"]
    with testing.plugin_parts(poolers={"MEAN_SQRT_LEN_TEST": MeanSqrtLen}):
        engine = Engine(str(path))
        got = torch.stack([o.outputs.data for o in engine.embed(texts)])
    assert engine.pooler_config.pooling_type == "MEAN_SQRT_LEN_TEST"
    want = SentenceTransformer(str(path), device="cpu").encode(texts, convert_to_tensor=True)
    assert testing.max_abs_diff(got, want) <= 1e-5  # unnormalized: MEAN would be off by sqrt(len)


def test_a_plain_value_error_from_a_task_check_is_the_requests_fault(tiny_bert_dir):
    """Task plugins written before InvalidRequestError raise ValueError in check(): still a 400."""
    from poolkit.builtin_poolers.tasks import EmbedTask
    from poolkit.errors import InvalidRequestError

    class Picky(EmbedTask):
        def check(self, params):
            if params.normalize is False:
                raise ValueError("this task always normalizes")

    engine = Engine(str(tiny_bert_dir))
    engine._adapters["embed"] = Picky(engine._ctx)
    with pytest.raises(InvalidRequestError, match="always normalizes"):
        engine.embed("x", PoolingParams(normalize=False))
