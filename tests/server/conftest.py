"""A real server on 127.0.0.1 (uvicorn in a thread) serving three tiny models, one per score type."""

from __future__ import annotations

import os
import ssl
import subprocess
import sys
import threading
import time

import httpx
import pytest

from poolkit import Engine, testing
from poolkit.server.app import create_app
from poolkit.server.state import Limits


class LiveServer:
    def __init__(self, app) -> None:
        import uvicorn

        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.time() + 60
        while not self.server.started:
            assert time.time() < deadline, "server did not start"
            time.sleep(0.05)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        while httpx.get(self.url + "/health").status_code != 200:
            assert time.time() < deadline, "model did not load"
            time.sleep(0.05)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


def serve_process(*args: str, env: dict | None = None, port: int | None = None,
                  verify: ssl.SSLContext | bool = True) -> tuple[subprocess.Popen, str]:
    """``poolkit serve ARGS --port P`` in a subprocess (stdout and stderr together, text), once /health is 200.
    ``verify``: a context trusting the certificate of a server started with --ssl-certfile (the URL is https)."""
    port = port or testing.free_port()
    proc = subprocess.Popen([sys.executable, "-m", "poolkit.cli", "serve", *args, "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, **(env or {})})
    url = f"{'https' if isinstance(verify, ssl.SSLContext) else 'http'}://127.0.0.1:{port}"
    deadline = time.time() + 90
    while True:
        try:
            if httpx.get(url + "/health", verify=verify).status_code == 200:
                return proc, url
        except httpx.TransportError:
            pass
        if proc.poll() is not None or time.time() > deadline:
            proc.kill()
            raise AssertionError(proc.stdout.read())
        time.sleep(0.1)


@pytest.fixture(scope="session")
def model_dirs(tmp_path_factory):
    return {
        "embedder": testing.build_tiny_bert(tmp_path_factory.mktemp("srv_embed"), matryoshka_dimensions=[8, 16, 32]),
        "reranker": testing.build_tiny_bert(tmp_path_factory.mktemp("srv_cross"), head="sequence", num_labels=1, seed=3),
        "sentiment": testing.build_tiny_bert(tmp_path_factory.mktemp("srv_cls"), head="sequence", num_labels=3, seed=4,
                                             id2label={0: "neg", 1: "neu", 2: "pos"},
                                             label2id={"neg": 0, "neu": 1, "pos": 2}),
    }


@pytest.fixture(scope="session")
def engines(model_dirs):
    return {name: Engine(str(path), max_batch_tokens=512) for name, path in model_dirs.items()}


@pytest.fixture(scope="session")
def server(engines):
    live = LiveServer(create_app(lambda: engines, limits=Limits(max_client_batch_size=64)))
    yield live
    live.stop()
