"""What a vector response costs beyond the forward pass: per route, and JSON encoding alone.

    python bench/serve_overhead.py            # MiniLM, 64 short texts per request, 15 requests per route

For each route a request's p50 wall time minus the p50 of ``Engine.embed`` on the same texts
(alternating, in one process, the server in a thread on 127.0.0.1), then the encoding of the same
64 x 384 response body alone: the stdlib ``json`` (what ``JSONResponse`` uses) vs orjson with numpy
arrays (``poolkit.server.routes.common.json_response``).
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from timing import median_seconds  # noqa: E402


def main(n: int = 15) -> None:
    import httpx
    import numpy as np
    import orjson
    import torch

    from poolkit import Engine, testing
    from poolkit.server.app import create_app
    from tests.server.conftest import LiveServer

    torch.set_num_threads(2)
    engine = Engine(str(testing.minilm_path()))
    live = LiveServer(create_app(lambda: {"m": engine}))
    texts = [f"short text number {i}, with a few more words" for i in range(64)]
    bodies = {"/v1/embeddings": {"model": "m", "input": texts}, "/embed": {"inputs": texts},
              "/v2/embed": {"model": "m", "texts": texts, "input_type": "search_document", "embedding_types": ["float"]},
              "/pooling": {"model": "m", "input": texts, "task": "embed"}}
    client = httpx.Client(timeout=60)
    try:
        for route, body in bodies.items():
            post = lambda: client.post(live.url + route, json=body).raise_for_status()  # noqa: E731
            for _ in range(3):
                post()
                engine.embed(texts)
            req, eng = [], []
            for _ in range(n):  # alternating: the same machine state for both
                req.append(1000 * median_seconds(post, 1))
                eng.append(1000 * median_seconds(lambda: engine.embed(texts), 1))
            print(f"{route:<16} request p50 {statistics.median(req):6.1f} ms  engine p50 {statistics.median(eng):6.1f} ms"
                  f"  overhead {statistics.median(req) - statistics.median(eng):5.1f} ms", flush=True)
    finally:
        live.stop()
    vecs = np.stack([o.outputs.data.numpy() for o in engine.embed(texts)])
    as_lists = {"data": [{"index": i, "embedding": v.tolist()} for i, v in enumerate(vecs)]}
    as_arrays = {"data": [{"index": i, "embedding": v} for i, v in enumerate(vecs)]}
    std = 1000 * median_seconds(lambda: json.dumps([{"index": d["index"], "embedding": d["embedding"].tolist()}
                                     for d in as_arrays["data"]]), 20)
    fast = 1000 * median_seconds(lambda: orjson.dumps(as_arrays, option=orjson.OPT_SERIALIZE_NUMPY), 20)
    print(f"encoding 64 x 384: stdlib json {std:.2f} ms ({len(json.dumps(as_lists)):,} bytes), "
          f"orjson + numpy {fast:.2f} ms ({len(orjson.dumps(as_arrays, option=orjson.OPT_SERIALIZE_NUMPY)):,} bytes)")


if __name__ == "__main__":
    main()
