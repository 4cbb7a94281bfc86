"""Batch jobs: stream texts from a file through an :class:`~poolkit.Engine` into Parquet, .npy or JSONL.

``poolkit embed INPUT -o OUTPUT`` is :func:`run_job` (or :func:`embed_file`). The parts:

- :mod:`~poolkit.jobs.readers`: input formats (txt, JSONL, CSV/TSV, Parquet, texts in memory),
  read from a saved cursor on; malformed records carry their line number and reason.
- :mod:`~poolkit.jobs.writers`: output formats (Parquet, .npy, JSONL), appended durably chunk by chunk.
- :mod:`~poolkit.jobs.manifest`: ``OUTPUT.partial/`` and its manifest, what an interrupted job resumes from.
- :mod:`~poolkit.jobs.run`: the job: options, the chunk loop over :meth:`Engine.pool
  <poolkit.Engine.pool>`, the progress bar, the summary line.
"""

from poolkit.jobs.common import JobError, JobMismatchError, NothingEmbeddedError, Row
from poolkit.jobs.manifest import MANIFEST_VERSION, JobState, partial_dir
from poolkit.jobs.readers import (
    INPUT_EXTENSIONS,
    INPUT_FORMATS,
    CsvReader,
    LineReader,
    ListReader,
    ParquetReader,
    Reader,
    check_input,
    input_format,
    open_reader,
    text_problem,
)
from poolkit.jobs.run import (
    ON_ERROR,
    OUTPUT_COLUMNS,
    TASKS,
    EmbedJob,
    JobResult,
    check_output,
    embed_file,
    logger,
    run_job,
    summary,
)
from poolkit.jobs.writers import (
    OUTPUT_EXTENSIONS,
    OUTPUT_FORMATS,
    WRITERS,
    JsonlWriter,
    NpyWriter,
    ParquetWriter,
    Writer,
    output_format,
)

__all__ = [
    "INPUT_EXTENSIONS", "INPUT_FORMATS", "MANIFEST_VERSION", "ON_ERROR", "OUTPUT_COLUMNS", "OUTPUT_EXTENSIONS",
    "OUTPUT_FORMATS", "TASKS", "WRITERS",
    "CsvReader", "EmbedJob", "JobError", "JobMismatchError", "JobResult", "JobState", "JsonlWriter", "LineReader",
    "ListReader", "NothingEmbeddedError", "NpyWriter", "ParquetReader", "ParquetWriter", "Reader", "Row", "Writer",
    "check_input", "check_output", "embed_file", "input_format", "logger", "open_reader", "output_format",
    "partial_dir", "run_job", "summary", "text_problem",
]
