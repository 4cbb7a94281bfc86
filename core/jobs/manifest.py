"""A job's state on disk, what resuming relies on: ``OUTPUT.partial/`` with ``manifest.json`` and the data so far.

The manifest says what the job is (input, model, task, options), how far the input was read (a
reader's cursor) and what was written (rows, bytes, Parquet parts). Each chunk's data is written
and fsynced first, then the manifest is replaced atomically, so it never claims more than the disk
holds. A manifest of another job is refused, a :class:`JobMismatchError` naming what differs
(``restart=True`` discards it); a second job on the same output is locked out.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from poolkit.jobs.common import JobError, JobMismatchError

MANIFEST_VERSION = 1


def partial_dir(output: str | Path) -> Path:
    """Where a job writing ``output`` keeps its manifest and data until it completes."""
    output = Path(output)
    return output.with_name(output.name + ".partial")


class JobState:
    """``OUTPUT.partial/``: ``manifest.json`` and the data so far, locked against a second job."""

    def __init__(self, directory: Path, manifest: dict[str, Any], lock: Any) -> None:
        self.dir, self.manifest, self._lock = directory, manifest, lock

    @classmethod
    def open(cls, output: str | Path, job: dict[str, Any] | None, restart: bool = False) -> JobState:
        """Resume the manifest of the same ``job``, or start one; ``job=None``: never resume."""
        directory = partial_dir(output)
        directory.mkdir(parents=True, exist_ok=True)
        lock = open(directory / "lock", "a")
        try:
            import fcntl

            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except ImportError:  # not POSIX: no lock
            pass
        except OSError:
            lock.close()
            raise JobError(f"another job is writing {output} (it holds {directory / 'lock'})") from None
        job = json.loads(json.dumps(job)) if job is not None else None  # as it will read back
        path = directory / "manifest.json"
        manifest = None
        if path.is_file() and not restart:
            manifest = json.loads(path.read_text(encoding="utf-8"))
            old = manifest.get("job")
            if old is None:  # what a job that cannot resume (stdin, texts) left: nothing to keep
                manifest = None
            elif manifest.get("version") != MANIFEST_VERSION or old != job:
                changes = (_changes(old, job) if job is not None else [("source", None, None)]) \
                    or [("version", manifest.get("version"), MANIFEST_VERSION)]
                lock.close()
                raise JobMismatchError(str(directory), changes)
        if manifest is None:
            for entry in directory.iterdir():  # a fresh start: forget any earlier data
                if entry.name != "lock":
                    shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
            manifest = {"version": MANIFEST_VERSION, "job": job, "cursor": None, "rows": 0, "skipped": 0,
                        "bytes": 0, "parts": 0, "dim": None}
        state = cls(directory, manifest, lock)
        state.commit()
        return state

    @property
    def resumed(self) -> bool:
        return self.manifest["cursor"] is not None

    def commit(self, **changes: Any) -> None:
        """Update the manifest atomically (write a temporary file, fsync, rename)."""
        self.manifest.update(changes)
        tmp = self.dir / "manifest.json.tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(self.manifest, f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.dir / "manifest.json")

    def remove(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)
        self.close()

    def close(self) -> None:
        if not self._lock.closed:
            self._lock.close()


def _changes(old: dict[str, Any], new: dict[str, Any], prefix: str = "") -> list[tuple[str, Any, Any]]:
    """``(field, before, now)`` of each field that differs; dicts on both sides compared key by key."""
    changes = []
    for key in sorted(set(old) | set(new)):
        before, now = old.get(key), new.get(key)
        if before == now:
            continue
        if isinstance(before, dict) and isinstance(now, dict):
            changes += _changes(before, now, f"{prefix}{key}.")
        else:
            changes.append((prefix + key, before, now))
    return changes


def fsync_file(path: Path) -> None:
    """Flush a written file to the disk (before a rename or a manifest says it is there)."""
    with open(path, "rb+") as f:
        os.fsync(f.fileno())

