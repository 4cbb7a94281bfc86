"""What the parts of a batch job share: :class:`Row` (one input record), :class:`JobError`, the pyarrow import."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


class JobError(ValueError):
    """A job cannot go on: a malformed row (with on_error="stop"), a bad option, a foreign manifest."""


class NothingEmbeddedError(JobError):
    """The job ran and wrote nothing: the input has no rows, or every row was skipped (no output is left).

    ``reasons`` counts the skipped rows by the start of their reason (``"no field 'text'"``), so that an
    interface can add its own hint (the CLI names ``--text-field``).
    """

    def __init__(self, message: str, reasons: dict[str, int] | None = None) -> None:
        super().__init__(message)
        self.reasons = dict(reasons or {})


class JobMismatchError(JobError):
    """``OUTPUT.partial/`` holds an unfinished job that differs from this one.

    ``changes`` lists ``(field, before, now)`` per differing part of the job (nested settings dotted:
    ``params.dimensions``, ``pooler_config.pooling_type``); the field ``source`` means this job reads
    stdin or texts, which cannot resume. The message is in Python words; the CLI words it in flags.
    """

    def __init__(self, directory: str, changes: list[tuple[str, Any, Any]]) -> None:
        self.directory, self.changes = directory, changes
        fields = ", ".join(field for field, _, _ in changes)
        super().__init__(f"{directory} holds an unfinished job that differs from this one in {fields}: run the "
                         f"same job as before to resume it, or pass restart=True to start over")


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

