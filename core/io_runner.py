"""The ``plugin`` task, orchestrated once: select an IO processor, run requests through it, isolate failures.

The contract is :mod:`poolkit.io_processor`; this is the one place that runs it, offline
(:meth:`IOProcessorRunner.run` / :meth:`~IOProcessorRunner.encode`, for ``Engine.encode(task="plugin")``)
and on the server (``POST /pooling``: :meth:`~IOProcessorRunner.prepare_all` on the model's tokenizer
thread, the engine loop, :meth:`~IOProcessorRunner.respond` on the tokenizer thread). Each raw request
becomes a :class:`PluginRequest`, a :class:`poolkit.request.Prepared` whose ``finish`` is the
processor's ``post_process``. ``Engine`` builds one :class:`IOProcessorRunner` when an IO processor is configured
(``Engine(io_processor_plugin=...)``, else ``config.json``'s ``io_processor_plugin``).
:meth:`IOProcessorRunner.run` takes a batch of raw requests: each is parsed and pre-processed on its
own, the prompts of every request are pooled together (batched by the engine's token budget), and
each request is post-processed on its own. A request that fails yields an :class:`IOProcessorError`
in its slot; the others are unaffected. ``engine`` arguments are that :class:`poolkit.Engine`, typed
``Any``: the engine module imports this one.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from poolkit.io_processor import IOProcessor, IOProcessorContext, IOProcessorError
from poolkit.isolate import run_isolated
from poolkit.params import PoolingParams
from poolkit.errors import UnsupportedTaskError
from poolkit.request import Prepared
from poolkit.registry.errors import UnknownNameError

if TYPE_CHECKING:
    from poolkit.outputs import PoolingRequestOutput
    from poolkit.registry.loading import Entry

CONFIG_FIELD = "io_processor_plugin"
OPTIONS_FIELD = "io_processor_options"
ASYNC_HOOKS = ("parse_request_async", "pre_process_async", "post_process_async")  # vLLM's; poolkit awaits none


def installed_io_processors(engine: Any) -> list[str]:
    """Names of the IO processors the loaded plugins registered."""
    return engine.host.registry("io_processors").names()


def not_configured_error(engine: Any) -> UnsupportedTaskError:
    """The error for ``task="plugin"`` on an Engine without an IO processor: how to configure one."""
    return UnsupportedTaskError(
        f"Task 'plugin' needs an IO processor, and none is configured for '{engine.model_config.served_name}'. "
        f"Select one with Engine(model, io_processor_plugin='<name>') or the field "
        f"\"{CONFIG_FIELD}\": \"<name>\" in the model's config.json (or hf_overrides). Installed IO processors: "
        f"{installed_io_processors(engine)}; 'poolkit plugins --hook register_io_processors' shows who provides them."
    )


@dataclass
class PluginRequest(Prepared):
    """One request after ``parse_request`` and ``pre_process``, tokenized: a :class:`Prepared` whose ``finish``
    is the processor's ``post_process`` of its outputs."""

    runner: IOProcessorRunner | None = None
    index: int = 0
    data: Any = None

    def finish(self, pooled: list[Any]) -> Any:
        return self.runner.finish(self, Prepared.finish(self, pooled))


class IOProcessorRunner:
    """One configured IO processor and the engine it runs on."""

    def __init__(self, engine: Any, name: str, source: str = "io_processor_plugin") -> None:
        self.engine, self.name = engine, name
        registry = engine.host.registry("io_processors")
        try:
            self.entry: Entry = registry.get(name)
        except UnknownNameError as exc:
            raise type(exc)(f"{source}={name!r}: {exc}") from None
        cls = self.entry.load()  # an import failure is a PluginLoadError naming the plugin
        if not (isinstance(cls, type) and issubclass(cls, IOProcessor)):
            raise self._error("__init__", None, TypeError(f"{cls!r} is not a poolkit.IOProcessor; subclass it"))
        never_awaited = [m for m in ASYNC_HOOKS if hasattr(cls, m)]
        if never_awaited:  # vLLM's async hooks: the work in them would silently never run here
            raise self._error("__init__", None, TypeError(
                f"{cls.__name__} defines {never_awaited}, which poolkit never calls: it runs the sync hooks, on the "
                f"server's tokenizer thread (never on the event loop or the engine loop); move that work into "
                f"{[m.removesuffix('_async') for m in never_awaited]}"))
        hf = engine.model_config.hf_config
        self.context = IOProcessorContext(
            name=name, plugin=self.entry.plugin, input_processor=engine.input_processor,
            model_config=engine.model_config,
            pooler_config=engine.pooler_config, max_model_len=engine.max_model_len, max_input_tokens=engine.max_model_len,
            supported_tasks=tuple(t for t in engine.supported_tasks if t != "plugin"),
            options=dict(getattr(hf, OPTIONS_FIELD, None) or {}))
        self.processor: IOProcessor = self._call("__init__", None, cls, self.context)
        task = getattr(self.processor, "task", None)
        if task not in self.context.supported_tasks:
            raise self._error("__init__", None, ValueError(
                f"it runs the pooling task {task!r}, which {engine.architecture} ('{engine.model_config.served_name}') "
                f"does not serve; supported tasks: {list(self.context.supported_tasks)}"))

    @classmethod
    def configure(cls, engine: Any, explicit: str | None) -> IOProcessorRunner | None:
        """The runner for ``explicit``, else for ``config.json``'s ``io_processor_plugin``; None when neither names one.

        ``explicit=""`` turns off a processor named in ``config.json``.
        """
        configured = getattr(engine.model_config.hf_config, CONFIG_FIELD, None)
        name = explicit if explicit is not None else configured
        if not name:
            return None
        return cls(engine, name, "io_processor_plugin" if explicit is not None else f"config.json {CONFIG_FIELD}")

    # --- errors --------------------------------------------------------------------------------

    def _error(self, stage: str, index: int | None, exc: BaseException) -> IOProcessorError:
        return IOProcessorError.of(self.name, self.entry.plugin, stage, exc, index)

    def _call(self, stage: str, index: int | None, fn: Any, *args: Any) -> Any:
        try:
            return fn(*args)
        except IOProcessorError:
            raise
        except Exception as exc:
            raise self._error(stage, index, exc) from exc

    # --- one request, in stages (the server interleaves these across requests) -----------------

    def prepare(self, raw: Any, params: PoolingParams | None = None, index: int | None = None,
                **options: Any) -> PluginRequest:
        """parse_request -> merge_pooling_params -> pre_process -> tokenize (``Engine.prepare``, with ``options``:
        its ``truncate_prompt_tokens``, ``prompt_name``, ``prompt``)."""
        p = self.processor
        data = self._call("parse_request", index, p.parse_request, raw)
        merged = self._call("merge_pooling_params", index, p.merge_pooling_params, params)
        prompts = self._call("pre_process", index, p.pre_process, data, merged)
        if not isinstance(merged, PoolingParams):
            raise self._error("merge_pooling_params", index,
                              TypeError(f"expected PoolingParams, got {type(merged).__name__}"))
        # the prompts pre_process built are checked like any request's (length limit, vocabulary)
        prepared = self._call("pre_process (its prompts were rejected)", index,
                              functools.partial(self.engine.prepare, **options), prompts,
                              merged.task or p.task, merged)
        return PluginRequest(prepared.adapter, prepared.tokens, prepared.params, self,
                             index if index is not None else 0, data)

    def prepare_all(self, raws: list[Any]) -> list[PluginRequest]:
        """:meth:`prepare` for each raw request of a batch (the server's ``POST /pooling``)."""
        return [self.prepare(raw, None, i) for i, raw in enumerate(raws)]

    def pool(self, requests: list[PluginRequest], use_tqdm: bool = False) -> list[list[Any] | IOProcessorError]:
        """Pool the prompts of several requests together (``Engine.pool``); per request, its pooled tensors (or
        the error). A batch that raises is re-run request by request (:func:`poolkit.isolate.run_isolated`), so
        only the request that triggers the failure gets it."""
        outcome = run_isolated(functools.partial(self.engine.pool, use_tqdm=use_tqdm), requests, id)
        return [pooled if exc is None else self._error("pooling", r.index, exc)
                for r, (pooled, exc) in zip(requests, outcome)]

    def finish(self, request: PluginRequest, outputs: list[PoolingRequestOutput]) -> Any:
        """post_process: the processor's output for one request."""
        return self._call("post_process", request.index, self.processor.post_process, outputs, request.data)

    def to_response(self, output: Any, index: int | None = None) -> dict[str, Any]:
        """output_to_response, with a failure named like the other stages'."""
        return self._call("output_to_response", index, self.processor.output_to_response, output)

    # --- whole batches ---------------------------------------------------------------------------

    def run(self, requests: Any, pooling_params: PoolingParams | list[PoolingParams] | None = None, *,
            strict: bool = False, use_tqdm: bool = False, **options: Any) -> list[Any]:
        """Each request's output, or its :class:`IOProcessorError`; a list of raw requests is a batch.

        ``strict``: the first failure raises instead, and a request that fails before pooling raises before
        anything is pooled. ``options``: ``Engine.prepare``'s (``truncate_prompt_tokens``, ``prompt_name``,
        ``prompt``), for every request's prompts; ``use_tqdm``: a progress bar over the forward passes.
        """
        raws = list(requests) if isinstance(requests, (list, tuple)) else [requests]
        if isinstance(pooling_params, (list, tuple)):
            if len(pooling_params) != len(raws):
                raise ValueError(f"Got {len(pooling_params)} PoolingParams for {len(raws)} requests; "
                                 f"pass one or one per request")
            params = list(pooling_params)
        else:
            params = [pooling_params] * len(raws)
        results: list[Any] = [None] * len(raws)
        ready: list[PluginRequest] = []
        for i, (raw, p) in enumerate(zip(raws, params)):
            try:
                ready.append(self.prepare(raw, p, i, **options))
            except IOProcessorError as exc:
                if strict:
                    raise
                results[i] = exc
        for request, pooled in zip(ready, self.pool(ready, use_tqdm)):
            try:
                if isinstance(pooled, IOProcessorError):
                    raise pooled
                results[request.index] = request.finish(pooled)
            except IOProcessorError as exc:
                if strict:
                    raise
                results[request.index] = exc
        return results

    def encode(self, requests: Any, pooling_params: PoolingParams | list[PoolingParams] | None = None,
               **options: Any) -> list[Any]:
        """Like :meth:`run`, but the first failed request raises its :class:`IOProcessorError` (one that fails
        while it is read, before anything is pooled)."""
        return self.run(requests, pooling_params, strict=True, **options)

    def respond(self, data: Any, requests: list[PluginRequest], pooled: list[list[Any]]) -> dict[str, Any]:
        """Each request's ``finish`` (post_process) of its pooled tensors, as :meth:`response_body`."""
        return self.response_body(data, [r.finish(p) for r, p in zip(requests, pooled)])

    def response_body(self, data: Any, results: list[Any]) -> dict[str, Any]:
        """``{"data": body}`` for one request, ``{"data": [bodies]}`` for a list of them."""
        bodies = [self.to_response(r, i) for i, r in enumerate(results)]
        return {"data": bodies if isinstance(data, (list, tuple)) else bodies[0]}

    def __repr__(self) -> str:
        return f"IOProcessorRunner({self.name!r} from {self.entry.plugin.label}, processor={self.processor!r})"


__all__ = ["IOProcessorRunner", "PluginRequest", "installed_io_processors", "not_configured_error"]
