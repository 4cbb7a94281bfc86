"""``poolkit serve``: one or more pooling models over an OpenAI-compatible HTTP API (:mod:`poolkit.server`)."""

from __future__ import annotations

import argparse
import logging
import os
import sys

from poolkit.cli.parser import HelpFormatter, add_engine_args, engine_kwargs
from poolkit.logs import LEVELS

DESCRIPTION = (
    "Serve one or more pooling models: /v1/embeddings, /pooling, /classify, /score, /rerank, /tokenize, "
    "/v1/models, /health, /metrics, /docs.\n\n"
    "Every model loads before the port is bound; one that cannot load ends the command with status 1 and one "
    "line on stderr naming it.\n\n"
    "Truncation: a model with a Sentence Transformers max_seq_length truncates longer inputs to it (as "
    "SentenceTransformer.encode does); for other models, or with --no-auto-truncate, an input longer than "
    "max_model_len is a 400. A request's truncate_prompt_tokens always truncates. /v1/models and /tokenize "
    "report the max_model_len actually applied.")
EPILOG = ("Environment: POOLKIT_API_KEY (the API key when --api-key is not given), "
          "POOLKIT_LOG_LEVEL (when --log-level is not given).")


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    serve = sub.add_parser("serve", help="serve models over an OpenAI-compatible HTTP API",
                           formatter_class=HelpFormatter, description=DESCRIPTION, epilog=EPILOG)
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
    serve.add_argument("--max-concurrent-requests", type=int, default=512,
                       help="requests in flight per model; beyond this: 429")
    serve.add_argument("--max-queue-tokens", type=int, default=1_000_000, help="queued tokens beyond this: 429 "
                       "(one request larger than this: 413)")
    serve.add_argument("--max-client-batch-size", type=int, default=1024, help="inputs per request beyond this: 413")
    serve.add_argument("--max-body-bytes", type=int, default=8 * 1024 * 1024, help="request bodies beyond this: 413")
    serve.add_argument("--shutdown-timeout", type=float, default=30.0, metavar="SECONDS",
                       help="on SIGTERM, how long requests in flight may finish; what is left gets a JSON 503")
    serve.add_argument("--background-load", action="store_true",
                       help="bind at once and load the models in the background (/health is 503 until they are "
                            "loaded; a load failure shows there), for orchestrators that probe /health")
    serve.add_argument("--log-level", type=str.lower, choices=LEVELS,
                       help="log level of poolkit and uvicorn (default: $POOLKIT_LOG_LEVEL, else info)")
    serve.add_argument("--access-log", action="store_true", help="log one line per HTTP request (uvicorn's access log)")
    add_engine_args(serve)
    serve.set_defaults(func=run)
    return serve


def run(args: argparse.Namespace) -> int:
    # before torch loads: OpenMP's idle threads spin ~10,000 rounds (tens of us) before they sleep, instead of
    # GNU OpenMP's 300,000, so that a server sharing its cores with its HTTP thread and with other processes
    # does not burn them between requests, while the ops of one forward pass still find their threads awake
    # (OMP_WAIT_POLICY=PASSIVE costs ~4 ms per MiniLM forward; bench/serve_load.py, docs/performance.md)
    if "OMP_WAIT_POLICY" not in os.environ:
        os.environ.setdefault("GOMP_SPINCOUNT", "10000")
    try:
        import uvicorn

        from poolkit.server.app import create_app
        from poolkit.server.run import serve
        from poolkit.server.state import Limits
        from poolkit.server.engine_loop import EngineLoop
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
    engine_args = engine_kwargs(args)

    def build(name: str, model: str):
        from poolkit import Engine

        return Engine(model, served_model_name=name, **engine_args)

    def load_engines() -> dict:  # --background-load: after the port is bound, failures shown by /health
        return {name: build(name, model) for name, model in zip(names, models)}

    engines: dict = {}
    if not args.background_load:  # fail fast: every model loads before the port is bound
        for name, model in zip(names, models):
            try:
                engines[name] = build(name, model)
            except Exception as exc:  # one line naming the model and the cause; the traceback at debug level
                log.debug("loading %s failed", model, exc_info=True)
                cause = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
                print(f"poolkit serve: error: cannot load model {model!r}: {type(exc).__name__}: {cause}",
                      file=sys.stderr)
                return 1
    limits = Limits(max_client_batch_size=args.max_client_batch_size, max_body_bytes=args.max_body_bytes,
                    max_concurrent_requests=args.max_concurrent_requests, max_queue_tokens=args.max_queue_tokens,
                    max_batch_tokens=args.max_batch_tokens)
    api_key = args.api_key if args.api_key is not None else os.environ.get("POOLKIT_API_KEY") or None
    engine_loop = EngineLoop()
    app = create_app(load_engines if args.background_load else lambda: engines, limits=limits, api_key=api_key, engine_loop=engine_loop,
                     background_load=args.background_load, shutdown_timeout=args.shutdown_timeout)
    config = uvicorn.Config(app, host=args.host, port=args.port, log_level=level, access_log=args.access_log)
    import torch

    log.info("serving %s on http://%s:%d with %d torch threads; limits: %s; shutdown timeout %g s; API key %s",
             names, args.host, args.port, torch.get_num_threads(), vars(limits), args.shutdown_timeout,
             "required" if api_key else "not required")
    return serve(app, engine_loop, config)
