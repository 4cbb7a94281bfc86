"""Batch jobs: stream texts from a file through an :class:`~poolkit.Engine` into Parquet, .npy or JSONL.

``poolkit embed INPUT -o OUTPUT`` is :func:`run_job`. The input is read in chunks of ``chunk_size``
texts; each chunk is tokenized, packed into batches under the engine's token budget, run, written
and dropped, so memory stays flat whatever the input's size.

Inputs (by extension, or ``input_format``): txt (one text per line; any unknown extension), JSONL
(``.jsonl``/``.ndjson``: an object per line whose ``text_field`` is the text, or a JSON string),
CSV/TSV (a header row, then rows whose ``text_field`` column is the text) and Parquet (its
``text_field`` column). Outputs: Parquet (columns ``id`` and the vector column, one row group per
chunk), .npy (a float32 matrix, one row per written text) and JSONL (``{"index": ..., "embedding":
[...]}`` per line; anything but .parquet/.npy). ``id`` is the 0-based record number in the input
(txt: line number - 1; CSV: data rows, the header not counted), or the ``id_field`` value.

Malformed rows (invalid UTF-8 or JSON, a missing field, an empty text, a CSV row whose field count
differs from the header's, a text the model refuses) stop the job with their line number
(``on_error="stop"``), or with ``on_error="skip"`` are reported one line each and counted; they are
never dropped silently. Skipped rows leave no row in the output (.npy rows then no longer line up
with input lines: use Parquet or JSONL, which carry the id). Reports go to the ``poolkit.jobs``
logger (or to :func:`run_job`'s ``log`` stream); the library prints nothing but its progress bar.

Resuming. Until it completes, a job lives in ``OUTPUT.partial/``: ``manifest.json`` (what the job
is, how far the input was read, what was written) next to the data written so far. Each chunk is
written and fsynced first, then the manifest is replaced atomically, so it never claims more than
the disk holds. The same command run again after a kill continues from the manifest's input
position: JSONL and .npy data are cut back to the manifest's byte count (dropping a torn tail), and
Parquet part files beyond the manifest's count are ignored. So the output equals an uninterrupted
run's. A manifest of another job (other input file, or the input changed, other model, task or
options) is refused; ``restart=True`` discards it. At the end the data becomes OUTPUT (Parquet:
the part files are copied into one file, each a row group) and the directory is removed.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import re
import shutil
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

INPUT_FORMATS = ("txt", "jsonl", "csv", "tsv", "parquet")
OUTPUT_FORMATS = ("parquet", "npy", "jsonl")
TASKS = ("embed", "classify", "token_embed", "token_classify")
OUTPUT_COLUMNS = {"embed": "embedding", "classify": "probs", "token_embed": "token_embeddings",
                  "token_classify": "token_probs"}
_INPUT_EXTENSIONS = {".txt": "txt", ".text": "txt", ".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv",
                     ".tsv": "tsv", ".tab": "tsv", ".parquet": "parquet", ".pq": "parquet"}
_OUTPUT_EXTENSIONS = {".parquet": "parquet", ".pq": "parquet", ".npy": "npy"}
_NPY_HEADER = 128  # bytes reserved at the start of a .npy being written; the real header goes there at the end
MANIFEST_VERSION = 1
logger = logging.getLogger("poolkit.jobs")  # skipped rows (WARNING) and a resumed run's position (INFO)


class JobError(ValueError):
    """A job cannot go on: a malformed row (with on_error="stop"), a bad option, a foreign manifest."""


@dataclass(slots=True)
class Row:
    """One input record. ``text`` is None and ``error`` says why when the record is malformed."""

    index: int  # 0-based record number in the input: the default id
    line: int  # 1-based line where the record starts (Parquet: 1-based row number)
    text: str | None
    id: Any = None  # the id_field value, if any
    error: str | None = None


def input_format(path: str, given: str | None = None) -> str:
    """The reader for ``path``: ``given``, else by extension; txt for anything unknown."""
    if given:
        if given not in INPUT_FORMATS:
            raise JobError(f"input format {given!r}; choose one of {', '.join(INPUT_FORMATS)}")
        return given
    return _INPUT_EXTENSIONS.get(Path(path).suffix.lower(), "txt")


def output_format(path: str | None, given: str | None = None) -> str:
    """The writer for ``path``: ``given``, else .parquet/.pq, .npy, and JSONL for anything else."""
    if given:
        if given not in OUTPUT_FORMATS:
            raise JobError(f"output format {given!r}; choose one of {', '.join(OUTPUT_FORMATS)}")
        return given
    return _OUTPUT_EXTENSIONS.get(Path(path).suffix.lower(), "jsonl") if path else "jsonl"


def _pyarrow() -> tuple[Any, Any]:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise JobError("Parquet input and output need pyarrow, a dependency of poolkit: pip install pyarrow") from None
    return pa, pq


# --- readers: records and the position after each ---------------------------------------------------------


class Reader:
    """The records of one input, from a saved position (a ``cursor`` dict) on."""

    unit = "line"
    resumable = True

    def __init__(self, path: str, fmt: str, text_field: str = "text", id_field: str | None = None) -> None:
        self.path, self.format, self.text_field, self.id_field = path, fmt, text_field, id_field
        self.name = "stdin" if path == "-" else path
        self.id_type: Any = None  # the arrow type of Parquet ids; None: strings

    def count(self) -> int | None:
        """How many records there are, when that is cheap to know."""
        return None

    def rows(self, cursor: dict[str, int] | None) -> Iterator[tuple[Row, dict[str, int]]]:
        """Each record from ``cursor`` on (None: the start), with the cursor just after it."""
        raise NotImplementedError

    def fingerprint(self) -> dict[str, Any]:
        stat = os.stat(self.path)
        return {"input": os.path.abspath(self.path), "input_size": stat.st_size, "input_mtime_ns": stat.st_mtime_ns,
                "input_format": self.format, "text_field": self.text_field, "id_field": self.id_field}


def _count_lines(path: str) -> int:
    """Lines in a file, a last line without a newline included: a fast pass over its bytes."""
    count, last = 0, b"\n"
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            count += block.count(b"\n")
            last = block[-1:]
    return count + (last != b"\n")


class LineReader(Reader):
    """txt (a text per line) and JSONL (an object or a string per line); ``-`` reads stdin (not resumable)."""

    def __init__(self, path: str, fmt: str, text_field: str = "text", id_field: str | None = None) -> None:
        super().__init__(path, fmt, text_field, id_field)
        if fmt == "txt" and id_field:
            raise JobError("an id field needs JSONL, CSV/TSV or Parquet input; a txt input's id is its line number - 1")
        self.resumable = path != "-"

    def count(self) -> int | None:
        return None if self.path == "-" else _count_lines(self.path)

    def rows(self, cursor: dict[str, int] | None) -> Iterator[tuple[Row, dict[str, int]]]:
        cursor = cursor or {"index": 0, "line": 0, "offset": 0}
        index, line, offset = cursor["index"], cursor["line"], cursor["offset"]
        stream = sys.stdin.buffer if self.path == "-" else open(self.path, "rb")
        try:
            if offset:
                stream.seek(offset)
            for raw in stream:  # split on b"\n" only: a text may hold other line separators
                offset += len(raw)
                line += 1
                row = self._parse(raw, index, line)
                index += 1
                yield row, {"index": index, "line": line, "offset": offset}
        finally:
            if stream is not sys.stdin.buffer:
                stream.close()

    def _parse(self, raw: bytes, index: int, line: int) -> Row:
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            return Row(index, line, None, error=f"not valid UTF-8 ({exc.reason} at byte {exc.start})")
        if line == 1:
            text = text.removeprefix("\ufeff")
        text = text.rstrip("\r\n")
        if self.format == "txt":
            return Row(index, line, text, error=None if text.strip() else "empty line")
        if not text.strip():
            return Row(index, line, None, error="empty line")
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as exc:
            return Row(index, line, None, error=f"invalid JSON ({exc.msg}: column {exc.colno})")
        if isinstance(obj, str) and not self.id_field:
            value, ident = obj, None
        elif isinstance(obj, dict):
            if self.text_field not in obj:
                fields = ", ".join(list(obj)[:8])
                return Row(index, line, None, error=f"no field {self.text_field!r} (fields: {fields})")
            value = obj[self.text_field]
            if not isinstance(value, str):
                return Row(index, line, None, error=f"field {self.text_field!r} is {_json_type(value)}, not a string")
            ident = None
            if self.id_field:
                if self.id_field not in obj:
                    return Row(index, line, None, error=f"no id field {self.id_field!r}")
                ident = obj[self.id_field]
        else:
            return Row(index, line, None, error=f"expected a JSON object with a {self.text_field!r} field, "
                                                f"got {_json_type(obj)}")
        if not value.strip():
            return Row(index, line, None, ident, error=f"field {self.text_field!r} is empty")
        return Row(index, line, value, ident)


def _json_type(value: Any) -> str:
    names = {dict: "an object", list: "an array", str: "a string", bool: "a boolean", int: "a number",
             float: "a number", type(None): "null"}
    return names.get(type(value), type(value).__name__)


class CsvReader(Reader):
    """CSV or TSV with a header row; the text is the ``text_field`` column."""

    def __init__(self, path: str, fmt: str, text_field: str = "text", id_field: str | None = None) -> None:
        super().__init__(path, fmt, text_field, id_field)
        if path == "-":
            raise JobError("CSV/TSV input is read from a file, not stdin")
        self.delimiter = "\t" if fmt == "tsv" else ","
        header, self._after_header = self._header()
        for name, what in ((text_field, "text"), (id_field, "id")):
            if name and name not in header:
                raise JobError(f"{path}: the header has no {what} column {name!r} (columns: {', '.join(header[:12])})")
        self.header = header
        self._text_col = header.index(text_field)
        self._id_col = header.index(id_field) if id_field else None

    def _records(self, offset: int, line: int) -> Iterator[tuple[list[str] | None, str | None, int, dict[str, int]]]:
        """``(fields, error, start line, cursor after)`` of each record from byte ``offset`` on."""
        pos = {"offset": offset, "line": line, "bad": 0}

        def lines(f: Any) -> Iterator[str]:
            for raw in f:
                pos["offset"] += len(raw)
                pos["line"] += 1
                try:
                    text = raw.decode("utf-8")
                except UnicodeDecodeError:
                    pos["bad"] = pos["line"]
                    text = raw.decode("utf-8", "replace")
                yield text.removeprefix("\ufeff") if pos["offset"] == len(raw) else text

        with open(self.path, "rb") as f:
            f.seek(offset)
            reader = csv.reader(lines(f), delimiter=self.delimiter, strict=True)
            while True:
                start = pos["line"] + 1
                try:
                    fields, error = next(reader), None
                except StopIteration:
                    return
                except csv.Error as exc:
                    fields, error = None, f"CSV error: {exc}"
                if pos["bad"]:
                    fields, error, pos["bad"] = None, "not valid UTF-8", 0
                yield fields, error, start, {"line": pos["line"], "offset": pos["offset"]}

    def _header(self) -> tuple[list[str], dict[str, int]]:
        for fields, error, _, after in self._records(0, 0):
            if error or not fields:
                raise JobError(f"{self.path} line 1: the header row is {'empty' if not error else error}")
            return [f.strip() for f in fields], {"index": 0, **after}
        raise JobError(f"nothing to embed: {self.path} is empty (a CSV/TSV input starts with a header row)")

    def count(self) -> int | None:
        with open(self.path, encoding="utf-8", errors="replace", newline="") as f:
            return max(sum(1 for _ in csv.reader(f, delimiter=self.delimiter)) - 1, 0)

    def rows(self, cursor: dict[str, int] | None) -> Iterator[tuple[Row, dict[str, int]]]:
        cursor = cursor or self._after_header
        index, width, col = cursor["index"], len(self.header), self.text_field
        for fields, error, line, after in self._records(cursor["offset"], cursor["line"]):
            if error:
                row = Row(index, line, None, error=error)
            elif not fields:
                row = Row(index, line, None, error="empty row")
            elif len(fields) != width:
                row = Row(index, line, None, error=f"row has {len(fields)} fields; the header has {width}")
            else:
                ident = fields[self._id_col] if self._id_col is not None else None
                text = fields[self._text_col]
                row = Row(index, line, text if text.strip() else None, ident,
                          None if text.strip() else f"column {col!r} is empty")
            index += 1
            yield row, {"index": index, **after}


class ParquetReader(Reader):
    """A Parquet file's ``text_field`` column (string), read a record batch at a time."""

    unit = "row"

    def __init__(self, path: str, fmt: str = "parquet", text_field: str = "text", id_field: str | None = None) -> None:
        super().__init__(path, fmt, text_field, id_field)
        pa, pq = _pyarrow()
        self.file = pq.ParquetFile(path)
        schema = self.file.schema_arrow
        for name, what in ((text_field, "text"), (id_field, "id")):
            if name and name not in schema.names:
                raise JobError(f"{path} has no {what} column {name!r} (columns: {', '.join(schema.names[:12])})")
        kind = schema.field(text_field).type
        if not (pa.types.is_string(kind) or pa.types.is_large_string(kind)
                or (pa.types.is_dictionary(kind) and pa.types.is_string(kind.value_type))):
            raise JobError(f"{path}: column {text_field!r} is {kind}, not a string column")
        self.id_type = schema.field(id_field).type if id_field else None

    def count(self) -> int | None:
        return self.file.metadata.num_rows

    def rows(self, cursor: dict[str, int] | None) -> Iterator[tuple[Row, dict[str, int]]]:
        start = cursor["index"] if cursor else 0
        groups, first = [], 0  # skip the row groups wholly before ``start``
        for g in range(self.file.num_row_groups):
            n = self.file.metadata.row_group(g).num_rows
            if first + n <= start and not groups:
                first += n
            else:
                groups.append(g)
        if not groups:
            return
        columns = [self.text_field] + ([self.id_field] if self.id_field else [])
        index = first
        for batch in self.file.iter_batches(batch_size=8192, row_groups=groups, columns=columns):
            texts = batch.column(0).to_pylist()
            ids = batch.column(1).to_pylist() if self.id_field else [None] * len(texts)
            for text, ident in zip(texts, ids):
                if index >= start:
                    error = "text is null" if text is None else (None if text.strip() else "text is empty")
                    yield Row(index, index + 1, None if error else text, ident, error), {"index": index + 1}
                index += 1


class ListReader(Reader):
    """Texts given in memory (``poolkit embed "a" "b"``); not resumable."""

    unit = "text"
    resumable = False

    def __init__(self, texts: Iterable[str]) -> None:
        super().__init__("-", "list")
        self.texts, self.name = list(texts), "command line"

    def count(self) -> int | None:
        return len(self.texts)

    def rows(self, cursor: dict[str, int] | None) -> Iterator[tuple[Row, dict[str, int]]]:
        for i, text in enumerate(self.texts):
            ok = isinstance(text, str) and text.strip()
            yield Row(i, i + 1, text if ok else None, error=None if ok else "empty text"), {"index": i + 1}


def open_reader(source: str | list[str], fmt: str | None = None, text_field: str = "text",
                id_field: str | None = None) -> Reader:
    """The reader of a file (``"-"``: stdin), or of a list of texts."""
    if not isinstance(source, str):
        return ListReader(source)
    fmt = input_format(source, fmt)
    if source != "-" and not os.path.isfile(source):
        raise FileNotFoundError(f"no such input file: {source}")
    if fmt in ("txt", "jsonl"):
        return LineReader(source, fmt, text_field, id_field)
    if fmt in ("csv", "tsv"):
        return CsvReader(source, fmt, text_field, id_field)
    if source == "-":
        raise JobError("Parquet input is read from a file, not stdin")
    return ParquetReader(source, fmt, text_field, id_field)


# --- the job's state on disk -----------------------------------------------------------------------------


def check_output(output: str | Path, mkdir: bool = False, hint: str = " (pass --mkdir to create it)") -> None:
    """Fail now, with a :class:`JobError` naming ``output`` and the reason, if the job could not write it.

    Its directory must exist (``mkdir=True`` creates it and any missing parent; otherwise the error
    ends with ``hint``) and be writable; ``output`` itself must not be a directory.
    """
    output = Path(output)
    parent = output.parent
    if output.is_dir():
        raise JobError(f"cannot write {output}: it is a directory")
    existing = next(p for p in (parent, *parent.parents) if p.exists() or p == Path(p.anchor or "."))
    if not existing.is_dir():
        raise JobError(f"cannot write {output}: {existing} is a file, not a directory")
    if existing != parent and not mkdir:
        raise JobError(f"cannot write {output}: directory {parent} does not exist{hint}")
    if not os.access(existing, os.W_OK | os.X_OK):
        what = "directory" if existing == parent else f"cannot create {parent}:"
        raise JobError(f"cannot write {output}: {what} {existing} is not writable")
    if existing != parent:
        try:
            parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise JobError(f"cannot write {output}: cannot create directory {parent}: {exc.strerror or exc}") from None


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
                diff = (sorted(k for k in set(old) | set(job) if old.get(k) != job.get(k)) if job is not None
                        else ["input (this one cannot resume: stdin or texts)"]) or ["version"]
                lock.close()
                raise JobError(f"{directory} holds an unfinished job that differs from this one in "
                               f"{', '.join(diff)}: run the same command as before to resume it, or pass "
                               f"--restart (restart=True) to start over")
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


def _fsync(path: Path) -> None:
    with open(path, "rb+") as f:
        os.fsync(f.fileno())


# --- writers ---------------------------------------------------------------------------------------------


class Writer:
    """Appends chunks of ``(rows, values)`` to a job's data; ``finish`` moves it to the output."""

    def __init__(self, state: JobState | None, column: str, id_field: str | None, id_type: Any = None,
                 metadata: dict[str, str] | None = None) -> None:
        self.state, self.column, self.id_field, self.id_type = state, column, id_field, id_type
        self.metadata = metadata or {}

    def write(self, rows: list[Row], values: list[Any]) -> dict[str, Any]:
        """Write one chunk durably; returns the manifest fields that record it."""
        raise NotImplementedError

    def finish(self, output: str) -> None:
        raise NotImplementedError


class JsonlWriter(Writer):
    """``{"index": ..., ["id": ...,] "<column>": [...]}`` per line, to ``data.jsonl`` (or to stdout)."""

    def __init__(self, *args: Any, stream: Any = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.stream = stream
        if stream is None:
            self.path = self.state.dir / "data.jsonl"
            self.file = open(self.path, "ab")
            self.file.truncate(self.state.manifest["bytes"])  # drop a torn tail past the last commit
            self.file.seek(self.state.manifest["bytes"])

    def write(self, rows: list[Row], values: list[Any]) -> dict[str, Any]:
        lines = []
        for row, value in zip(rows, values):
            record = {"index": row.index, **({"id": row.id} if self.id_field else {}), self.column: value.tolist()}
            lines.append(json.dumps(record))
        text = "".join(line + "\n" for line in lines)
        if self.stream is not None:
            self.stream.write(text)
            self.stream.flush()
            return {}
        self.file.write(text.encode("utf-8"))
        self.file.flush()
        os.fsync(self.file.fileno())
        return {"bytes": self.file.tell()}

    def finish(self, output: str) -> None:
        if self.stream is None:
            self.file.close()
            os.replace(self.path, output)


class NpyWriter(Writer):
    """float32 rows after a reserved header in ``data.npy``; the header is written when the shape is known."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.path = self.state.dir / "data.npy"
        self.file = open(self.path, "ab")
        size = max(self.state.manifest["bytes"], _NPY_HEADER)
        self.file.truncate(size)  # a fresh file: zeros up to the header's end; a resumed one: its last commit
        self.file.seek(size)

    def write(self, rows: list[Row], values: list[Any]) -> dict[str, Any]:
        import numpy as np

        if not values:
            return {"bytes": self.file.tell()}
        matrix = np.ascontiguousarray(np.stack(values), dtype="<f4")
        dim = self.state.manifest["dim"]
        if matrix.ndim != 2 or (dim is not None and matrix.shape[1] != dim):
            raise JobError(f".npy output needs one vector of the same size per text, got shape {matrix.shape[1:]}")
        self.file.write(matrix.tobytes())
        self.file.flush()
        os.fsync(self.file.fileno())
        return {"bytes": self.file.tell()}

    def finish(self, output: str) -> None:
        dim = self.state.manifest["dim"] or 0
        rows = (self.file.tell() - _NPY_HEADER) // (4 * dim) if dim else 0
        self.file.close()
        header = "{'descr': '<f4', 'fortran_order': False, 'shape': (%d, %d), }" % (rows, dim)
        header = header.ljust(_NPY_HEADER - 10 - 1) + "\n"  # magic (6) + version (2) + length (2) + header
        with open(self.path, "r+b") as f:
            f.write(b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header.encode("latin1"))
            f.flush()
            os.fsync(f.fileno())
        os.replace(self.path, output)


class ParquetWriter(Writer):
    """Each chunk a small Parquet file ``part-NNNNNN.parquet`` (one row group); joined at the end."""

    def _table(self, rows: list[Row], values: list[Any]) -> Any:
        import numpy as np

        pa, _ = _pyarrow()
        if self.id_field:
            ids = [r.id for r in rows]
            if self.id_type is None:  # JSONL/CSV ids: strings (a JSON number or object as its JSON text)
                ids = pa.array([i if isinstance(i, str) else json.dumps(i) for i in ids], pa.string())
            else:
                ids = pa.array(ids, self.id_type)
        else:
            ids = pa.array([r.index for r in rows], pa.int64())
        if values and values[0].ndim == 1:  # one vector per text: fixed_size_list<float32>[dim]
            dim = values[0].shape[0]
            flat = np.concatenate(values).astype("float32") if values else np.zeros(0, "float32")
            vectors = pa.FixedSizeListArray.from_arrays(pa.array(flat), dim)
        elif values:  # a (tokens, dim) matrix per text: list<fixed_size_list<float32>[dim]>
            dim = values[0].shape[1]
            flat = np.concatenate([v.reshape(-1) for v in values]).astype("float32")
            offsets = np.concatenate([[0], np.cumsum([v.shape[0] for v in values])]).astype("int32")
            tokens = pa.FixedSizeListArray.from_arrays(pa.array(flat), dim)
            vectors = pa.ListArray.from_arrays(pa.array(offsets), tokens)
        else:
            vectors = pa.array([], pa.list_(pa.float32()))
        return pa.table({"id": ids, self.column: vectors}).replace_schema_metadata(self.metadata)

    def write(self, rows: list[Row], values: list[Any]) -> dict[str, Any]:
        _, pq = _pyarrow()
        if not rows:
            return {}
        part = self.state.manifest["parts"]
        path = self.state.dir / f"part-{part:06d}.parquet"
        tmp = path.with_suffix(".tmp")
        pq.write_table(self._table(rows, values), tmp)
        _fsync(tmp)
        os.replace(tmp, path)
        return {"parts": part + 1}

    def finish(self, output: str) -> None:
        _, pq = _pyarrow()
        parts = [self.state.dir / f"part-{i:06d}.parquet" for i in range(self.state.manifest["parts"])]
        tmp = self.state.dir / "joined.parquet"
        schema = pq.read_schema(parts[0]) if parts else self._table([], []).schema
        with pq.ParquetWriter(tmp, schema) as writer:
            for path in parts:  # one part in memory at a time
                table = pq.ParquetFile(path).read(use_threads=False)
                writer.write_table(table, row_group_size=max(len(table), 1))
            if not parts:
                writer.write_table(self._table([], []))
        _fsync(tmp)
        os.replace(tmp, output)


_WRITERS = {"jsonl": JsonlWriter, "npy": NpyWriter, "parquet": ParquetWriter}


# --- the job ---------------------------------------------------------------------------------------------


@dataclass
class EmbedJob:
    """What to run over which input, and where the results go. See the module docstring.

    :param source: an input file path (``"-"``: stdin, txt or JSONL), or a list of texts.
    :param output: the output file; None writes JSONL to stdout (not resumable).
    :param task: embed, classify, token_embed or token_classify.
    :param chunk_size: texts read, run and written at a time (a Parquet row group each).
    :param on_error: ``"stop"`` at the first malformed row, or ``"skip"`` it (reported and counted).
    :param restart: discard an unfinished run of this output instead of resuming it.
    :param progress: a tqdm bar on stderr, advanced after each forward pass (the CLI shows it when
        stderr is a terminal, or with ``--progress``).
    """

    source: str | list[str]
    output: str | None = None
    input_format: str | None = None
    output_format: str | None = None
    text_field: str = "text"
    id_field: str | None = None
    task: str = "embed"
    output_column: str | None = None
    dimensions: int | None = None
    normalize: bool | None = None
    use_activation: bool | None = None
    truncate_prompt_tokens: int | None = None
    prompt_name: str | None = None
    chunk_size: int = 2048
    on_error: str = "stop"
    restart: bool = False
    progress: bool = True


@dataclass
class JobResult:
    output: str | None
    rows: int  # rows in the output
    skipped: int  # malformed rows skipped (on_error="skip")
    dim: int | None  # the last dimension of each result
    resumed_rows: int  # rows an earlier, interrupted run had written
    seconds: float  # this run's wall time


def embed_file(engine: Any, source: str | list[str], output: str | None = None, **options: Any) -> JobResult:
    """Run ``task`` (default embed) over every text of ``source`` into ``output``: :class:`EmbedJob`'s options."""
    return run_job(engine, EmbedJob(source, output, **options))


def run_job(engine: Any, job: EmbedJob, *, log: Any = None) -> JobResult:
    """Stream ``job.source`` through ``engine`` into ``job.output``, resuming an interrupted run of it.

    Skipped rows (a warning each) and a resumed run's position (info) go to ``log``, a text stream,
    when given, else to the ``poolkit.jobs`` logger; nothing is printed.
    """
    from poolkit.engine import make_batches, release_freed_memory
    from poolkit.params import PoolingParams

    start_time = time.perf_counter()
    if job.task not in TASKS:
        raise JobError(f"task {job.task!r}; a batch job runs one of {', '.join(TASKS)}")
    if job.on_error not in ("stop", "skip"):
        raise JobError(f"on_error={job.on_error!r}; use 'stop' or 'skip'")
    if job.chunk_size < 1:
        raise JobError("chunk_size must be positive")
    out_format = output_format(job.output, job.output_format)
    if job.output is None and out_format != "jsonl":
        raise JobError(f"{out_format} output needs an output file")
    if out_format == "npy" and job.task.startswith("token_"):
        raise JobError(f"{job.task} gives a matrix per text, which a .npy matrix cannot hold: write .parquet or .jsonl")
    if job.output is not None:
        check_output(job.output, mkdir=True)  # a clear error, not an OSError from deep inside the job
    params = PoolingParams(dimensions=job.dimensions, normalize=job.normalize, use_activation=job.use_activation,
                           truncate_prompt_tokens=job.truncate_prompt_tokens)
    adapter = engine.task(job.task)
    engine.prepare(["probe"], job.task, params, prompt_name=job.prompt_name)  # options fail now, not mid-job
    reader = open_reader(job.source, job.input_format, job.text_field, job.id_field)
    column = job.output_column or OUTPUT_COLUMNS[job.task]
    metadata = {"poolkit.model": str(engine.model_config.name), "poolkit.task": job.task}

    state = None
    if job.output is not None:
        fingerprint = None
        if reader.resumable:
            fingerprint = {**reader.fingerprint(), "model": str(engine.model_config.path), "task": job.task,
                           "dtype": str(engine.dtype), "pooler_config": engine.pooler_config.model_dump(),
                           "params": params.model_dump(), "prompt_name": job.prompt_name,
                           "output_format": out_format, "output_column": column}
        state = JobState.open(job.output, fingerprint, restart=job.restart)
    bar = None

    def note(message: str, level: int = logging.WARNING) -> None:
        if log is not None:
            if bar is not None:
                bar.write(message, file=log)
            else:
                log.write(message + "\n")
                log.flush()
        elif bar is not None:
            with bar.external_write_mode(file=sys.stderr):  # clear the bar, log, redraw it
                logger.log(level, message)
        else:
            logger.log(level, message)

    try:
        writer = _WRITERS[out_format](state, column, job.id_field, reader.id_type, metadata,
                                      **({"stream": sys.stdout} if state is None else {}))
        manifest = state.manifest if state else {"cursor": None, "rows": 0, "skipped": 0, "dim": None}
        resumed_rows = manifest["rows"]
        if state is not None and state.resumed:
            note(f"poolkit: resuming {job.output}: {resumed_rows} rows were written; going on after "
                 f"{reader.unit} {manifest['cursor'].get('line', manifest['cursor']['index'])} of {reader.name}",
                 logging.INFO)
        bar = _progress(job, reader, manifest)

        def report(row: Row, reason: str) -> None:
            where = f"{reader.name} {reader.unit} {row.line}"
            if job.on_error == "stop":
                kept = (f"; the chunks before it are kept in {state.dir} and the same command resumes there"
                        if state is not None and state.manifest["job"] is not None else "")
                raise JobError(f"{where}: {reason} (pass --on-error skip to skip malformed rows{kept})")
            note(f"poolkit: skipped {where}: {reason}")

        batches, any_record = 0, manifest["cursor"] is not None
        rows_done, skipped, dim = manifest["rows"], manifest["skipped"], manifest["dim"]
        for chunk, cursor in _chunks(reader.rows(manifest["cursor"]), job.chunk_size):
            any_record = True
            good, tokens, row_params, failed = _prepare(engine, job, params, [r for r in chunk if not r.error])
            for row, reason in sorted([(r, r.error) for r in chunk if r.error] + failed, key=lambda f: f[0].index):
                report(row, reason)  # in input order: with on_error="stop", the first one stops the job
                skipped += 1
            if bar is not None and len(good) < len(chunk):
                bar.update(len(chunk) - len(good))  # the skipped rows are done too
            values: list[Any] = [None] * len(tokens)
            for idx in make_batches([len(t.ids) for t in tokens], engine.max_batch_tokens):
                pooled = engine.run_batch(adapter, [tokens[i] for i in idx], [row_params[i] for i in idx])
                for i, value in zip(idx, pooled):  # back in input order
                    values[i] = value.numpy()
                batches += 1
                if bar is not None:  # the bar moves per forward pass, by its texts
                    bar.set_postfix(batches=batches, refresh=False)
                    bar.update(len(idx))
            if values:
                dim = int(values[0].shape[-1])
            changes = writer.write(good, values)  # durable before the manifest says so
            rows_done += len(good)
            if state is not None:
                state.commit(cursor=cursor, rows=rows_done, skipped=skipped, dim=dim, **changes)
            del chunk, good, tokens, values
            release_freed_memory(collect=False)  # the chunk's heap back to the OS: RSS stays flat
        if not any_record:
            if state is not None:
                state.remove()
            raise JobError(f"nothing to embed: {reader.name} has no rows")
        if state is not None:
            writer.finish(job.output)
            state.remove()
        return JobResult(job.output, rows_done, skipped, dim, resumed_rows, time.perf_counter() - start_time)
    finally:
        if bar is not None:
            bar.close()
        if state is not None:
            state.close()


def _progress(job: EmbedJob, reader: Reader, manifest: dict[str, Any]) -> Any:
    """A tqdm bar in texts with rate and ETA (when the input's size is cheap to know), or None.

    It is updated once per forward pass and redrawn at most every ``mininterval`` seconds; the
    environment variables ``TQDM_MININTERVAL`` (0: redraw at every pass), ``TQDM_MINITERS``,
    ``TQDM_SMOOTHING`` and ``TQDM_DYNAMIC_NCOLS`` override these settings.
    """
    if not job.progress:
        return None
    from tqdm.auto import tqdm

    done = (manifest["cursor"] or {}).get("index", 0)
    options: dict[str, Any] = {"dynamic_ncols": True, "mininterval": 0.5, "miniters": 1, "smoothing": 0.05}
    for key, value in options.items():  # tqdm reads TQDM_* once, at import, and an argument beats it: read it here
        env = os.environ.get(f"TQDM_{key.upper()}")
        if env is not None:
            try:
                options[key] = env.lower() in ("1", "true", "yes") if isinstance(value, bool) else type(value)(env)
            except ValueError:
                pass
    return tqdm(total=reader.count(), initial=done, desc=job.task, unit="texts", file=sys.stderr, **options)


def _chunks(rows: Iterator[tuple[Row, dict[str, int]]], size: int) -> Iterator[tuple[list[Row], dict[str, int]]]:
    chunk: list[Row] = []
    cursor: dict[str, int] = {}
    for row, cursor in rows:
        chunk.append(row)
        if len(chunk) == size:
            yield chunk, cursor
            chunk = []
    if chunk:
        yield chunk, cursor


def _prepare(engine: Any, job: EmbedJob, params: Any, rows: list[Row]) -> tuple[list[Row], list[Any], list[Any], list]:
    """Tokenize a chunk; if the engine refuses it, find the rows it refuses (a text longer than the model takes)."""
    if not rows:
        return [], [], [], []
    try:
        _, tokens, row_params = engine.prepare([r.text for r in rows], job.task, params, prompt_name=job.prompt_name)
        return rows, tokens, row_params, []
    except (ValueError, TypeError):
        pass
    good, tokens, row_params, failed = [], [], [], []
    for row in rows:
        try:
            _, t, p = engine.prepare([row.text], job.task, params, prompt_name=job.prompt_name)
        except (ValueError, TypeError) as exc:
            failed.append((row, _row_reason(exc)))
            continue
        good.append(row)
        tokens += t
        row_params += p
    return good, tokens, row_params, failed


def _row_reason(exc: Exception) -> str:
    """The engine's refusal of a single text, worded for the row: "the text", not "prompt 0"."""
    text = str(exc)
    too_long = re.match(r"This model's maximum context length is (\d+) tokens\. However, you requested (\d+) tokens",
                        text)
    if too_long:
        return (f"the text has {too_long[2]} tokens, more than the model's maximum of {too_long[1]} "
                f"(--truncate-prompt-tokens -1 truncates it)")
    return re.sub(r"^Prompt 0\b", "the text", text.replace(" (prompt 0)", ""))


def summary(result: JobResult, task: str) -> str:
    """One line for stderr: what was written where, what was skipped."""
    noun = {"embed": "embeddings", "classify": "classifications", "token_embed": "token embeddings",
            "token_classify": "token classifications"}[task]
    per = " per token" if task.startswith("token_") else ""
    text = f"poolkit: wrote {result.rows} {noun} of {result.dim or 0} dimensions{per} to {result.output or 'stdout'}"
    if result.resumed_rows:
        text += f" ({result.resumed_rows} of them by an earlier, interrupted run)"
    if result.skipped:
        text += f"; skipped {result.skipped} malformed row{'s' if result.skipped != 1 else ''} (reported above)"
    return text
