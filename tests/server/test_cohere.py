"""``/v2/embed`` with the official cohere client: every embedding type checked against its definition."""

from __future__ import annotations

import base64
import json

import httpx
import numpy as np
import pytest

from poolkit import Engine, PoolingParams, testing
from poolkit.quantize import CALIBRATION_TEXTS
from poolkit.server.app import create_app
from tests.corpus import SENTENCES
from tests.server.conftest import LiveServer

TYPES = ["float", "int8", "uint8", "binary", "ubinary", "base64"]


@pytest.fixture(scope="module")
def prompted_dir(tmp_path_factory):
    """A tiny Sentence Transformers model with query/document prompts and Matryoshka dimensions."""
    path = testing.build_tiny_bert(tmp_path_factory.mktemp("cohere_prompts"), seed=41, matryoshka_dimensions=[8, 16])
    testing.save_as_sentence_transformer(path)
    cfg = path / "config_sentence_transformers.json"
    data = json.loads(cfg.read_text()) if cfg.is_file() else {}
    data["prompts"] = {"query": "query: ", "document": "passage: ", "Clustering": "cluster: "}
    cfg.write_text(json.dumps(data))
    return path


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory):
    from tests.builtin_models.builders_clip import build_tiny_clip

    return build_tiny_clip(tmp_path_factory.mktemp("cohere_clip"), seed=5)


@pytest.fixture(scope="module")
def live(prompted_dir, clip_dir):
    engines = {"minilm": Engine(str(testing.minilm_path())), "prompted": Engine(str(prompted_dir)),
               "clip": Engine(str(clip_dir))}
    server = LiveServer(create_app(lambda: engines))
    yield server, engines
    server.stop()


def client(live):
    import cohere

    return cohere.ClientV2(base_url=live[0].url, api_key="unused")


def test_every_embedding_type_matches_its_definition(live):
    from sentence_transformers.quantization import quantize_embeddings

    texts = [t for t in SENTENCES if t.strip()][:20]
    resp = client(live).embed(model="minilm", texts=texts, input_type="search_document", embedding_types=TYPES)
    engine = live[1]["minilm"]
    want = np.stack([o.outputs.data.numpy() for o in engine.embed(texts)])
    e = resp.embeddings
    got = np.array(e.float_)
    assert testing.max_abs_diff(got, want) <= 1e-6
    # binary / ubinary: Sentence Transformers' own definitions
    assert np.array_equal(np.array(e.ubinary), quantize_embeddings(got, precision="ubinary"))
    assert np.array_equal(np.array(e.binary), quantize_embeddings(got, precision="binary"))
    # int8: symmetric, the model's fixed bound = the largest |component| over the calibration texts
    calibration = np.stack([o.outputs.data.numpy() for o in engine.embed(CALIBRATION_TEXTS)])
    scale = 127 / np.abs(calibration).max()
    int8 = np.array(e.int8)
    assert np.array_equal(int8, np.clip(np.rint(got * scale), -127, 127)) and int8.min() >= -127
    assert np.array_equal(np.array(e.uint8), int8 + 128)
    cos = (int8 * got).sum(1) / np.linalg.norm(int8, axis=1) / np.linalg.norm(got, axis=1)
    assert cos.min() >= 0.99, cos.min()
    for b64, row in zip(e.base64, got):
        assert testing.max_abs_diff(np.frombuffer(base64.b64decode(b64), dtype="<f4"), row) <= 1e-6
    assert resp.texts == texts and resp.response_type == "embeddings_by_type"
    assert resp.meta.billed_units.input_tokens == sum(len(o.prompt_token_ids) for o in engine.embed(texts))
    # a vector never depends on its neighbours
    alone = client(live).embed(model="minilm", texts=texts[3:4], input_type="search_document", embedding_types=["int8"])
    assert alone.embeddings.int8[0] == e.int8[3]


def test_int8_ranks_like_float(live):
    texts = [t for t in SENTENCES if t.strip()]
    e = client(live).embed(model="minilm", texts=texts, input_type="clustering",
                           embedding_types=["float", "int8"]).embeddings
    f, q = np.array(e.float_), np.array(e.int8, dtype=np.float64)
    agree = np.mean([np.argsort(-(f @ f[i]))[1] == np.argsort(-(q @ q[i]))[1] for i in range(len(texts))])
    assert agree >= 0.95, agree


def test_input_type_selects_the_prompt(live):
    engine = live[1]["prompted"]
    for input_type, name in (("search_query", "query"), ("search_document", "document"), ("query", "query"),
                             ("clustering", "Clustering")):
        got = client(live).embed(model="prompted", texts=["hello there"], input_type=input_type,
                                 embedding_types=["float"]).embeddings.float_[0]
        want = engine.embed("hello there", prompt_name=name)[0].outputs.data
        assert testing.max_abs_diff(np.array(got), want) <= 1e-6, input_type
    plain = client(live).embed(model="prompted", texts=["hello there"], input_type="classification",
                               embedding_types=["float"]).embeddings.float_[0]
    assert testing.max_abs_diff(np.array(plain), engine.embed("hello there")[0].outputs.data) <= 1e-6
    r = httpx.post(live[0].url + "/v2/embed", json={"model": "prompted", "texts": ["x"], "input_type": "nope"})
    assert r.status_code == 400 and "search_query" in r.json()["message"] and "document" in r.json()["message"]


def test_output_dimension_and_truncate(live):
    engine = live[1]["prompted"]
    small = client(live).embed(model="prompted", texts=["hello there"], output_dimension=8, input_type="classification",
                               embedding_types=["float"]).embeddings.float_[0]
    want = engine.embed("hello there", PoolingParams(dimensions=8))[0].outputs.data
    assert len(small) == 8 and testing.max_abs_diff(np.array(small), want) <= 1e-6
    url = live[0].url + "/v2/embed"
    bad = httpx.post(url, json={"model": "prompted", "texts": ["x"], "output_dimension": 12})
    assert bad.status_code == 400 and "matryoshka" in bad.json()["message"]
    long = "word " * 2000
    none = httpx.post(url, json={"model": "minilm", "texts": [long], "truncate": "NONE"})
    assert none.status_code == 400 and "maximum context length" in none.json()["message"]
    minilm, tok = live[1]["minilm"], live[1]["minilm"].tokenizer
    ids = tok(long)["input_ids"]
    for truncate, kept in (("END", ids[:255] + ids[-1:]), ("START", ids[:1] + ids[-255:])):
        got = httpx.post(url, json={"model": "minilm", "texts": [long], "truncate": truncate}).json()
        want = minilm.embed([kept])[0].outputs.data
        assert testing.max_abs_diff(np.array(got["embeddings"]["float"][0]), want) <= 1e-6, truncate


def test_images_and_inputs(live):
    from tests.builtin_models.builders_clip import data_uri, sample_images

    engine = live[1]["clip"]
    images = sample_images(2, seed=3)
    uris = [data_uri(im) for im in images]
    want = [o.outputs.data for o in engine.embed([{"multi_modal_data": {"image": im}} for im in images])]
    resp = client(live).embed(model="clip", images=uris, input_type="image", embedding_types=["float", "ubinary"])
    for got, w in zip(resp.embeddings.float_, want):
        assert testing.max_abs_diff(np.array(got), w) <= 1e-6
    assert resp.meta.billed_units.images == 2
    mixed = client(live).embed(model="clip", input_type="search_document", embedding_types=["float"], inputs=[
        {"content": [{"type": "text", "text": "a photo of a cat"}]},
        {"content": [{"type": "image_url", "image_url": {"url": uris[1]}}]}]).embeddings.float_
    assert testing.max_abs_diff(np.array(mixed[0]), engine.embed("a photo of a cat")[0].outputs.data) <= 1e-6
    assert testing.max_abs_diff(np.array(mixed[1]), want[1]) <= 1e-6
    remote = httpx.post(live[0].url + "/v2/embed", json={"model": "clip", "images": ["https://example.com/cat.png"]})
    assert remote.status_code == 400 and "example.com" in remote.json()["message"]


def test_bad_requests_are_400(live):
    url = live[0].url + "/v2/embed"
    for body, needle in (({"texts": []}, "at least one input"), ({"texts": ["a"], "images": ["data:,"]}, "exactly one"),
                         ({"texts": ["a"], "embedding_types": ["int4"]}, "embedding_types"),
                         ({"images": ["data:image/png;base64,AAAA"]}, "does not accept images")):
        r = httpx.post(url, json={"model": "minilm", **body})
        assert r.status_code == 400 and needle in r.json()["message"], (body, r.text)
