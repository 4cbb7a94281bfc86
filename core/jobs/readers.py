"""Input formats: the records of a file (or of texts given in memory), resumable from a saved cursor.

By extension, or ``input_format``: txt (one text per line; any unknown extension), JSONL
(``.jsonl``/``.ndjson``: an object per line whose ``text_field`` is the text, or a JSON string),
CSV/TSV (a header row, then rows whose ``text_field`` column is the text) and Parquet (its
``text_field`` column, a record batch at a time). A record's ``index`` is its 0-based number in the
input (txt: line number - 1; CSV: data rows, the header not counted): the default id.

A malformed record (invalid UTF-8 or JSON, a missing field, an empty text, text with a lone
surrogate that no tokenizer can encode, a CSV row whose field count differs from the header's) is
yielded as a :class:`Row` whose ``error`` says why, with its line number; the job stops or skips it.
Blank lines at the end of a file (a trailing newline too many) are not records; blank lines
before the last record are malformed records, as an empty text is to Sentence Transformers and TEI.
Each record comes with the cursor just after it, which the manifest saves: ``rows(cursor)``
continues exactly there.
"""

from __future__ import annotations

import csv
import json
import os
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from poolkit.errors import unencodable
from poolkit.jobs.common import JobError, NothingEmbeddedError, Row, pyarrow

INPUT_FORMATS = ("txt", "jsonl", "csv", "tsv", "parquet")
INPUT_EXTENSIONS = {".txt": "txt", ".text": "txt", ".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv",
                    ".tsv": "tsv", ".tab": "tsv", ".parquet": "parquet", ".pq": "parquet"}


def input_format(path: str, given: str | None = None) -> str:
    """The reader for ``path``: ``given``, else by extension; txt for anything unknown."""
    if given:
        if given not in INPUT_FORMATS:
            raise JobError(f"input format {given!r}; choose one of {', '.join(INPUT_FORMATS)}")
        return given
    return INPUT_EXTENSIONS.get(Path(path).suffix.lower(), "txt")


def text_problem(text: str) -> str | None:
    """Why ``text`` cannot be embedded, in the words of a file or command line (a byte of invalid UTF-8 in an
    argument, which Python keeps as ``"\\udcXX"``, or a lone surrogate), or None when it can."""
    at = unencodable(text)
    if at is None:
        return None
    char = text[at]
    if "\udc80" <= char <= "\udcff":  # surrogateescape: the byte that was not UTF-8
        return f"is not valid UTF-8 (byte 0x{ord(char) - 0xdc00:02x} at character {at})"
    return f"is not valid Unicode (a lone surrogate {char!r} at character {at})"


def check_input(path: str) -> None:
    """Fail now, naming ``path``, if it is no readable input file (``"-"``: stdin, always fine)."""
    if path == "-":
        return
    if os.path.isdir(path):
        raise JobError(f"{path} is a directory, not an input file (give a txt, JSONL, CSV/TSV or Parquet file)")
    if not os.path.exists(path):
        raise FileNotFoundError(f"no such input file: {path}")
    if not os.access(path, os.R_OK):
        raise JobError(f"cannot read the input file {path}: permission denied")


def _without_blank_tail(rows: Iterator[tuple[Row, dict[str, int]]],
                        blank: str) -> Iterator[tuple[Row, dict[str, int]]]:
    """``rows`` less the blank ones (``error == blank``) at the end: those before a record are still yielded."""
    held: list[tuple[Row, dict[str, int]]] = []
    for item in rows:
        if item[0].error == blank:
            held.append(item)
            continue
        yield from held
        held.clear()
        yield item


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
    """Lines in a file up to its last non-blank one (the blank tail is no record): a fast pass over its bytes."""
    count, lines = 0, 0
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            content = block.rstrip()
            if content:
                lines = count + content.count(b"\n") + 1
            count += block.count(b"\n")
    return lines


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
        return _without_blank_tail(self._rows(cursor), "empty line")

    def _rows(self, cursor: dict[str, int] | None) -> Iterator[tuple[Row, dict[str, int]]]:
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
        if self.format == "txt":  # decoded as UTF-8 above: no lone surrogate
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
        reason = text_problem(value)
        if reason:
            return Row(index, line, None, ident, error=f"field {self.text_field!r} {reason}")
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
        raise NothingEmbeddedError(f"nothing to embed: {self.path} is empty (a CSV/TSV input starts with a header row)")

    def count(self) -> int | None:
        records = last = 0
        with open(self.path, encoding="utf-8", errors="replace", newline="") as f:
            for fields in csv.reader(f, delimiter=self.delimiter):
                records += 1
                last = records if fields else last  # empty rows at the end are no records
        return max(last - 1, 0)

    def rows(self, cursor: dict[str, int] | None) -> Iterator[tuple[Row, dict[str, int]]]:
        return _without_blank_tail(self._rows(cursor), "empty row")

    def _rows(self, cursor: dict[str, int] | None) -> Iterator[tuple[Row, dict[str, int]]]:
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
        pa, pq = pyarrow()
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
            if not (isinstance(text, str) and text.strip()):
                error = "empty text"
            else:
                reason = text_problem(text)
                error = reason and f"the text {reason}"
            yield Row(i, i + 1, None if error else text, error=error), {"index": i + 1}


def open_reader(source: str | list[str], fmt: str | None = None, text_field: str = "text",
                id_field: str | None = None) -> Reader:
    """The reader of a file (``"-"``: stdin), or of a list of texts."""
    if not isinstance(source, str):
        return ListReader(source)
    fmt = input_format(source, fmt)
    check_input(source)
    if fmt in ("txt", "jsonl"):
        return LineReader(source, fmt, text_field, id_field)
    if fmt in ("csv", "tsv"):
        return CsvReader(source, fmt, text_field, id_field)
    if source == "-":
        raise JobError("Parquet input is read from a file, not stdin")
    return ParquetReader(source, fmt, text_field, id_field)

