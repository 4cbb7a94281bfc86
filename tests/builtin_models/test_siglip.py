"""SiglipModel: text (padded to max_length, as the model card's processor call) and image embeddings, and
text-image scores, against transformers' SiglipModel on the same tiny random weights and image processor."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from poolkit import Engine, testing
from tests.builtin_models.builders_clip import build_tiny_siglip, data_uri, sample_images
from tests.builtin_models.helpers import PARITY_TOL

TEXTS = ["a photo of 2 cats", "a photo of 2 dogs", "Embeddings map text to vectors.", "a"]


def image(x):
    return {"multi_modal_data": {"image": x}}


@pytest.fixture(scope="module")
def siglip_dir(tmp_path_factory):
    return build_tiny_siglip(tmp_path_factory.mktemp("siglip"), seed=2)


@pytest.fixture(scope="module")
def engine(siglip_dir):
    return Engine(str(siglip_dir))


@pytest.fixture(scope="module")
def reference(siglip_dir):
    """transformers' SiglipModel: texts as ``tokenizer(..., padding="max_length")`` (input ids only, as
    SiglipProcessor gives them), images through SiglipImageProcessor; features normalized."""
    from transformers import AutoTokenizer, SiglipImageProcessorPil, SiglipModel

    model = SiglipModel.from_pretrained(siglip_dir).eval()
    tok, proc = AutoTokenizer.from_pretrained(siglip_dir), SiglipImageProcessorPil.from_pretrained(siglip_dir)

    def features(out):
        return F.normalize(getattr(out, "pooler_output", out), dim=-1)

    def texts(batch, padding="max_length"):
        ids = tok(batch, padding=padding, max_length=32, return_tensors="pt")["input_ids"]
        with torch.no_grad():
            return features(model.get_text_features(input_ids=ids))

    def images(batch):
        with torch.no_grad():
            return features(model.get_image_features(**proc(images=batch, return_tensors="pt")))

    return texts, images


def test_text_embeddings_match_transformers_padded_to_max_length(engine, reference):
    want = reference[0](TEXTS)
    # the pooled pad position reads the text through attention only, so random weights tell texts apart by
    # less than CLIP's EOS token does; still 100x the tolerance
    assert float((want[0] - want[1]).abs().max()) > 1e-3
    unpadded = torch.cat([reference[0]([t], padding=False) for t in TEXTS])
    assert testing.max_abs_diff(unpadded, want) > 0.01  # the padding matters: without it the test would fail
    got = engine.embed(TEXTS)
    assert [len(o.prompt_token_ids) for o in got] == [32] * 4  # every text padded with </s> (id 1)
    assert got[0].prompt_token_ids[-1] == 1
    assert testing.max_abs_diff(torch.stack([o.outputs.data for o in got]), want) <= PARITY_TOL


def test_image_embeddings_match_transformers(engine, reference):
    images = sample_images(4, seed=3)
    want = reference[1](images)
    assert float((want[0] - want[1]).abs().max()) > 0.01
    got = engine.embed([image(images[0]), image(data_uri(images[1])), image(images[2]), image(images[3])])
    assert [len(o.prompt_token_ids) for o in got] == [16] * 4  # 16 patches, no [class] token
    assert testing.max_abs_diff(torch.stack([o.outputs.data for o in got]), want) <= PARITY_TOL
    assert type(engine.image_processor).__name__ == "SiglipImageProcessorPil"


def test_text_image_score_is_cosine(engine, reference):
    images = sample_images(3, seed=4)
    text, imgs = reference[0]([TEXTS[0]])[0], reference[1](images)
    got = [o.outputs.score for o in engine.score(TEXTS[0], [image(i) for i in images])]
    assert testing.max_abs_diff(got, [float(text @ v) for v in imgs]) <= PARITY_TOL


def test_mixed_batch_and_bfloat16(siglip_dir, engine):
    prompts = [TEXTS[0], image(sample_images(1)[0]), TEXTS[1]]
    fp32 = torch.stack([o.outputs.data for o in engine.embed(prompts)])
    prepared = engine.prepare(prompts, "embed")
    assert testing.max_abs_diff(torch.stack(engine.run_batch(prepared.adapter, prepared.tokens, prepared.params)), fp32) <= 1e-6
    bf16 = torch.stack([o.outputs.data for o in Engine(str(siglip_dir), dtype="bfloat16").embed(prompts)])
    assert float(F.cosine_similarity(bf16, fp32).min()) >= 0.99
