"""Two effects that skew 1-client serving figures on a small shared machine, measured on ``poolkit serve``:

1. the load generator's HTTP client: GET /health and POST /v1/embeddings round trips through httpx
   and through aiohttp (why ``bench/serve_load.py`` uses aiohttp: its CPU comes out of the same cores);
2. idle pauses: the same requests with a pause of 0, 1, 5 and 30 ms before each (on this VM an idle
   core wakes slowly, why ``serve_load.py``'s breakdown times its legs in back-to-back blocks).

One all-MiniLM-L6-v2 server on a free 127.0.0.1 port, one text, 300 requests per cell (medians).
Run: ``python bench/serve_probe.py`` (about 1 minute).
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import statistics
import subprocess
import sys
import time

TEXT = "The quick brown fox jumps over the lazy dog"
N = 300


def start_server() -> tuple[subprocess.Popen, str]:
    from poolkit import testing

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "poolkit.cli", "serve", str(testing.minilm_path()), "--port",
                             str(port), "--log-level", "warning"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    import httpx

    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            if httpx.get(url + "/health").status_code == 200:
                return proc, url
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise SystemExit("poolkit serve did not become healthy in 120 s")


async def cell(send, pause: float = 0.0) -> float:
    times = []
    for _ in range(N):
        if pause:
            await asyncio.sleep(pause)
        t0 = time.perf_counter()
        await send()
        times.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(times)


async def probe(url: str) -> None:
    import aiohttp
    import httpx

    body = {"input": TEXT}
    async with httpx.AsyncClient(base_url=url) as hx, aiohttp.ClientSession(url) as aio:
        async def aio_get() -> None:
            async with aio.get("/health") as r:
                await r.read()

        async def aio_post() -> None:
            async with aio.post("/v1/embeddings", json=body) as r:
                await r.json()

        async def hx_get() -> None:
            (await hx.get("/health")).raise_for_status()

        async def hx_post() -> None:
            (await hx.post("/v1/embeddings", json=body)).json()

        for fn in (aio_post, hx_post):  # warm up
            for _ in range(30):
                await fn()
        print("client   GET /health   POST /v1/embeddings   (p50, back to back)")
        for name, get, post in (("httpx", hx_get, hx_post), ("aiohttp", aio_get, aio_post)):
            print(f"{name:<8} {await cell(get):8.2f} ms {await cell(post):14.2f} ms", flush=True)
        print("\naiohttp, pause before each request:")
        for pause in (0.0, 0.001, 0.005, 0.03):
            print(f"  {pause * 1e3:4.0f} ms pause: GET /health {await cell(aio_get, pause):6.2f} ms, "
                  f"POST /v1/embeddings {await cell(aio_post, pause):6.2f} ms", flush=True)


def main() -> None:
    proc, url = start_server()
    try:
        print(f"load average {os.getloadavg()[0]:.2f}; {url}")
        asyncio.run(probe(url))
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)


if __name__ == "__main__":
    main()
