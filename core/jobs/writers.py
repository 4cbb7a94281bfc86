"""Output formats: append a job's chunks durably to ``OUTPUT.partial/``, then move them to OUTPUT.

By extension, or ``output_format``: Parquet (``.parquet``/``.pq``: columns ``id`` and the vector
column, one row group per chunk), .npy (a float32 matrix, one row per written text) and JSONL
(``{"index": ..., "embedding": [...]}`` per line; anything else, and stdout). Given ``labels`` (classify:
the model's label names in probs order), JSONL and Parquet add each row's top ``label`` (vLLM's
``/classify`` field) and Parquet's schema metadata ``poolkit.labels`` holds them all; .npy stays the
bare matrix. ``id`` is the input
record's 0-based number, or its ``id_field`` value. Skipped rows leave no row, so .npy rows then no
longer line up with input lines (Parquet and JSONL carry the id). On resume, JSONL and .npy data are
cut back to the manifest's byte count (dropping a torn tail) and Parquet part files beyond the
manifest's count are ignored, so the output equals an uninterrupted run's. At the end the data
becomes OUTPUT (Parquet: the part files are copied into one file, each a row group).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from poolkit.jobs.common import JobError, Row, pyarrow
from poolkit.jobs.manifest import fsync_file

if TYPE_CHECKING:
    from poolkit.jobs.manifest import JobState

OUTPUT_FORMATS = ("parquet", "npy", "jsonl")
OUTPUT_EXTENSIONS = {".parquet": "parquet", ".pq": "parquet", ".npy": "npy"}
_NPY_HEADER = 128  # bytes reserved at the start of a .npy being written; the real header goes there at the end


def output_format(path: str | None, given: str | None = None) -> str:
    """The writer for ``path``: ``given``, else .parquet/.pq, .npy, and JSONL for anything else."""
    if given:
        if given not in OUTPUT_FORMATS:
            raise JobError(f"output format {given!r}; choose one of {', '.join(OUTPUT_FORMATS)}")
        return given
    return OUTPUT_EXTENSIONS.get(Path(path).suffix.lower(), "jsonl") if path else "jsonl"


class Writer:
    """Appends chunks of ``(rows, values)`` to a job's data; ``finish`` moves it to the output."""

    def _open_data(self, name: str, start: int) -> Any:
        """``OUTPUT.partial/name`` for appending at byte ``start``: the last commit (a torn tail past it dropped).

        A resumed run whose data file holds less than the manifest says (it was moved to OUTPUT just
        before the process died, or removed) is refused, never padded with zeros."""
        path = self.state.dir / name
        committed = self.state.manifest["bytes"]
        size = path.stat().st_size if path.exists() else 0
        if committed and size < committed:
            raise JobError(f"{path} holds {size} bytes, fewer than the {committed} its manifest records: this "
                           f"unfinished run cannot resume; start over (--restart, restart=True)")
        file = open(path, "ab")
        file.truncate(start)
        file.seek(start)
        return file

    def __init__(self, state: JobState | None, column: str, id_field: str | None, id_type: Any = None,
                 metadata: dict[str, str] | None = None, labels: list[str] | None = None) -> None:
        self.state, self.column, self.id_field, self.id_type = state, column, id_field, id_type
        self.metadata, self.labels = metadata or {}, labels

    def top_label(self, value: Any) -> str:
        """The label of ``value``'s largest entry (softmax or not, the same one)."""
        i = int(value.argmax())
        return self.labels[i] if i < len(self.labels) else f"LABEL_{i}"

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
            self.file = self._open_data("data.jsonl", self.state.manifest["bytes"])

    def write(self, rows: list[Row], values: list[Any]) -> dict[str, Any]:
        lines = []
        for row, value in zip(rows, values):
            record = {"index": row.index, **({"id": row.id} if self.id_field else {}),
                      **({"label": self.top_label(value)} if self.labels else {}), self.column: value.tolist()}
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
        # a fresh file: zeros up to the header's end; a resumed one: its last commit
        self.file = self._open_data("data.npy", max(self.state.manifest["bytes"], _NPY_HEADER))

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

        pa, _ = pyarrow()
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
        columns = {"id": ids, self.column: vectors}
        if self.labels:
            columns["label"] = pa.array([self.top_label(v) for v in values], pa.string())
        return pa.table(columns).replace_schema_metadata(self.metadata)

    def write(self, rows: list[Row], values: list[Any]) -> dict[str, Any]:
        _, pq = pyarrow()
        if not rows:
            return {}
        part = self.state.manifest["parts"]
        path = self.state.dir / f"part-{part:06d}.parquet"
        tmp = path.with_suffix(".tmp")
        pq.write_table(self._table(rows, values), tmp)
        fsync_file(tmp)
        os.replace(tmp, path)
        return {"parts": part + 1}

    def finish(self, output: str) -> None:
        _, pq = pyarrow()
        parts = [self.state.dir / f"part-{i:06d}.parquet" for i in range(self.state.manifest["parts"])]
        tmp = self.state.dir / "joined.parquet"
        schema = pq.read_schema(parts[0]) if parts else self._table([], []).schema
        with pq.ParquetWriter(tmp, schema) as writer:
            for path in parts:  # one part in memory at a time
                table = pq.ParquetFile(path).read(use_threads=False)
                writer.write_table(table, row_group_size=max(len(table), 1))
            if not parts:
                writer.write_table(self._table([], []))
        fsync_file(tmp)
        os.replace(tmp, output)


WRITERS = {"jsonl": JsonlWriter, "npy": NpyWriter, "parquet": ParquetWriter}
