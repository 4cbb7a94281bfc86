"""What GNU OpenMP's waiting does to a server on few cores: the measurements behind ``poolkit serve``'s
``GOMP_SPINCOUNT=10000`` default and its engine loop on the main thread (docs/performance.md).

For each OpenMP setting (torch defaults, ``OMP_WAIT_POLICY=PASSIVE``, ``GOMP_SPINCOUNT=10000``), in a
fresh process each (OpenMP reads them when torch loads):

1. ``embed``: p50 of ``Engine.embed([text])`` for one 20-token text, 300 calls back to back
   (all-MiniLM-L6-v2, fp32, CPU).
2. ``spin``: the CPU time this process burns during a 50 ms sleep right after one parallel op
   (a GELU over 60k floats): the idle threads' spinning.
3. ``first/other thread``: p50 of that GELU from the first thread that ran torch ops and from a
   second thread started after it, while the first lives: a second thread pays a team fork per op.

Run: ``python bench/openmp_waits.py`` (about 1 minute).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

from timing import median_seconds

SETTINGS = {"torch defaults": {}, "OMP_WAIT_POLICY=PASSIVE": {"OMP_WAIT_POLICY": "PASSIVE"},
            "GOMP_SPINCOUNT=10000": {"GOMP_SPINCOUNT": "10000"}}
TEXT = "The quick brown fox jumps over the lazy dog and keeps running far away into the woods."




def measure() -> dict[str, float]:
    """One setting, in this process."""
    import threading

    import torch

    from poolkit import Engine, testing

    engine = Engine(str(testing.minilm_path()))
    for _ in range(20):
        engine.embed([TEXT])
    out = {"embed_ms": 1e3 * median_seconds(lambda: engine.embed([TEXT]), 300)}
    x = torch.randn(40 * 1536)
    gelu = lambda: torch.nn.functional.gelu(x)  # noqa: E731
    median_seconds(gelu, 200)  # warm-up
    gelu()
    cpu = time.process_time()
    time.sleep(0.05)
    out["spin_cpu_ms"] = 1e3 * (time.process_time() - cpu)
    out["gelu_first_thread_us"] = 1e6 * median_seconds(gelu, 3000)
    box: list[float] = []
    other = threading.Thread(target=lambda: box.append(1e6 * median_seconds(gelu, 3000)))
    other.start()
    other.join()
    out["gelu_other_thread_us"] = box[0]
    return out


def main() -> None:
    if sys.argv[1:] == ["--child"]:
        print(json.dumps(measure()))
        return
    keys = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")
    print(f"{'setting':<26} {'embed p50':>10} {'spin CPU in 50 ms':>18} {'GELU first thread':>18} {'GELU other thread':>18}")
    for name, extra in SETTINGS.items():
        env = {k: v for k, v in os.environ.items() if k not in keys} | extra
        res = json.loads(subprocess.run([sys.executable, __file__, "--child"], env=env, check=True,
                                        capture_output=True, text=True).stdout.strip().splitlines()[-1])
        print(f"{name:<26} {res['embed_ms']:>8.2f} ms {res['spin_cpu_ms']:>15.2f} ms {res['gelu_first_thread_us']:>15.1f} us "
              f"{res['gelu_other_thread_us']:>15.1f} us", flush=True)


if __name__ == "__main__":
    main()
