"""CLIPModel: text and image embeddings, text-image scores, against transformers' CLIPModel on the same tiny
random weights and the same image processor (``get_text_features`` / ``get_image_features``, normalized)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from poolkit import Engine, testing
from poolkit.errors import InvalidRequestError
from tests.builtin_models.builders_clip import build_tiny_clip, data_uri, png_bytes, sample_images
from tests.builtin_models.helpers import PARITY_TOL

TEXTS = ["a photo of a cat", "a diagram of a transformer layer", "x", "Pooling turns many vectors into one."]


def image(x):
    return {"multi_modal_data": {"image": x}}


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory):
    return build_tiny_clip(tmp_path_factory.mktemp("clip"), seed=1)


@pytest.fixture(scope="module")
def engine(clip_dir):
    return Engine(str(clip_dir))


@pytest.fixture(scope="module")
def reference(clip_dir):
    """transformers' CLIPModel and processors on the same checkpoint: (normalized text features, image features)."""
    from transformers import AutoTokenizer, CLIPImageProcessorPil, CLIPModel

    model = CLIPModel.from_pretrained(clip_dir).eval()
    tok, proc = AutoTokenizer.from_pretrained(clip_dir), CLIPImageProcessorPil.from_pretrained(clip_dir)

    def features(out):  # transformers 5: an output object; 4: the tensor
        return F.normalize(getattr(out, "pooler_output", out), dim=-1)

    def texts(batch):
        with torch.no_grad():
            return features(model.get_text_features(**tok(batch, padding=True, return_tensors="pt")))

    def images(batch):
        with torch.no_grad():
            return features(model.get_image_features(**proc(images=batch, return_tensors="pt")))

    return texts, images


def test_text_embeddings_match_transformers(engine, reference):
    want = reference[0](TEXTS)
    assert float((want[0] - want[1]).abs().max()) > 0.1  # the reference tells texts apart
    got = engine.embed(TEXTS)
    assert engine.model.default_pooling == "LAST" and got[0].outputs.data.shape == (16,)
    assert testing.max_abs_diff(torch.stack([o.outputs.data for o in got]), want) <= PARITY_TOL


def test_image_embeddings_match_transformers_for_every_source(engine, reference, tmp_path):
    images = sample_images(4)  # RGB noise, a gradient, grayscale, RGBA: the processor converts each
    want = reference[1](images)
    assert float((want[0] - want[1]).abs().max()) > 0.01  # the reference tells images apart (by > 1000x the tolerance)
    path = tmp_path / "img2.png"
    path.write_bytes(png_bytes(images[2]))
    (tmp_path / "img3.png").write_bytes(png_bytes(images[3]))
    sources = [images[0], png_bytes(images[1]), str(path), data_uri(images[3])]
    got = engine.embed([image(s) for s in sources])
    assert [len(o.prompt_token_ids) for o in got] == [17] * 4  # 16 patches + [class]: the batching cost
    assert testing.max_abs_diff(torch.stack([o.outputs.data for o in got]), want) <= PARITY_TOL
    [from_path] = engine.embed(image(tmp_path / "img3.png"))  # a pathlib.Path
    assert testing.max_abs_diff(from_path.outputs.data, want[3]) <= PARITY_TOL
    assert type(engine.image_processor).__name__ == "CLIPImageProcessorPil"  # the Pillow backend: no torchvision


def test_mixed_prompts_keep_their_order_and_batching_changes_nothing(engine, clip_dir, reference):
    images = sample_images(3, seed=5)
    prompts = [TEXTS[0], image(images[0]), TEXTS[1], image(images[1]), image(images[2]), TEXTS[3]]
    texts, imgs = reference[0]([TEXTS[0], TEXTS[1], TEXTS[3]]), reference[1](images)
    want = torch.stack([texts[0], imgs[0], texts[1], imgs[1], imgs[2], texts[2]])
    got = torch.stack([o.outputs.data for o in engine.embed(prompts)])
    assert testing.max_abs_diff(got, want) <= PARITY_TOL
    small = Engine(str(clip_dir), max_batch_tokens=40)  # two images (17 tokens each) per forward pass
    assert testing.max_abs_diff(torch.stack([o.outputs.data for o in small.embed(prompts)]), got) <= 1e-6
    # the server's batches mix texts and images: run_batch splits them across the towers
    prepared = engine.prepare(prompts, "embed")
    assert testing.max_abs_diff(torch.stack(engine.run_batch(prepared.adapter, prepared.tokens, prepared.params)), got) <= 1e-6


def test_text_image_score_and_rerank_are_cosine(engine, reference):
    images = sample_images(3, seed=7)
    text, imgs = reference[0]([TEXTS[0]])[0], reference[1](images)
    want = [float(text @ v) for v in imgs]
    assert max(want) - min(want) > 1e-3  # the ranking below is not a tie
    got = [o.outputs.score for o in engine.score(TEXTS[0], [image(i) for i in images])]
    assert testing.max_abs_diff(got, want) <= PARITY_TOL
    [back] = engine.score(image(images[1]), TEXTS[0])  # image first
    assert abs(back.outputs.score - want[1]) <= PARITY_TOL
    ranked = engine.rerank(TEXTS[0], [image(i) for i in images])
    assert [r.index for r in ranked] == sorted(range(3), key=lambda i: -want[i])


def test_bfloat16_stays_close(clip_dir, engine):
    bf16 = Engine(str(clip_dir), dtype="bfloat16")
    prompts = [*TEXTS, *(image(i) for i in sample_images(2))]
    a = torch.stack([o.outputs.data for o in bf16.embed(prompts)])
    b = torch.stack([o.outputs.data for o in engine.embed(prompts)])
    assert float(F.cosine_similarity(a, b).min()) >= 0.99


@pytest.mark.parametrize("source, match", [
    (b"\x89PNG but not really", r"image 0 could not be decoded"),
    ("data:image/png;base64,!!notbase64!!", r"image 0: the data: URI's base64 payload is invalid"),
    ("data:text/plain;base64,aGVsbG8=", r"media type 'text/plain' is not an image"),
    ("https://example.com/cat.png", r"remote URL 'https://example.com/cat.png' is not fetched.*allowed_media_domains"),
    ("file:///etc/hosts", r"local files are not accepted.*allowed_local_media_path"),
    ("ftp://example.com/cat.png", r"URL scheme 'ftp' is not supported"),
    (12, r"image 0 must be a PIL image, bytes, a path or a URL"),
])
def test_bad_images_are_request_errors(engine, source, match):
    with pytest.raises(InvalidRequestError, match=match):
        engine.embed(image(source))


def test_bad_image_prompts_are_request_errors(engine, tmp_path):
    img = sample_images(1)[0]
    with pytest.raises(InvalidRequestError, match="prompt 1 has both text and an image"):
        engine.embed(["ok", {"prompt": "a cat", "multi_modal_data": {"image": img}}])
    with pytest.raises(InvalidRequestError, match="prompt 0 has 2 images"):
        engine.embed({"multi_modal_data": {"image": [img, img]}})
    with pytest.raises(InvalidRequestError, match=r"multi_modal_data must be \{'image': \.\.\.\}, got \['video'\]"):
        engine.embed({"multi_modal_data": {"video": img}})
    with pytest.raises(InvalidRequestError, match="image 1: cannot read"):
        engine.embed([image(img), image(str(tmp_path / "missing.png"))])


def test_file_urls_only_under_the_allowed_path(clip_dir, reference, tmp_path):
    allowed, outside = tmp_path / "allowed", tmp_path / "outside"
    allowed.mkdir(), outside.mkdir()
    img = sample_images(1)[0]
    (allowed / "a.png").write_bytes(png_bytes(img))
    (outside / "b.png").write_bytes(png_bytes(img))
    (allowed / "link.png").symlink_to(outside / "b.png")
    engine = Engine(str(clip_dir), allowed_local_media_path=str(allowed))
    [got] = engine.embed(image((allowed / "a.png").as_uri()))
    assert testing.max_abs_diff(got.outputs.data, reference[1]([img])[0]) <= PARITY_TOL
    for url in ((outside / "b.png").as_uri(), (allowed / "link.png").as_uri(), f"{allowed.as_uri()}/../outside/b.png"):
        with pytest.raises(InvalidRequestError, match="is outside the allowed local media path"):
            engine.embed(image(url))
    with pytest.raises(ValueError, match="is not a directory"):
        Engine(str(clip_dir), allowed_local_media_path=str(allowed / "a.png"))


def test_text_only_model_refuses_images(tmp_path):
    bert = Engine(str(testing.build_tiny_bert(tmp_path / "bert")), served_model_name="tiny-bert")
    with pytest.raises(InvalidRequestError, match=r"Model 'tiny-bert' \(BertModel\) does not accept images"):
        bert.embed(["text", image(sample_images(1)[0])])
    with pytest.raises(InvalidRequestError, match="does not accept images"):
        bert.score("text", image(sample_images(1)[0]))


def test_long_texts_are_refused_or_truncated_at_77_tokens(clip_dir, engine, reference):
    from transformers import AutoTokenizer, CLIPModel

    long = "pooling " * 40  # 282 tokens: one per byte, with <|startoftext|> and <|endoftext|>
    with pytest.raises(InvalidRequestError, match="maximum context length is 77 tokens"):
        engine.embed(long)  # no Sentence Transformers max_seq_length: refused, as vLLM does
    [got] = Engine(str(clip_dir), auto_truncate=True).embed(long)  # open_clip's and Sentence Transformers' way
    tok = AutoTokenizer.from_pretrained(clip_dir)
    assert got.prompt_token_ids == tok(long, truncation=True, max_length=77)["input_ids"]
    assert len(got.prompt_token_ids) == 77 and got.prompt_token_ids[-1] == tok.eos_token_id
    model = CLIPModel.from_pretrained(clip_dir).eval()
    with torch.no_grad():
        out = model.get_text_features(input_ids=torch.tensor([got.prompt_token_ids]))
    want = F.normalize(getattr(out, "pooler_output", out), dim=-1)[0]
    assert testing.max_abs_diff(got.outputs.data, want) <= PARITY_TOL
