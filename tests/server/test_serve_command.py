"""``poolkit serve`` as a user runs it: fail fast, logs, the API key from the environment, shutdown, --help."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import ssl
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


# --- issue 21: the port and the flags checked before anything loads; HTTPS, JSON logs, a second Ctrl-C ---------


def _serve(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "poolkit.cli", "serve", *args], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "HF_HUB_OFFLINE": "1"})


@pytest.mark.parametrize("flag,value,why", [
    ("--port", "99999", "must be between 1 and 65535, got 99999"),
    ("--port", "-1", "must be between 1 and 65535, got -1"),
    ("--port", "0", "must be between 1 and 65535, got 0"),
    ("--max-concurrent-requests", "0", "must be at least 1, got 0"),
    ("--max-queue-tokens", "-5", "must be at least 1, got -5"),
    ("--max-client-batch-size", "many", "expected an integer, got 'many'"),
    ("--max-body-bytes", "0", "must be at least 1, got 0"),
    ("--shutdown-timeout", "-1", "must be at least 0, got -1"),
    ("--shutdown-timeout", "nan", "must be at least 0, got nan"),
])
def test_numeric_flags_are_checked_before_any_model_loads(flag, value, why):
    proc = _serve("/no/such/model", f"{flag}={value}")  # the model would fail to load: it is never tried
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == f"poolkit serve: error: argument {flag}: {why}"
    assert "cannot load model" not in proc.stderr


def test_a_port_in_use_fails_before_the_model_loads():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        start = time.perf_counter()
        proc = _serve("/no/such/model", "--port", str(port))  # a model that cannot load: never reached
        took = time.perf_counter() - start
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        f"poolkit serve: error: port {port} on 127.0.0.1 is in use (choose another with --port or --host)"]
    assert "serving" not in proc.stderr and "startup complete" not in proc.stderr and took < 10


def test_https_json_logs_and_a_second_ctrl_c(model_dirs, tmp_path):
    """One server: HTTPS with a self-signed certificate, every log line one JSON object (uvicorn's access log
    included), the max_batch_tokens in force per model, and a second SIGINT while draining exits at once."""
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out",
                    str(cert), "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True, timeout=60)
    trust = ssl.create_default_context(cafile=str(cert))
    proc, url = serve_process(str(model_dirs["embedder"]), "--served-model-name", "tiny", "--ssl-keyfile", str(key),
                              "--ssl-certfile", str(cert), "--log-format", "json", "--access-log",
                              "--allowed-origins", "https://a.example", '["https://b.example"]', verify=trust)
    try:
        assert url.startswith("https://")
        ok = httpx.post(url + "/v1/embeddings", json={"input": "x"}, verify=trust)
        assert ok.status_code == 200 and len(ok.json()["data"][0]["embedding"]) == 32
        for origin, allowed in (("https://a.example", True), ("https://b.example", True), ("https://c.example", False)):
            preflight = httpx.options(url + "/v1/embeddings", verify=trust, headers={
                "Origin": origin, "Access-Control-Request-Method": "POST"})
            assert (preflight.headers.get("access-control-allow-origin") == origin) is allowed, origin
        with pytest.raises(httpx.TransportError):  # TLS only
            httpx.get(url.replace("https://", "http://") + "/health", timeout=5)

        async def interrupt_twice():
            async with httpx.AsyncClient(base_url=url, verify=trust, timeout=60) as client:
                busy = asyncio.create_task(client.post("/v1/embeddings", json={"input": ["word " * 250] * 1000}))
                await asyncio.sleep(1.0)
                proc.send_signal(signal.SIGINT)  # the first: drain (up to 30 s)
                await asyncio.sleep(0.5)
                proc.send_signal(signal.SIGINT)  # the second: now
                start = time.perf_counter()
                rc = await asyncio.to_thread(proc.wait, 30)
                took = time.perf_counter() - start
                busy.cancel()
                return rc, took

        rc, took = asyncio.run(interrupt_twice())
        assert rc == 130 and took < 5, (rc, took)
    finally:
        if proc.poll() is None:
            proc.kill()
    lines = proc.stdout.read().strip().splitlines()
    records = [json.loads(line) for line in lines]  # every line is one JSON object
    messages = [r["message"] for r in records]
    assert all({"time", "level", "logger", "message"} <= r.keys() for r in records)
    serving = next(i for i, m in enumerate(messages) if m.startswith("serving ['tiny'] on https://127.0.0.1:"))
    assert serving < messages.index("Application startup complete.") < next(
        i for i, m in enumerate(messages) if m.startswith("Uvicorn running on https://127.0.0.1:"))
    assert "CORS origins ['https://a.example', 'https://b.example']" in messages[serving]
    assert "model tiny: max_batch_tokens 2048 (tokens per forward pass), max_model_len 512" in messages
    assert not any("'max_batch_tokens': None" in m for m in messages)
    access = [r for r in records if r["logger"] == "uvicorn.access"]
    assert any(r["method"] == "POST" and r["path"] == "/v1/embeddings" and r["status"] == 200 for r in access)
    assert "received SIGINT again: exiting now, without waiting for requests in flight" in messages
    assert not any("Traceback" in line or "CancelledError" in line for line in lines), lines[-5:]


def test_json_log_lines_carry_exceptions_as_a_field():
    import logging

    from poolkit.logs import JSONFormatter

    try:
        raise ValueError("boom")
    except ValueError:
        import sys as _sys

        record = logging.LogRecord("poolkit.server", logging.ERROR, __file__, 1, "request %s failed", ("r1",),
                                   _sys.exc_info())
    line = JSONFormatter().format(record)
    assert "\n" not in line
    entry = json.loads(line)
    assert entry["message"] == "request r1 failed" and entry["level"] == "ERROR"
    assert entry["exception"].startswith("Traceback") and "ValueError: boom" in entry["exception"]


@pytest.mark.parametrize("args,why", [
    (("/no/such/model", "--served-model-name", "a", "--served-model-name", "b"),
     "2 --served-model-name values for 1 models"),
    (("/no/such/model", "--model", "/no/such/other", "--served-model-name", "x", "--served-model-name", "x"),
     "served model names must be unique"),
])
def test_served_model_name_mistakes_are_usage_errors(args, why):
    """A command-line mistake exits 2 (EXIT_USAGE), as in every subcommand (was: 1), before any model loads."""
    proc = _serve(*args)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("poolkit serve: error: " + why), proc.stderr
    assert "cannot load model" not in proc.stderr
