"""A long text tokenized as a bounded prefix gives exactly the ids of tokenizing it whole and truncating."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from poolkit import Engine, testing
from poolkit.truncation import truncation_prefix
from tests.corpus import varied_texts

ADVERSARIAL = [
    "a" * 60_000,  # no whitespace at all: one "word"
    ("supercalifragilistic" * 40 + " ") * 200,  # words longer than WordPiece's 100-character limit
    "東京は日本の首都であり、世界最大の都市圏の一つです。" * 3000,  # CJK, no spaces
    "机器学习 模型需要大量的数据来进行训练。" * 3000,
    "Party 🎉🎉 time 🍕🍺! " * 4000,  # emoji
    "tabs\tand\nnew\r\nlines  double  spaces \u00a0nbsp\u3000ideographic space " * 3000,
    "x " * 40_000,  # one-character words
    "12345678901234567890 3.14159 1,000,000 " * 3000,  # digits (byte-level BPE groups them by 3)
    "don't won't it's they're " * 4000,  # contractions
    "  leading spaces then words " * 4000,
    "word" + " " * 5000 + "after a long run of spaces " * 2000,
]


def _wordpiece(tmp):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(testing.minilm_path())


def _bytelevel_bpe(tmp):
    from transformers import AutoTokenizer

    from tests.builtin_models.builders_llama import build_qwen_tokenizer

    build_qwen_tokenizer(tmp, append_eos=True)
    return AutoTokenizer.from_pretrained(tmp)


def _roberta_bpe(tmp):
    from transformers import AutoTokenizer

    from tests.builtin_models.builders_roberta import build_bpe_tokenizer

    build_bpe_tokenizer(tmp)
    return AutoTokenizer.from_pretrained(tmp)


def _metaspace_unigram(tmp):
    """A SentencePiece-style tokenizer (Unigram + Metaspace, XLM-R's kind), trained offline."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.Unigram())
    tok.normalizer = normalizers.NFKC()
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.train_from_iterator(varied_texts(400), trainers.UnigramTrainer(vocab_size=500, special_tokens=["<s>", "</s>", "<unk>"],
                                                                       unk_token="<unk>"))
    tok.post_processor = processors.TemplateProcessing(single="<s> $A </s>", special_tokens=[("<s>", 0), ("</s>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>")


TOKENIZERS = {"wordpiece": _wordpiece, "bytelevel-bpe": _bytelevel_bpe, "roberta-bpe": _roberta_bpe,
              "metaspace-unigram": _metaspace_unigram}


@pytest.fixture(scope="module", params=list(TOKENIZERS))
def tokenizer(request, tmp_path_factory):
    return TOKENIZERS[request.param](tmp_path_factory.mktemp(request.param))


def _bench_corpus() -> list[str]:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
    import corpus

    return [t.text for t in corpus.build_corpus(800)]


@pytest.fixture(scope="module")
def bench_corpus():
    return _bench_corpus()


def _same(tok, text, limit):
    prefix = truncation_prefix(tok, text, limit)
    got = tok(prefix, truncation=True, max_length=limit)["input_ids"]
    want = tok(text, truncation=True, max_length=limit)["input_ids"]
    return got == want, len(prefix) < len(text)


def test_every_bench_corpus_text(tokenizer, bench_corpus):
    """Small limits, so that the prefix path runs on the corpus's own texts (most are under 256 tokens)."""
    cut = 0
    for text in bench_corpus:
        for limit in (8, 33):
            same, shorter = _same(tokenizer, text * 3, limit)
            assert same, (limit, text[:80])
            cut += shorter
    assert cut > 0  # the prefix path ran


@pytest.mark.parametrize("index", range(len(ADVERSARIAL)))
def test_adversarial_texts(tokenizer, index):
    for limit in (16, 256):
        assert _same(tokenizer, ADVERSARIAL[index], limit)[0]


def test_engine_tokenizes_a_bounded_prefix_of_a_1mb_document():
    engine = Engine(str(testing.minilm_path()))
    doc = ("Pooling models turn text into vectors, one per input. " * 20000)[:1_000_000]
    seen = []
    real = engine.input_processor.tokenizer

    class Recording:  # the tokenizer, recording the longest text it is handed
        def __getattr__(self, name):
            return getattr(real, name)

        def __call__(self, text, *args, **kwargs):
            seen.append(max(map(len, [text] if isinstance(text, str) else text)))
            return real(text, *args, **kwargs)

    engine.input_processor.tokenizer = Recording()
    tokens = engine.prepare([doc], "embed").tokens
    assert tokens[0].ids == real(doc, truncation=True, max_length=engine.max_model_len)["input_ids"]
    assert max(seen) < 20 * engine.max_model_len  # a prefix of a few thousand characters, never the megabyte
