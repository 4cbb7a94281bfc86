"""``poolkit.integrations.ray`` on a local Ray instance (``ray.init(num_cpus=2)``, loopback only).

Ray Data ``map_batches`` over two actors must give the offline Engine's vectors, and the Ray Serve
deployment (the ``poolkit serve`` app) must answer ``/v1/embeddings`` with them. Marked ``ray``
(deselect with ``-m "not ray"``); skipped when Ray is not installed (``pip install 'poolkit[ray]'``).
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys

import numpy as np
import pytest

from poolkit import Engine, testing

HAVE_RAY = importlib.util.find_spec("ray") is not None
needs_ray = pytest.mark.skipif(not HAVE_RAY, reason="Ray is not installed: pip install 'poolkit[ray]'")

TEXTS = [f"document {i}: " + "pooling models turn text into vectors " * (i % 7) for i in range(120)]


def test_import_without_ray_names_the_extra():
    code = "import sys; sys.modules['ray'] = None; import poolkit.integrations.ray"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert "ImportError: poolkit.integrations.ray needs Ray: pip install 'poolkit[ray]'" in proc.stderr


@pytest.fixture(scope="module")
def local_ray():
    """A 2-CPU local Ray whose processes listen and talk on 127.0.0.1 only; shut down after the module."""
    saved = {k: os.environ.get(k) for k in ("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "RAY_USAGE_STATS_ENABLED")}
    # read when ray is imported: Ray's processes then take 127.0.0.1 as the node's address, not its other ones
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    import ray

    ray.init(num_cpus=2, _node_ip_address="127.0.0.1", include_dashboard=False, log_to_driver=False,
             object_store_memory=200 * 1024 * 1024)
    try:
        yield ray
    finally:
        ray.shutdown()
        for k, v in saved.items():
            os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)


@pytest.fixture(scope="module")
def offline(tiny_bert_dir):
    return np.stack([o.outputs.data.numpy() for o in Engine(str(tiny_bert_dir)).embed(TEXTS)])


@pytest.mark.ray
@needs_ray
def test_map_batches_over_two_actors_equals_the_offline_engine(local_ray, tiny_bert_dir, offline):
    from poolkit.integrations.ray import embed_dataset

    ds = local_ray.data.from_items([{"doc": i, "text": t} for i, t in enumerate(TEXTS)])
    rows = embed_dataset(ds, str(tiny_bert_dir), num_actors=2, num_cpus=1, batch_size=16,
                         max_batch_tokens=256).take_all()
    assert sorted(r["doc"] for r in rows) == list(range(len(TEXTS)))  # every row once, its columns kept
    got = np.stack([r["embedding"] for r in sorted(rows, key=lambda r: r["doc"])])
    assert got.shape == offline.shape and testing.max_abs_diff(got, offline) <= 1e-6


@pytest.mark.ray
@needs_ray
def test_predictor_columns_and_tasks(local_ray, tiny_bert_dir):
    """The callable class itself, as map_batches calls it: custom columns, a ragged task, a bad row."""
    from poolkit.integrations.ray import PoolingPredictor

    engine = Engine(str(tiny_bert_dir))
    texts = np.array(TEXTS[:5], dtype=object)
    predictor = PoolingPredictor(str(tiny_bert_dir), text_column="body", output_column="vec")
    out = predictor({"body": texts, "k": np.arange(5)})
    assert out["vec"].shape == (5, 32) and list(out["k"]) == list(range(5))
    assert testing.max_abs_diff(out["vec"], np.stack([o.outputs.data for o in engine.embed(list(texts))])) <= 1e-6
    tok = PoolingPredictor(str(tiny_bert_dir), task="token_embed")({"text": texts})
    for got, want in zip(tok["token_embeddings"], engine.encode(list(texts), "token_embed")):
        assert got.shape == tuple(want.outputs.data.shape) and testing.max_abs_diff(got, want.outputs.data) <= 1e-6
    with pytest.raises(ValueError, match="row 1 of a batch: 'text' is None"):
        PoolingPredictor(str(tiny_bert_dir))({"text": np.array(["ok", None], dtype=object)})
    with pytest.raises(KeyError, match="no column 'text'"):
        PoolingPredictor(str(tiny_bert_dir))({"body": texts})


@pytest.mark.ray
@needs_ray
def test_serve_deployment_answers_embeddings(local_ray, tiny_bert_dir, offline):
    import httpx
    from ray import serve

    from poolkit.integrations.ray import app_builder, serve_app

    with pytest.raises(ValueError, match="unknown arguments"):
        app_builder({"model": str(tiny_bert_dir), "colour": "blue"})
    port = testing.free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    try:
        # what `serve run poolkit.integrations.ray:app_builder model=... served_model_name=tiny num_cpus=1` deploys
        app = app_builder({"model": str(tiny_bert_dir), "served_model_name": "tiny", "num_cpus": "1"})
        assert type(app) is type(serve_app(str(tiny_bert_dir)))
        serve.run(app, name="poolkit", route_prefix="/")
        base = f"http://127.0.0.1:{port}"
        assert httpx.get(f"{base}/health", timeout=60).status_code == 200
        assert [m["id"] for m in httpx.get(f"{base}/v1/models", timeout=60).json()["data"]] == ["tiny"]
        r = httpx.post(f"{base}/v1/embeddings", json={"model": "tiny", "input": TEXTS[:8]}, timeout=60)
        assert r.status_code == 200, r.text
        got = np.array([d["embedding"] for d in sorted(r.json()["data"], key=lambda d: d["index"])])
        assert testing.max_abs_diff(got, offline[:8]) <= 1e-6
    finally:
        serve.shutdown()
