"""How clients reach a server that requires an API key (issue 21): the docs page in a real browser, the
probes and the API description open without the key, TEI's routes in TEI's error shape for every status
and with their model picked by ``?model=`` or ``X-Model``, CORS for browsers, ``GET /version``.

One server, with a key and CORS, serving an embedder first and a classifier second (so that reaching the
classifier proves the TEI model selection: without it TEI's routes answer with the first model).
"""

from __future__ import annotations

import shutil
import subprocess

import httpx
import numpy as np
import pytest

from poolkit.server.app import CORS, create_app
from poolkit.server.state import Limits
from tests.server.conftest import LiveServer

KEY = "s3cret"
AUTH = {"Authorization": f"Bearer {KEY}"}
ORIGIN = "http://app.example"


@pytest.fixture(scope="module")
def keyed(engines):
    served = {"embedder": engines["embedder"], "sentiment": engines["sentiment"]}
    live = LiveServer(create_app(lambda: served, api_key=KEY, limits=Limits(max_body_bytes=4096),
                                 cors=CORS(allowed_origins=[ORIGIN])))
    yield live
    live.stop()


def test_docs_page_renders_the_routes_in_headless_chromium(keyed):
    """Swagger UI must read FastAPI's ``openapi: 3.1.0`` schema (Swagger UI 4 shows "Unable to render this
    definition" instead) and load it, its script and stylesheet without the API key and without internet."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    assert chromium, "Debian's chromium package is needed (.ci/run installs it: apt-get install chromium)"
    dom = ""
    for budget in (10_000, 30_000):  # virtual time: the page's scripts run until the budget is spent or idle
        proc = subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                               "--no-first-run", f"--virtual-time-budget={budget}", "--dump-dom", keyed.url + "/docs"],
                              capture_output=True, text=True, timeout=120)
        dom = proc.stdout
        if "opblock-summary-path" in dom:
            break
    assert "Unable to render this definition" not in dom
    assert 'class="opblock-summary-path"' in dom, dom[-2000:]  # Swagger UI's rendered list of operations
    assert 'data-path="/v1/embeddings"' in dom and 'data-path="/embed"' in dom
    assert "/v1/embeddings" not in httpx.get(keyed.url + "/docs").text  # rendered by the script, not sent as HTML


def test_probes_version_and_api_description_need_no_key(keyed):
    for method, path in (("GET", "/health"), ("HEAD", "/health"), ("GET", "/ping"), ("GET", "/"), ("HEAD", "/"),
                         ("GET", "/version"), ("GET", "/openapi.json"), ("GET", "/docs"),
                         ("GET", "/docs/assets/swagger-ui-bundle.js"), ("GET", "/docs/assets/swagger-ui.css")):
        assert httpx.request(method, keyed.url + path).status_code == 200, (method, path)
    assert httpx.get(keyed.url + "/version").json() == {"version": "0.1.0"}
    assert "/v1/embeddings" in httpx.get(keyed.url + "/openapi.json").json()["paths"]
    for method, path in (("POST", "/v1/embeddings"), ("POST", "/"), ("POST", "/embed"), ("GET", "/info"),
                         ("GET", "/v1/models"), ("GET", "/metrics"), ("POST", "/invocations")):
        assert httpx.request(method, keyed.url + path, json={"inputs": "x"}).status_code == 401, (method, path)
    assert httpx.post(keyed.url + "/embed", json={"inputs": "x"}, headers=AUTH).status_code == 200


def test_tei_routes_answer_in_tei_shape_for_every_status(keyed):
    url = keyed.url

    def tei(r, status, error_type, needle):
        assert r.status_code == status, r.text
        assert r.json() == {"error": r.json()["error"], "error_type": error_type}, r.text  # TEI's keys only
        assert needle in r.json()["error"]

    tei(httpx.post(url + "/embed", json={"inputs": "x"}), 401, "validation", "API key")
    tei(httpx.post(url + "/predict", json={"inputs": "x"}, headers={"Authorization": "Bearer nope"}),
        401, "validation", "API key")
    big = {"inputs": "word " * 2000}  # over the fixture's max_body_bytes=4096
    tei(httpx.post(url + "/embed", json=big, headers=AUTH), 413, "validation", "max_body_bytes=4096")

    def chunks():
        yield b'{"inputs": "' + b"word " * 2000 + b'"}'

    tei(httpx.post(url + "/embed", content=chunks(), headers={**AUTH, "Content-Type": "application/json"}),
        413, "validation", "max_body_bytes=4096")
    tei(httpx.get(url + "/embed", headers=AUTH), 405, "validation", "use POST")
    tei(httpx.post(url + "/embed?model=nosuch", json={"inputs": "x"}, headers=AUTH), 422, "validation",
        "Served models: ['embedder', 'sentiment']")
    tei(httpx.get(url + "/info", params={"model": "nosuch"}, headers=AUTH), 422, "validation", "nosuch")
    # the OpenAI routes keep OpenAI's shape; /rerank and /tokenize, shared by both APIs, carry both
    openai = httpx.post(url + "/v1/embeddings", json={"input": "x"})
    assert openai.status_code == 401 and openai.json()["object"] == "error" and "error_type" not in openai.json()
    shared = httpx.post(url + "/rerank", json={"query": "q", "texts": ["a"]})
    assert shared.status_code == 401 and shared.json()["error_type"] == "validation"
    assert shared.json()["object"] == "error" and shared.json()["error"] == shared.json()["message"]


def test_tei_routes_pick_the_model_by_query_or_header(keyed, engines):
    url = keyed.url
    probs = engines["sentiment"].classify("great movie")[0].outputs.probs
    for extra in ({"params": {"model": "sentiment"}}, {"headers": {"X-Model": "sentiment"}}):
        r = httpx.post(url + "/predict", json={"inputs": "great movie"}, **{**extra, "headers": {
            **AUTH, **extra.get("headers", {})}})
        assert r.status_code == 200, r.text
        assert {p["label"]: p["score"] for p in r.json()} == pytest.approx(dict(zip(["neg", "neu", "pos"], probs)))
        info = httpx.get(url + "/info", **{**extra, "headers": {**AUTH, **extra.get("headers", {})}}).json()
        assert info["served_model_name"] == "sentiment" and "classifier" in info["model_type"]
    default = httpx.post(url + "/predict", json={"inputs": "great movie"}, headers=AUTH)  # the first: an embedder
    assert default.status_code == 424 and default.json()["error_type"] == "backend"
    body_wins = httpx.post(url + "/embed?model=sentiment", json={"inputs": "x", "model": "embedder"}, headers=AUTH)
    assert body_wins.status_code == 200


def test_inference_client_reaches_a_model_served_second(keyed, engines):
    from huggingface_hub import InferenceClient

    probs = engines["sentiment"].classify("great movie")[0].outputs.probs
    best = int(np.argmax(probs))
    for client in (InferenceClient(base_url=keyed.url + "/?model=sentiment", api_key=KEY),
                   InferenceClient(base_url=keyed.url, api_key=KEY, headers={"X-Model": "sentiment"})):
        top = client.text_classification("great movie")
        assert top.label == ["neg", "neu", "pos"][best] and top.score == pytest.approx(probs[best], abs=1e-6)
    vectors = InferenceClient(base_url=keyed.url, api_key=KEY).feature_extraction("hello")  # the first model
    want = engines["embedder"].embed("hello")[0].outputs.data.numpy()
    assert vectors.shape == (1, want.shape[0]) and float(np.abs(vectors[0] - want).max()) <= 1e-6


def test_cors_for_allowed_origins_even_with_an_api_key(keyed):
    preflight = httpx.options(keyed.url + "/v1/embeddings", headers={
        "Origin": ORIGIN, "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization,content-type"})
    assert preflight.status_code == 200  # a browser's preflight carries no key
    assert preflight.headers["access-control-allow-origin"] == ORIGIN
    assert "POST" in preflight.headers["access-control-allow-methods"]
    r = httpx.post(keyed.url + "/v1/embeddings", json={"input": "x"}, headers={**AUTH, "Origin": ORIGIN})
    assert r.status_code == 200 and r.headers["access-control-allow-origin"] == ORIGIN
    other = httpx.post(keyed.url + "/v1/embeddings", json={"input": "x"},
                       headers={**AUTH, "Origin": "http://evil.example"})
    assert "access-control-allow-origin" not in other.headers
    refused = httpx.options(keyed.url + "/v1/embeddings", headers={
        "Origin": "http://evil.example", "Access-Control-Request-Method": "POST"})
    assert refused.status_code == 400 and "access-control-allow-origin" not in refused.headers
