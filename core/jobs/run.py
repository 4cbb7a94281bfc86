"""The batch job itself: :func:`run_job` streams an input through an :class:`~poolkit.Engine` into an output.

``poolkit embed INPUT -o OUTPUT`` is :func:`run_job`. The input is read in chunks of ``chunk_size``
texts; each chunk is prepared (``Engine.prepare``) and run through :meth:`Engine.execute
<poolkit.Engine.execute>` (the engine's pooling loop: batches under its token budget, one ``on_batch``
call per forward pass, which moves the progress bar), then written and dropped, so memory stays flat whatever the input's size.
Malformed rows stop the job with their line number (``on_error="stop"``) or are skipped, reported one
line each and counted (``"skip"``); never dropped silently. Reports go to the ``poolkit.jobs`` logger
(or to :func:`run_job`'s ``log`` stream); the library prints nothing but its progress bar. An
interrupted job resumes from its manifest (:mod:`poolkit.jobs.manifest`).
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from poolkit.jobs.common import JobError, NothingEmbeddedError, Row
from poolkit.jobs.manifest import JobState
from poolkit.jobs.readers import Reader, open_reader
from poolkit.jobs.writers import WRITERS, output_format

TASKS = ("embed", "classify", "token_embed", "token_classify")
OUTPUT_COLUMNS = {"embed": "embedding", "classify": "probs", "token_embed": "token_embeddings",
                  "token_classify": "token_probs"}
ON_ERROR = ("stop", "skip")
logger = logging.getLogger("poolkit.jobs")  # skipped rows (WARNING) and a resumed run's position (INFO)


@dataclass
class EmbedJob:
    """What to run over which input, and where the results go. See :mod:`poolkit.jobs`.

    :param source: an input file path (``"-"``: stdin, txt or JSONL), or a list of texts.
    :param output: the output file; None writes JSONL to stdout (not resumable).
    :param task: embed, classify, token_embed or token_classify.
    :param chunk_size: texts read, run and written at a time (a Parquet row group each).
    :param on_error: ``"stop"`` at the first malformed row, or ``"skip"`` it (reported and counted).
    :param restart: discard an unfinished run of this output instead of resuming it.
    :param overwrite: replace an ``output`` that exists (when the job completes); without it, an
        existing output is refused before anything runs. The input file itself is always refused.
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
    overwrite: bool = False
    progress: bool = True


@dataclass
class JobResult:
    output: str | None
    rows: int  # rows in the output
    skipped: int  # malformed rows skipped (on_error="skip")
    dim: int | None  # the last dimension of each result
    resumed_rows: int  # rows an earlier, interrupted run had written
    seconds: float  # this run's wall time
    labels: list[str] | None = None  # classify: the label of each probs column (the model's id2label)


def check_output(output: str | Path, mkdir: bool = False, hint: str = " (pass --mkdir to create it)", *,
                 source: str | list[str] | None = None, overwrite: bool = False,
                 overwrite_hint: str = "pass --overwrite to replace it") -> None:
    """Fail now, with a :class:`JobError` naming ``output`` and the reason, if the job could not write it.

    Its directory must exist (``mkdir=True`` creates it and any missing parent; otherwise the error
    ends with ``hint``) and be writable; ``output`` itself must not be a directory, nor the input file
    ``source`` (by any path or link), nor exist unless ``overwrite`` (the error then ends with
    ``overwrite_hint``).
    """
    output = Path(output)
    parent = output.parent
    if output.is_dir():
        raise JobError(f"cannot write {output}: it is a directory")
    if isinstance(source, (str, Path)) and str(source) != "-" and os.path.exists(source) and (
            os.path.realpath(source) == os.path.realpath(output)
            or (output.exists() and os.path.samefile(source, output))):
        raise JobError(f"cannot write {output}: it is the input file {source}; choose another output")
    if (output.exists() or output.is_symlink()) and not overwrite:
        raise JobError(f"{output} exists; {overwrite_hint}")
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


def embed_file(engine: Any, source: str | list[str], output: str | None = None, **options: Any) -> JobResult:
    """Run ``task`` (default embed) over every text of ``source`` into ``output``: :class:`EmbedJob`'s options."""
    return run_job(engine, EmbedJob(source, output, **options))


def run_job(engine: Any, job: EmbedJob, *, log: Any = None) -> JobResult:
    """Stream ``job.source`` through ``engine`` into ``job.output``, resuming an interrupted run of it.

    Skipped rows (a warning each) and a resumed run's position (info) go to ``log``, a text stream,
    when given, else to the ``poolkit.jobs`` logger; nothing is printed.
    """
    from poolkit.model.loading import release_freed_memory
    from poolkit.params import PoolingParams

    start_time = time.perf_counter()
    if job.task not in TASKS:
        raise JobError(f"task {job.task!r}; a batch job runs one of {', '.join(TASKS)}")
    if job.on_error not in ON_ERROR:
        raise JobError(f"on_error={job.on_error!r}; use 'stop' or 'skip'")
    if job.chunk_size < 1:
        raise JobError("chunk_size must be positive")
    out_format = output_format(job.output, job.output_format)
    if job.output is None and out_format != "jsonl":
        raise JobError(f"{out_format} output needs an output file")
    if out_format == "npy" and job.task.startswith("token_"):
        raise JobError(f"{job.task} gives a matrix per text, which a .npy matrix cannot hold: write .parquet or .jsonl")
    if job.output is not None:  # a clear error, not an OSError from deep inside the job
        check_output(job.output, mkdir=True, source=job.source, overwrite=job.overwrite,
                     overwrite_hint="overwrite=True replaces it")
    params = PoolingParams(dimensions=job.dimensions, normalize=job.normalize, use_activation=job.use_activation,
                           truncate_prompt_tokens=job.truncate_prompt_tokens)
    engine.prepare(["probe"], job.task, params, prompt_name=job.prompt_name)  # options fail now, not mid-job
    reader = open_reader(job.source, job.input_format, job.text_field, job.id_field)
    column = job.output_column or OUTPUT_COLUMNS[job.task]
    metadata = {"poolkit.model": str(engine.model_config.name), "poolkit.task": job.task}
    labels = None
    if job.task == "classify":  # each text's top label beside its probs, as vLLM's /classify answers
        id2label = engine.id2label
        labels = [id2label.get(i, f"LABEL_{i}") for i in range(max(id2label, default=-1) + 1)] or None
        if labels:
            metadata["poolkit.labels"] = json.dumps(labels)

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
        writer = WRITERS[out_format](state, column, job.id_field, reader.id_type, metadata, labels=labels,
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
                        if state is not None and state.resumed and state.manifest["job"] is not None else "")
                raise JobError(f"{where}: {reason} (pass --on-error skip to skip malformed rows{kept})")
            note(f"poolkit: skipped {where}: {reason}")
            key = reason.split(" (")[0]
            reasons[key] = reasons.get(key, 0) + 1
            examples.setdefault(key, reason)

        reasons: dict[str, int] = {}  # the skipped rows by the start of their reason, and one full reason each
        examples: dict[str, str] = {}

        batches, any_record = 0, manifest["cursor"] is not None
        rows_done, skipped, dim = manifest["rows"], manifest["skipped"], manifest["dim"]

        def forward_pass_done(n: int) -> None:  # Engine.pool's on_batch: the bar moves by each pass's texts
            nonlocal batches
            batches += 1
            if bar is not None:
                bar.set_postfix(batches=batches, refresh=False)
                bar.update(n)

        for chunk, cursor in _chunks(reader.rows(manifest["cursor"]), job.chunk_size):
            any_record = True
            good, requests, failed = _prepare(engine, job, params, [r for r in chunk if not r.error])
            for row, reason in sorted([(r, r.error) for r in chunk if r.error] + failed, key=lambda f: f[0].index):
                report(row, reason)  # in input order: with on_error="stop", the first one stops the job
                skipped += 1
            if bar is not None and len(good) < len(chunk):
                bar.update(len(chunk) - len(good))  # the skipped rows are done too
            results = engine.execute(requests, on_batch=forward_pass_done)  # per request, in input order
            values: list[Any] = [o.outputs.data.numpy() for outputs in results for o in outputs]
            if values:
                dim = int(values[0].shape[-1])
            changes = writer.write(good, values)  # durable before the manifest says so
            rows_done += len(good)
            if state is not None:
                state.commit(cursor=cursor, rows=rows_done, skipped=skipped, dim=dim, **changes)
            del chunk, good, requests, results, values
            release_freed_memory(collect=False)  # the chunk's heap back to the OS: RSS stays flat
        if not any_record:
            raise NothingEmbeddedError(f"nothing to embed: {reader.name} has no rows")
        if not rows_done:
            why = "; ".join(f"{examples[key]} ({n} row{'s' if n != 1 else ''})"
                            for key, n in sorted(reasons.items(), key=lambda kv: -kv[1])[:3])
            if state is not None:
                state.remove()  # read to the end: nothing left to resume
            raise NothingEmbeddedError(f"0 of {skipped} rows embedded: every row was skipped: {why}", reasons)
        if state is not None:
            writer.finish(job.output)
            state.remove()
        return JobResult(job.output, rows_done, skipped, dim, resumed_rows, time.perf_counter() - start_time, labels)
    except BaseException:
        if state is not None and not state.resumed:  # nothing committed, nothing to resume: no OUTPUT.partial/ left
            state.remove()
        raise
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


def _prepare(engine: Any, job: EmbedJob, params: Any, rows: list[Row]) -> tuple[list[Row], list[Any], list]:
    """A chunk as prepared requests (one for the chunk; one per row when the engine refuses some rows: a text
    longer than the model takes), the rows they hold and the refused rows with their reasons."""
    if not rows:
        return [], [], []
    try:
        return rows, [engine.prepare([r.text for r in rows], job.task, params, prompt_name=job.prompt_name)], []
    except (ValueError, TypeError):
        pass
    good, requests, failed = [], [], []
    for row in rows:
        try:
            requests.append(engine.prepare([row.text], job.task, params, prompt_name=job.prompt_name))
        except (ValueError, TypeError) as exc:
            failed.append((row, _row_reason(exc)))
            continue
        good.append(row)
    return good, requests, failed


def _row_reason(exc: Exception) -> str:
    """The engine's refusal of a single text, worded for the row: "the text", not "prompt 0"."""
    text = str(exc)
    too_long = re.match(r"This model's maximum context length is (\d+) tokens\. However, you requested "
                        r"(at least )?(\d+) tokens", text)
    if too_long:
        return (f"the text has {too_long[2] or ''}{too_long[3]} tokens, more than the model's maximum of "
                f"{too_long[1]} (--truncate-prompt-tokens -1 truncates it)")
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
    if result.labels:
        shown = ", ".join(result.labels[:20]) + (", ..." if len(result.labels) > 20 else "")
        text += f"; labels, in the order of each row's probs: {shown}"
    return text
