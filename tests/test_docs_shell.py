"""Every ```bash block of docs/*.md and README.md runs as written, offline, as test_docs.py runs the Python ones.

A doc's blocks run in order in ONE bash session (a user's terminal: variables such as ``$MINILM`` and a
``cd`` carry over), started in an empty temporary directory with this venv first on PATH and
``HF_HUB_OFFLINE=1``. A block fails when it exits non-zero, when a ``curl`` in it cannot connect (outside ``$(...)``), or when a
``poolkit`` command in it fails (also one sent to the background, like the shard jobs of scale-out.md);
a block that reads ``$?`` checks its own failures.

Conventions, all visible in the doc's source:

- ``<!-- docs-test: skip REASON -->`` on the line above a fence: the block is not run; the test is
  reported SKIPPED with REASON (a benchmark, a Ray cluster, installing into the environment...).
- ``<!-- docs-test: output -->`` above a fence: the block's stdout must equal the next ```text block.
- Servers: a ``poolkit serve ...`` that is a block's last command (a user runs it in its own terminal)
  is started in the background, and after every ``poolkit serve ... &`` the session waits until the
  port listens. A server stays up for the blocks after it (they ``curl`` it) until a later block
  starts one on the same port (``--port N`` / ``port=N``, else 8000), or the doc ends.
- ``pip install`` is not run (the test environment is that install): a line on stderr says so.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.test_docs import DOCS, ROOT, code_blocks

SHELLS = ("bash", "sh", "shell")
MARKER = re.compile(r"^\s*<!--\s*docs-test:\s*(?P<what>skip|output)\b\s*(?P<reason>.*?)\s*-->\s*$")
BLOCK_TIMEOUT = 180

PRELUDE = r"""
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONUNBUFFERED=1
unset POOLKIT_PLUGINS POOLKIT_STRICT_PLUGINS POOLKIT_API_KEY
pip() {
  if [ "$1" = install ]; then echo "docs-test: 'pip $*' not run: the test environment is that install" >&2; return 0; fi
  command pip "$@"
}
curl() {
  command curl "$@"; local rc=$?
  # a curl in $(...) is a block's own polling loop ("until [ "$(curl ...)" = 200 ]"): it may fail to connect
  if [ $rc -eq 7 ] && [ -z "$DOCS_TEST_OWN_STATUS" ] && [ "$BASHPID" = "$$" ]; then echo "DOCS-TEST-FAILURE: curl could not connect: curl $*" >&2; fi
  return $rc
}
poolkit() {
  # a server sent to the background is the process itself, so that the block's "kill $!" reaches it
  if [ "$1" = serve ] && [ "$BASHPID" != "$$" ]; then exec poolkit "$@"; fi
  command poolkit "$@"; local rc=$?
  if [ $rc -ne 0 ] && [ $rc -ne 143 ] && [ -z "$DOCS_TEST_OWN_STATUS" ]; then
    echo "DOCS-TEST-FAILURE: 'poolkit $1' exited $rc" >&2
  fi
  return $rc
}
__docs_wait_port() {  # PORT PID: until something listens on PORT, while PID lives
  for _ in $(seq 1200); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    kill -0 "$2" 2>/dev/null || { echo "DOCS-TEST-FAILURE: the server for port $1 exited" >&2; return 1; }
    sleep 0.1
  done
  echo "DOCS-TEST-FAILURE: nothing listens on port $1 after 120 s" >&2; return 1
}
"""


def logical_commands(code: str) -> list[str]:
    """The block's commands with ``\\``-continued lines joined (heredoc bodies are kept as lines)."""
    out, current = [], ""
    for line in code.splitlines():
        current += line[:-1] + " " if line.endswith("\\") else line
        if not line.endswith("\\"):
            out.append(current)
            current = ""
    return out + ([current] if current else [])


def _serve_port(command: str) -> int:
    m = re.search(r"--port[ =](\d+)", command)
    return int(m.group(1)) if m else 8000


def prepare(code: str) -> tuple[str, set[int]]:
    """(the block as run, the ports of the servers it starts): a last foreground ``poolkit serve`` goes to the
    background, and every backgrounded ``poolkit serve`` is followed by a wait for its port."""
    commands = logical_commands(code)
    ports: set[int] = set()
    out = []
    for i, cmd in enumerate(commands):
        stripped = cmd.rstrip()
        serve = re.search(r"(^|\s)poolkit serve\b", stripped.split("#")[0])
        last = all(not c.strip() or c.lstrip().startswith("#") for c in commands[i + 1:])
        if serve and last and not stripped.split("#")[0].rstrip().endswith(("&", ";")) and not re.search(
                r";|&&|\|\|", stripped.split("#")[0]):
            stripped = stripped.split("#")[0].rstrip() + " &"
        out.append(stripped)
        if serve and stripped.split("#")[0].rstrip().endswith("&"):
            port = _serve_port(stripped)
            ports.add(port)
            out.append(f"__docs_wait_port {port} $!")
    if any(c.split("#")[0].rstrip().endswith("&") for c in commands):  # a script serving on port=N
        ports |= {int(p) for p in re.findall(r"\bport=(\d+)", code)}
    return "\n".join(out) + "\n", ports


def listeners(port: int) -> set[int]:
    """PIDs of the processes listening on TCP ``port`` (read from /proc: no ss, lsof or psutil needed)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:  # 0A: LISTEN
                inodes.add(fields[9])
    pids = set()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            for fd in (proc / "fd").iterdir():
                target = os.readlink(fd)
                if target.startswith("socket:[") and target[8:-1] in inodes:
                    pids.add(int(proc.name))
                    break
        except OSError:
            continue
    return pids


def stop(pids: set[int], timeout: float = 15) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + timeout
    while pids and time.monotonic() < deadline:
        pids = {p for p in pids if Path(f"/proc/{p}").exists() and "zombie" not in _state(p)}
        time.sleep(0.1)
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/status").read_text().split("State:")[1].split("\n")[0].lower()
    except (OSError, IndexError):
        return "zombie"


class Session:
    """One bash process that runs a doc's blocks one after another, like a terminal."""

    def __init__(self, workdir: Path) -> None:
        self.dir = workdir
        self.count = 0
        self.ports: set[int] = set()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("POOLKIT_", "PYTEST_"))}
        env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
        (workdir / ".prelude.sh").write_text(PRELUDE)
        self.bash = subprocess.Popen(["bash"], stdin=subprocess.PIPE, cwd=workdir, env=env, text=True,
                                     start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self._send(f"source {workdir / '.prelude.sh'}")

    def _send(self, line: str) -> None:
        self.bash.stdin.write(line + "\n")
        self.bash.stdin.flush()

    def run(self, code: str) -> tuple[int, str, str]:
        """(exit status, stdout, stderr) of one block."""
        script, ports = prepare(code)
        for port in ports:  # a server from an earlier block on this port makes room for the new one
            stop(listeners(port))
        self.ports |= ports
        self.count += 1
        n, d = self.count, self.dir
        (d / f".block{n}.sh").write_text(script)
        own = "1" if "$?" in code else ""
        self._send(f"DOCS_TEST_OWN_STATUS={own}; source {d}/.block{n}.sh > {d}/.out{n} 2> {d}/.err{n} < /dev/null; "
                   f"echo $? > {d}/.rc{n}.tmp; mv {d}/.rc{n}.tmp {d}/.rc{n}")
        rc_file, deadline = d / f".rc{n}", time.monotonic() + BLOCK_TIMEOUT
        while not rc_file.exists():
            if time.monotonic() > deadline or self.bash.poll() is not None:
                return -1, (d / f".out{n}").read_text(errors="replace"), f"timed out after {BLOCK_TIMEOUT} s"
            time.sleep(0.05)
        return int(rc_file.read_text()), (d / f".out{n}").read_text(errors="replace"), (d / f".err{n}").read_text(
            errors="replace")

    def close(self) -> None:
        for port in self.ports:
            stop(listeners(port))
        try:
            os.killpg(self.bash.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.bash.wait()


def shell_blocks(path: Path) -> list[tuple[int, str, str | None, str | None]]:
    """``(line, code, skip reason or None, expected output or None)`` of each shell block of ``path``."""
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks = code_blocks(path)
    out = []
    for k, (line, lang, code) in enumerate(blocks):
        if lang not in SHELLS:
            continue
        marker = MARKER.match(lines[line - 2]) if line >= 2 else None
        skip = marker["reason"] or "no reason given" if marker and marker["what"] == "skip" else None
        expected = None
        if marker and marker["what"] == "output":
            expected = next((c for _, lang2, c in blocks[k + 1:k + 2] if lang2 == "text"), None)
            assert expected is not None, f"{path.name}:{line}: 'docs-test: output' needs a ```text block right after"
        out.append((line, code, skip, expected))
    return out


BLOCKS = [(path, line, code, skip, expected) for path in DOCS for line, code, skip, expected in shell_blocks(path)]
PARAMS = [pytest.param(*b, id=f"{b[0].name}:{b[1]}") for b in BLOCKS]


@pytest.fixture(scope="module")
def sessions(tmp_path_factory):
    """One bash session per doc, made on its first block and closed (its servers stopped) at the end."""
    made: dict[Path, Session] = {}

    def get(path: Path) -> Session:
        if path not in made:
            made[path] = Session(tmp_path_factory.mktemp(path.stem))
        return made[path]

    yield get
    for session in made.values():
        session.close()


def test_docs_have_shell_blocks():
    assert {"serving.md", "scale-out.md", "README.md"} <= {b[0].name for b in BLOCKS}
    assert sum(1 for b in BLOCKS if b[3] is None) >= 30  # most blocks run; the skips are few and named


def test_prepare_backgrounds_a_last_foreground_server():
    script, ports = prepare("pip install 'poolkit[server]'\npoolkit serve org/model  # a comment\n")
    assert "poolkit serve org/model &\n__docs_wait_port 8000 $!" in script and ports == {8000}
    script, ports = prepare('poolkit serve /no/such/model; echo "exit code $?"\n')
    assert "__docs_wait_port" not in script and ports == set()
    script, ports = prepare('poolkit serve "$M" --served-model-name x \\\n    --port 8005 --background-load &\ncurl x\n')
    assert "__docs_wait_port 8005 $!" in script and ports == {8005}


@pytest.mark.parametrize("path, line, code, skip, expected", PARAMS)
def test_shell_block_runs(path, line, code, skip, expected, sessions):
    if skip:
        pytest.skip(f"{path.name}:{line}: {skip}")
    rc, out, err = sessions(path).run(code)
    where = f"{path.relative_to(ROOT)}:{line}"
    assert rc == 0 and "DOCS-TEST-FAILURE" not in err, f"{where} exited {rc}\n--- stdout\n{out[-3000:]}\n--- stderr\n{err[-3000:]}"
    if expected is not None:
        assert out.strip() == expected.strip(), f"{where}: the output differs from the doc's"
