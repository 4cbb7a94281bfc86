"""``poolkit serve`` as a user runs it: fail fast, logs, the API key from the environment, shutdown, --help."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time

import httpx
import pytest

from poolkit import testing
from poolkit.cli import build_parser
from tests.server.conftest import serve_process


@pytest.mark.parametrize("model", ["/no/such/model", "EMPTY_DIR"])
def test_a_model_that_cannot_load_exits_1_with_one_line(model, tmp_path):
    model = str(tmp_path) if model == "EMPTY_DIR" else model
    proc = subprocess.run([sys.executable, "-m", "poolkit.cli", "serve", model, "--port", str(testing.free_port())],
                          capture_output=True, text=True, timeout=120, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"poolkit serve: error: cannot load model '{model}'"), proc.stderr
    assert "Uvicorn running" not in proc.stderr + proc.stdout  # it never bound


def test_startup_log_env_api_key_and_no_access_log_by_default(model_dirs):
    proc, url = serve_process(str(model_dirs["embedder"]), "--served-model-name", "tiny", env={"POOLKIT_API_KEY": "k3y"})
    try:
        assert httpx.get(url + "/health").status_code == 200  # open without the key
        assert httpx.post(url + "/v1/embeddings", json={"input": "x"}).status_code == 401
        ok = httpx.post(url + "/v1/embeddings", json={"input": "x"}, headers={"Authorization": "Bearer k3y"})
        assert ok.status_code == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
    log = proc.stdout.read()
    assert "poolkit.engine: loaded tiny (BertModel)" in log and "dtype float32" in log and "kernels auto" in log
    assert "poolkit.server: serving ['tiny'] on http://127.0.0.1:" in log and "torch threads" in log
    assert "max_batch_tokens" in log and "API key required" in log and "k3y" not in log
    assert "POST /v1/embeddings" not in log  # the access log is opt-in (--access-log)
    assert "received SIGTERM" in log and "shut down" in log


def test_sigterm_answers_what_outlives_the_shutdown_timeout_with_json_503(model_dirs):
    proc, url = serve_process(str(model_dirs["embedder"]), "--shutdown-timeout", "1", "--max-batch-tokens", "256")

    async def scenario():
        async with httpx.AsyncClient(base_url=url, timeout=60) as client:
            big = {"input": ["word " * 250] * 1000}  # ~1,000 forward passes of one text each: several seconds
            tasks = [asyncio.create_task(client.post("/v1/embeddings", json=big)) for _ in range(3)]
            await asyncio.sleep(1.5)
            sent = time.perf_counter()
            proc.send_signal(signal.SIGTERM)
            results = await asyncio.gather(*tasks, return_exceptions=True)
            return results, time.perf_counter() - sent

    try:
        results, took = asyncio.run(scenario())
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    log = proc.stdout.read()
    assert all(isinstance(r, httpx.Response) for r in results), results
    assert [r.status_code for r in results] == [503] * 3
    for r in results:
        assert r.json()["object"] == "error" and "shutting down" in r.json()["message"]
    assert took < 8, f"{took:.1f} s after SIGTERM"
    assert "Traceback" not in log and "CancelledError" not in log, log[-2000:]


def test_every_flag_has_help_and_numeric_defaults_show():
    commands = build_parser()._subparsers._group_actions[0].choices
    for name, command in commands.items():
        for action in command._actions:
            assert action.help, f"poolkit {name} {action.option_strings or action.dest} has no help text"
    text = commands["serve"].format_help()
    for shown in ("(default: 2048 at", "(default: 512)", "(default: 1000000)", "(default: 1024)",
                  "(default: 8388608)", "(default: 30.0)", "(default: 8000)", "(default: 127.0.0.1)"):
        assert shown in text, shown
    assert "(default: 2048 at" in commands["embed"].format_help()
