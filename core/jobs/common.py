"""What the parts of a batch job share: :class:`Row` (one input record), :class:`JobError`, the pyarrow import."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


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


def pyarrow() -> tuple[Any, Any]:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise JobError("Parquet input and output need pyarrow, a dependency of poolkit: pip install pyarrow") from None
    return pa, pq

