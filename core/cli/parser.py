"""What the ``poolkit`` subcommands share: exit statuses, argparse types, the help formatter and the engine flags.

Each subcommand lives in its own module (``embed``, ``serve``, ``models``, ``plugins``) with an
``add_parser(subparsers)`` that registers it and a ``run(args)`` that runs it; :mod:`poolkit.cli`
(``build_parser``, ``main``) imports them, and they import this module. The flags that become
:class:`poolkit.Engine` arguments are defined once, in :data:`ENGINE_FLAGS`: :func:`add_engine_args`
adds them to a subcommand and :func:`engine_kwargs` turns the parsed values into Engine keywords.
"""

from __future__ import annotations

import argparse
import json
import math
from typing import Any

_DTYPE_ALIASES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}  # the Engine accepts them too

# One exit status per kind of failure, the same in every subcommand.
EXIT_FAILURE = 1  # the command ran and failed: a model that cannot load, a port in use, a job that produced nothing
EXIT_USAGE = 2  # the command line or its input is wrong (argparse's own status): a bad flag or value, a missing
#                 input, an output that exists; reported before any model loads


def bounded_int(low: int, high: int | None = None) -> Any:
    """An argparse ``type`` for an integer in ``[low, high]``: a bad value is argparse's usage error naming the flag."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < low or (high is not None and value > high):
            span = f"between {low} and {high}" if high is not None else f"at least {low}"
            raise argparse.ArgumentTypeError(f"must be {span}, got {value}")
        return value

    parse.__name__ = "integer"
    return parse


def bounded_float(low: float, high: float | None = None) -> Any:
    """An argparse ``type`` for a finite number in ``[low, high]``."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not math.isfinite(value) or value < low or (high is not None and value > high):
            span = f"between {low:g} and {high:g}" if high is not None else f"at least {low:g}"
            raise argparse.ArgumentTypeError(f"must be {span}, got {text}")
        return value

    parse.__name__ = "number"
    return parse


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Keeps descriptions as written and appends each option's default unless its help states it."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "(default" in text or "%(default)" in text or not action.option_strings \
                or action.default in (None, False, argparse.SUPPRESS):
            return text
        return text + " (default: %(default)s)"


def _dtype(value: str) -> str:
    value = value.lower()
    return _DTYPE_ALIASES.get(value, value)


# Each flag's dest is the Engine argument of the same name; JSON_FLAGS are parsed by engine_kwargs.
ENGINE_FLAGS: tuple[tuple[tuple[str, ...], dict[str, Any]], ...] = (
    (("--runner",), dict(default="auto", choices=("auto", "pooling"), help="model runner (pooling only)")),
    (("--convert",), dict(default="auto", choices=("auto", "none", "embed", "classify"),
                          help="run a model as another kind (see docs/configuration.md)")),
    (("--pooler-config",), dict(metavar="JSON", help="pooler settings, e.g. '{\"pooling_type\": \"MEAN\"}'")),
    (("--hf-overrides",), dict(metavar="JSON", help="keys merged into config.json before it is read")),
    (("--dtype",), dict(default="auto", type=_dtype, choices=("auto", "float32", "bfloat16", "float16"),
                        help="auto: float32 on CPU, bfloat16 on GPU; float16 is GPU only")),
    (("--device",), dict(default="auto", help="auto (CUDA when available), cpu, cuda or cuda:N")),
    (("--kernels",), dict(default="auto", choices=("auto", "torch"),
                          help="auto: oneDNN prepacked linears on CPU when they pass a probe; torch: plain F.linear")),
    (("--quantization",), dict(default=None, choices=("int8",),
                               help="int8: the encoder's linears as int8 matmuls, per-channel weight and per-token "
                                    "activation scales, the rest bfloat16 (CPU; BERT and RoBERTa embedding models)")),
    (("--max-model-len",), dict(type=bounded_int(1), metavar="N",
                                help="the limit on tokens per input (default: the Sentence Transformers "
                                     "max_seq_length, else the model's position limit)")),
    (("--auto-truncate",), dict(action=argparse.BooleanOptionalAction, default=None,
                                help="truncate inputs longer than max_model_len (--auto-truncate) or refuse them "
                                     "(--no-auto-truncate, OpenAI's behaviour: serve answers 400, embed reports a "
                                     "row error) (default: truncate for models with a Sentence Transformers "
                                     "max_seq_length, refuse for the others)")),
    (("--max-batch-tokens",), dict(type=bounded_int(1), metavar="N",
                                   help="token budget of one forward pass (default: 2048 at float32, "
                                        "4096 at bfloat16/float16: about the same time a pass)")),
    (("--io-processor-plugin",), dict(metavar="NAME", help="IO processor of the 'plugin' task (/pooling) "
                                                           "(default: config.json's io_processor_plugin)")),
    (("--trust-remote-code",), dict(action="store_true",
                                    help="allow the model's own Python code from the hub (tokenizer, config) to run")),
    (("--revision",), dict(help="hub revision (branch, tag or commit) of the model(s) (default: main)")),
    # image inputs (vLLM's flags)
    (("--allowed-media-domains",), dict(nargs="+", metavar="HOST",
                                        help="hosts whose http(s) image URLs are fetched (default: none: a remote "
                                             "image URL is a 400, never fetched)")),
    (("--allowed-local-media-path",), dict(metavar="DIR", help="directory whose files file:// image URLs (and "
                                                               "clients' local paths) may read (default: none)")),
)
JSON_FLAGS = ("pooler_config", "hf_overrides")

def _dest(flags: tuple[str, ...]) -> str:
    return flags[0].lstrip("-").replace("-", "_")


def add_engine_args(parser: argparse.ArgumentParser) -> None:
    """Add :data:`ENGINE_FLAGS` to ``parser``, as a group of their own."""
    group = parser.add_argument_group("engine options", "how the model is loaded and run: the poolkit.Engine "
                                                        "arguments of the same names")
    for flags, options in ENGINE_FLAGS:
        group.add_argument(*flags, **options)


def engine_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """The :class:`poolkit.Engine` keyword arguments of the parsed engine flags (JSON flags decoded).

    A bad JSON flag is a ``ValueError`` naming the flag (:func:`main` prints it, exit status 2): invalid
    JSON, or a ``--pooler-config`` key or value :class:`poolkit.config.PoolerConfig` refuses.
    """
    kwargs = {_dest(flags): getattr(args, _dest(flags)) for flags, _ in ENGINE_FLAGS}
    for name in JSON_FLAGS:
        kwargs[name] = json_arg(kwargs[name], "--" + name.replace("_", "-"))
    if kwargs["hf_overrides"] is not None and not isinstance(kwargs["hf_overrides"], dict):
        raise ValueError(f"--hf-overrides must be a JSON object, got {args.hf_overrides!r}")
    if kwargs["pooler_config"] is not None:
        from pydantic import ValidationError

        from poolkit.config import PoolerConfig

        try:
            PoolerConfig.model_validate(kwargs["pooler_config"])
        except ValidationError as exc:
            raise ValueError(validation_message(exc, "--pooler-config", PoolerConfig)) from None
    return kwargs


def json_arg(value: str | None, flag: str = "the flag") -> Any:
    """A JSON flag's value, decoded; invalid JSON is a ``ValueError`` naming the flag and the value."""
    if value is None:
        return None
    try:
        return json.loads(value)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{flag}: invalid JSON {value!r} ({exc})") from None


def validation_message(exc: Any, where: str | None = None, model: Any = None,
                       flags: argparse.ArgumentParser | None = None) -> str:
    """A pydantic ``ValidationError`` as CLI text: one line per error, "field: message (got value)", no URL.

    ``where`` prefixes each field (``--pooler-config``: its keys); an unknown key lists ``model``'s
    fields; a field that is also a flag of ``flags`` (``dimensions``) is named as that flag.
    """
    lines = []
    for error in exc.errors(include_url=False):
        field = ".".join(str(part) for part in error.get("loc", ())) or "value"
        option = "--" + field.replace("_", "-")
        if where is None and flags is not None and option in flags._option_string_actions:
            name = option
        else:
            name = f"{where} key {field!r}" if where else field
        if error.get("type") == "extra_forbidden":
            valid = f"; valid keys: {', '.join(model.model_fields)}" if model is not None else ""
            lines.append(f"{where + ': ' if where else ''}unknown key {field!r}{valid}")
        else:
            lines.append(f"{name}: {error.get('msg', 'invalid')} (got {error.get('input')!r})")
    return "\n".join(lines) or str(exc)


class Parser(argparse.ArgumentParser):
    """``poolkit``'s parser and every subcommand's: no abbreviated flags (``--max-batch-token`` is an error,
    not ``--max-batch-tokens``), so that a flag added later never changes what an old command line means."""

    def __init__(self, *args: Any, allow_abbrev: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, allow_abbrev=allow_abbrev, **kwargs)
