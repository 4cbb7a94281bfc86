"""``poolkit serve``: one or more pooling models over an OpenAI-compatible HTTP API (:mod:`poolkit.server`)."""

from __future__ import annotations

import argparse
import errno
import json
import logging
import os
import socket
import sys

from poolkit.cli.parser import (EXIT_FAILURE, EXIT_USAGE, HelpFormatter, add_engine_args, bounded_float, bounded_int,
                                engine_kwargs)
from poolkit.logs import FORMATS, LEVELS

DESCRIPTION = (
    "Serve one or more pooling models: /v1/embeddings, /pooling, /classify, /score, /rerank, /tokenize, "
    "/v1/models, /health, /version, /metrics, /docs, and TEI's API (a TEI route picks its model by ?model= or "
    "an X-Model header).\n\n"
    "The port is bound first, then every model loads (a port in use, or a model that cannot load, ends the "
    "command with status 1 and one line on stderr; a bad flag value with status 2, before anything loads).\n\n"
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
    serve.add_argument("--port", type=bounded_int(1, 65535), default=8000, help="port (1-65535)")
    serve.add_argument("--api-key", help="require 'Authorization: Bearer KEY' on every route but the health probes "
                                         "(/health, /ping, GET /), /version and the API docs (/docs, "
                                         "/openapi.json) (default: $POOLKIT_API_KEY; none: no key required). "
                                         "Prefer the environment variable: a flag is visible to every user in ps")
    serve.add_argument("--max-concurrent-requests", type=bounded_int(1), default=512,
                       help="requests in flight per model; beyond this: 429")
    serve.add_argument("--max-queue-tokens", type=bounded_int(1), default=1_000_000, help="queued tokens beyond "
                       "this: 429 (one request larger than this: 413)")
    serve.add_argument("--max-client-batch-size", type=bounded_int(1), default=1024,
                       help="inputs per request beyond this: 413")
    serve.add_argument("--max-body-bytes", type=bounded_int(1), default=8 * 1024 * 1024,
                       help="request bodies beyond this: 413")
    serve.add_argument("--shutdown-timeout", type=bounded_float(0), default=30.0, metavar="SECONDS",
                       help="on SIGTERM or Ctrl-C, how long requests in flight may finish; what is left gets a JSON "
                            "503 (a second Ctrl-C exits at once)")
    serve.add_argument("--ssl-keyfile", metavar="FILE", help="serve HTTPS with this private key (PEM; with "
                                                             "--ssl-certfile)")
    serve.add_argument("--ssl-certfile", metavar="FILE", help="the certificate (chain) of --ssl-keyfile (PEM)")
    serve.add_argument("--allowed-origins", type=_string_list, action="extend", nargs="+", metavar="ORIGIN",
                       help="let pages from these origins call the API from a browser (CORS), e.g. "
                            "http://localhost:3000, or * for any; also a JSON list, as vLLM takes it "
                            "(default: none: browsers allow same-origin pages only)")
    serve.add_argument("--allowed-methods", type=_string_list, action="extend", nargs="+", metavar="METHOD",
                       help="HTTP methods allowed cross-origin, with --allowed-origins (default: *)")
    serve.add_argument("--allowed-headers", type=_string_list, action="extend", nargs="+", metavar="HEADER",
                       help="request headers allowed cross-origin, with --allowed-origins (default: *)")
    serve.add_argument("--allow-credentials", action="store_true",
                       help="allow cross-origin requests with credentials (cookies, Authorization), with "
                            "--allowed-origins")
    serve.add_argument("--background-load", action="store_true",
                       help="bind at once and load the models in the background (/health is 503 until they are "
                            "loaded; a load failure shows there), for orchestrators that probe /health")
    serve.add_argument("--log-level", type=str.lower, choices=LEVELS,
                       help="log level of poolkit and uvicorn (default: $POOLKIT_LOG_LEVEL, else info)")
    serve.add_argument("--log-format", choices=FORMATS, default="text",
                       help="json: every log record (poolkit's and uvicorn's, the access log included) as one JSON "
                            "object a line on stderr, a traceback in its 'exception' field")
    serve.add_argument("--access-log", action="store_true", help="log one line per HTTP request (uvicorn's access log)")
    add_engine_args(serve)
    serve.set_defaults(func=run)
    return serve


def _string_list(text: str) -> list[str]:
    """One value of a list flag: a plain string, or a JSON list of strings (vLLM's '["http://a", "http://b"]')."""
    if text.lstrip().startswith("["):
        try:
            values = json.loads(text)
        except json.JSONDecodeError as exc:
            raise argparse.ArgumentTypeError(f"invalid JSON list {text!r}: {exc}") from None
        if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
            raise argparse.ArgumentTypeError(f"expected a JSON list of strings, got {text!r}")
        return values
    return [text]


def _flat(groups: list[list[str]] | None) -> list[str]:
    """A list flag's values: each value given (a string or a JSON list) is a list of its own."""
    return [v for group in groups or () for v in group]


def bind(host: str, port: int) -> socket.socket:
    """A socket bound to ``host:port`` before any model loads, handed to uvicorn, which listens on it (no second
    bind, so no race); OSError (the port in use, an address this machine does not have) for the caller."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn: a port in TIME_WAIT is free
        sock.bind((host, port))  # not listening yet: until uvicorn listens, a connection is refused, not held
    except BaseException:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


def run(args: argparse.Namespace) -> int:
    # before torch loads: OpenMP's idle threads spin ~10,000 rounds (tens of us) before they sleep, instead of
    # GNU OpenMP's 300,000, so that a server sharing its cores with its HTTP thread and with other processes
    # does not burn them between requests, while the ops of one forward pass still find their threads awake
    # (OMP_WAIT_POLICY=PASSIVE costs ~4 ms per MiniLM forward; bench/serve_load.py, docs/performance.md)
    if "OMP_WAIT_POLICY" not in os.environ:
        os.environ.setdefault("GOMP_SPINCOUNT", "10000")
    from poolkit.logs import configure_logging, log_level

    level = log_level(args.log_level)
    configure_logging(level, args.log_format)
    log = logging.getLogger("poolkit.server")
    models = [args.model_path, *(args.model or [])]
    names = list(args.served_model_name or [])
    if len(names) > len(models):
        raise ValueError(f"{len(names)} --served-model-name values for {len(models)} models: give at most one per model")
    names += [str(m) for m in models[len(names):]]
    if len(set(names)) != len(names):
        raise ValueError(f"served model names must be unique, got {names}: give each model its own --served-model-name")
    engine_args = engine_kwargs(args)
    ssl = _ssl_options(args)
    if ssl is None:
        return EXIT_USAGE
    try:  # before any model loads: a port in use costs nothing
        sock = bind(args.host, args.port)
    except OSError as exc:
        why = "is in use" if exc.errno == errno.EADDRINUSE else f"cannot be bound: {exc.strerror or exc}"
        print(f"poolkit serve: error: port {args.port} on {args.host} {why} (choose another with --port or --host)",
              file=sys.stderr)
        return EXIT_FAILURE
    try:  # after the bind: these bring torch (seconds), which a port in use should not wait for
        import uvicorn

        from poolkit.server.app import CORS, create_app
        from poolkit.server.run import serve
        from poolkit.server.state import Limits
        from poolkit.server.engine_loop import EngineLoop
    except ImportError as exc:
        sock.close()
        raise SystemExit(f"poolkit serve needs the server extra: pip install 'poolkit[server]' ({exc})") from None

    def build(name: str, model: str):
        from poolkit import Engine

        return Engine(model, served_model_name=name, **engine_args)

    def load_engines() -> dict:  # --background-load: after the port is bound, failures shown by /health
        return {name: build(name, model) for name, model in zip(names, models)}

    engines: dict = {}
    if not args.background_load:  # fail fast: every model loads before the server answers
        for name, model in zip(names, models):
            try:
                engines[name] = build(name, model)
            except Exception as exc:  # one line naming the model and the cause; the traceback at debug level
                sock.close()
                log.debug("loading %s failed", model, exc_info=True)
                cause = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
                print(f"poolkit serve: error: cannot load model {model!r}: {type(exc).__name__}: {cause}",
                      file=sys.stderr)
                return EXIT_FAILURE
    limits = Limits(max_client_batch_size=args.max_client_batch_size, max_body_bytes=args.max_body_bytes,
                    max_concurrent_requests=args.max_concurrent_requests, max_queue_tokens=args.max_queue_tokens,
                    max_batch_tokens=args.max_batch_tokens)
    api_key = args.api_key if args.api_key is not None else os.environ.get("POOLKIT_API_KEY") or None
    cors = CORS(allowed_origins=_flat(args.allowed_origins), allowed_methods=_flat(args.allowed_methods) or ["*"],
                allowed_headers=_flat(args.allowed_headers) or ["*"], allow_credentials=args.allow_credentials)
    engine_loop = EngineLoop()
    app = create_app(load_engines if args.background_load else lambda: engines, limits=limits, api_key=api_key,
                     engine_loop=engine_loop, background_load=args.background_load,
                     shutdown_timeout=args.shutdown_timeout, cors=cors)
    config = uvicorn.Config(app, host=args.host, port=args.port, log_level=level, access_log=args.access_log,
                            **ssl, **({"log_config": None} if args.log_format == "json" else {}))
    import torch

    shown = {k: v for k, v in vars(limits).items() if v is not None}  # max_batch_tokens: per model, once loaded
    scheme = "https" if ssl else "http"
    host = f"[{args.host}]" if ":" in args.host else args.host
    log.info("serving %s on %s://%s:%d with %d torch threads; limits: %s; shutdown timeout %g s; API key %s%s",
             names, scheme, host, args.port, torch.get_num_threads(), shown, args.shutdown_timeout,
             "required" if api_key else "not required",
             f"; CORS origins {cors.allowed_origins}" if cors.allowed_origins else "")
    return serve(app, engine_loop, config, sockets=[sock])


def _ssl_options(args: argparse.Namespace) -> dict | None:
    """uvicorn's ssl_keyfile/ssl_certfile, checked now (before any model loads); None after printing why not."""
    if not args.ssl_keyfile and not args.ssl_certfile:
        return {}
    if not (args.ssl_keyfile and args.ssl_certfile):
        print("poolkit serve: error: --ssl-keyfile and --ssl-certfile go together: give both", file=sys.stderr)
        return None
    import ssl

    try:
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(args.ssl_certfile, args.ssl_keyfile)
    except (OSError, ssl.SSLError) as exc:
        print(f"poolkit serve: error: cannot use --ssl-certfile {args.ssl_certfile!r} with --ssl-keyfile "
              f"{args.ssl_keyfile!r}: {exc}", file=sys.stderr)
        return None
    return {"ssl_keyfile": args.ssl_keyfile, "ssl_certfile": args.ssl_certfile}
