"""Ray: embed a ``ray.data.Dataset`` with one Engine per actor, and run the ``poolkit serve`` app on Ray Serve.

Needs the extra: ``pip install 'poolkit[ray]'``. Batch inference::

    ds = ray.data.read_parquet("s3://bucket/docs/")                      # a "text" column
    out = embed_dataset(ds, "BAAI/bge-small-en-v1.5", num_actors=8, num_gpus=1)
    out.write_parquet("s3://bucket/vectors/")                            # every column + "embedding"

Ray Data cuts the dataset into batches of ``batch_size`` rows and hands each to an actor of the
pool; each actor holds one :class:`poolkit.Engine`, which packs the batch's texts into forward
passes under its ``max_batch_tokens`` budget. :class:`PoolingPredictor` is the callable class, for
``Dataset.map_batches`` directly. Serving: :func:`serve_app` is a Ray Serve application whose
replicas each run :func:`poolkit.server.app.create_app`, the same app (routes, limits, metrics,
API key) as ``poolkit serve``; ``serve run poolkit.integrations.ray:app_builder model=PATH``.
"""

from __future__ import annotations

import math
from typing import Any

try:
    import ray
except ImportError as exc:  # pragma: no cover - exercised without ray installed
    raise ImportError("poolkit.integrations.ray needs Ray: pip install 'poolkit[ray]' "
                      f"(ray[data,serve]>=2.9); importing ray failed: {exc}") from exc

__all__ = ["PoolingPredictor", "embed_dataset", "serve_app", "app_builder"]


def _need(module: str, what: str) -> Any:
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ImportError(f"{what} needs {module}: pip install 'poolkit[ray]' ({exc})") from exc


class PoolingPredictor:
    """A callable class for ``Dataset.map_batches``: one Engine per actor; a batch in, the batch plus results out.

    :param model: a model directory or hub id, as for :class:`poolkit.Engine` (every actor loads it).
    :param task: ``embed`` (default), ``classify``, ``token_embed`` or ``token_classify``.
    :param text_column: the column that holds the texts.
    :param output_column: the column the results go to (default by task: ``embedding``, ``probs``,
        ``token_embeddings``, ``token_probs``); a float32 ``(rows, dim)`` tensor column, or one
        ``(tokens, dim)`` tensor per row for the token tasks.
    :param dimensions, normalize, use_activation, truncate_prompt_tokens, prompt_name: per-text
        options, as for ``Engine.encode``.
    :param torch_threads: torch's intra-op threads; default: the CPUs Ray gave this actor.
    :param engine_kwargs: more :class:`poolkit.Engine` arguments (``max_batch_tokens``, ``dtype``,
        ``device``, ``pooler_config``...).
    """

    def __init__(self, model: str, *, task: str = "embed", text_column: str = "text",
                 output_column: str | None = None, dimensions: int | None = None, normalize: bool | None = None,
                 use_activation: bool | None = None, truncate_prompt_tokens: int | None = None,
                 prompt_name: str | None = None, torch_threads: int | None = None, **engine_kwargs: Any) -> None:
        import torch

        from poolkit import Engine, PoolingParams
        from poolkit.jobs import OUTPUT_COLUMNS, TASKS

        if task not in TASKS:
            raise ValueError(f"task {task!r}; choose one of {', '.join(TASKS)}")
        if torch_threads is None and ray.is_initialized():
            try:
                cpus = ray.get_runtime_context().get_assigned_resources().get("CPU")
            except AssertionError:  # called in the driver, not in an actor
                cpus = None
            torch_threads = max(math.floor(cpus), 1) if cpus else None
        if torch_threads:
            torch.set_num_threads(torch_threads)
        self.engine = Engine(model, **engine_kwargs)
        self.task, self.text_column, self.prompt_name = task, text_column, prompt_name
        self.output_column = output_column or OUTPUT_COLUMNS[task]
        self.params = PoolingParams(dimensions=dimensions, normalize=normalize, use_activation=use_activation,
                                    truncate_prompt_tokens=truncate_prompt_tokens)
        self.engine.prepare(["probe"], task, self.params, prompt_name=prompt_name)  # bad options fail at start

    def __call__(self, batch: Any) -> Any:
        """``batch``: a dict of numpy arrays (``batch_format="numpy"``) or a pandas DataFrame."""
        import numpy as np

        if self.text_column not in batch:
            raise KeyError(f"the batch has no column {self.text_column!r} (columns: {list(batch.keys())}); "
                           f"pass text_column=")
        texts = list(batch[self.text_column])
        for i, text in enumerate(texts):
            if not isinstance(text, str) or not text.strip():
                raise ValueError(f"row {i} of a batch: {self.text_column!r} is {text!r}, not a non-empty string "
                                 f"(filter such rows out first, e.g. ds.filter(...))")
        outputs = self.engine.encode(texts, self.task, self.params, prompt_name=self.prompt_name)
        values = [o.outputs.data.numpy() for o in outputs]
        if self.task.startswith("token_"):  # ragged: one (tokens, dim) array per row
            column = np.empty(len(values), dtype=object)
            column[:] = values
        else:
            column = np.stack(values) if values else np.zeros((0, 0), dtype="float32")
        batch[self.output_column] = column  # a dict's new key, or a DataFrame's new column
        return batch


def embed_dataset(ds: Any, model: str, *, num_actors: int = 1, batch_size: int = 256, num_cpus: float | None = None,
                  num_gpus: float | None = None, **predictor_kwargs: Any) -> Any:
    """``ds`` with the results of :class:`PoolingPredictor` in a new column, from ``num_actors`` actors.

    :param batch_size: rows handed to an actor at a time (its Engine splits them by token budget).
    :param num_cpus: CPUs per actor (torch uses that many threads); ``num_gpus``: GPUs per actor.
    :param predictor_kwargs: :class:`PoolingPredictor`'s options (``task``, ``text_column``,
        ``output_column``, ``max_batch_tokens``...).
    """
    data = _need("ray.data", "embed_dataset")
    options: dict[str, Any] = {"batch_size": batch_size, "batch_format": "numpy",
                               "compute": data.ActorPoolStrategy(size=num_actors),
                               "fn_constructor_kwargs": {"model": model, **predictor_kwargs}}
    if num_cpus is not None:
        options["num_cpus"] = num_cpus
    if num_gpus:
        options["num_gpus"] = num_gpus
    return ds.map_batches(PoolingPredictor, **options)


def serve_app(model: str | dict[str, str], *, name: str = "poolkit", num_replicas: int = 1,
              ray_actor_options: dict[str, Any] | None = None, limits: Any = None, api_key: str | None = None,
              **engine_kwargs: Any) -> Any:
    """A Ray Serve application serving ``model`` with the ``poolkit serve`` app in each replica.

    :param model: a model path or hub id (served under that name), or ``{served name: model}``.
    :param num_replicas: replicas (each loads its own Engines); ``ray_actor_options`` per replica,
        e.g. ``{"num_cpus": 4}`` or ``{"num_gpus": 1}`` (default ``{"num_cpus": 1}``).
    :param limits: a :class:`poolkit.server.state.Limits` (request size and load limits).
    :param api_key: require ``Authorization: Bearer KEY``, as ``poolkit serve --api-key``.
    :param engine_kwargs: :class:`poolkit.Engine` arguments for every model.

    Run it with ``serve.run(serve_app(...), route_prefix="/")``; replicas become ready once loaded.
    """
    serve = _need("ray.serve", "serve_app")
    models = dict(model) if isinstance(model, dict) else {str(model): str(model)}

    def build_asgi_app() -> Any:  # runs in each replica
        from poolkit.server.app import create_app

        def load_engines() -> dict[str, Any]:
            from poolkit import Engine

            return {served: Engine(path, served_model_name=served, **engine_kwargs) for served, path in models.items()}

        # load while the replica starts: Serve routes to it once it is ready
        return create_app(load_engines, limits=limits, api_key=api_key, background_load=False)

    deployment = serve.deployment(serve.ingress(build_asgi_app)(), name=name, num_replicas=num_replicas,
                                  ray_actor_options=ray_actor_options or {"num_cpus": 1})
    return deployment.bind()


def app_builder(args: dict[str, str]) -> Any:
    """For ``serve run poolkit.integrations.ray:app_builder model=PATH [key=value ...]``.

    Keys: ``model`` (required), ``served_model_name``, ``num_replicas``, ``num_cpus``, ``num_gpus``,
    ``max_batch_tokens``, ``dtype``, ``device``, ``api_key``.
    """
    if "model" not in args:
        raise ValueError("app_builder needs model=PATH (a model directory or hub id)")
    unknown = set(args) - {"model", "served_model_name", "num_replicas", "num_cpus", "num_gpus", "max_batch_tokens",
                           "dtype", "device", "api_key"}
    if unknown:
        raise ValueError(f"app_builder: unknown arguments {sorted(unknown)}")
    actor = {k: float(args[k]) for k in ("num_cpus", "num_gpus") if k in args} or None
    engine = {k: args[k] for k in ("dtype", "device") if k in args}
    if "max_batch_tokens" in args:
        engine["max_batch_tokens"] = int(args["max_batch_tokens"])
    model = {args.get("served_model_name", args["model"]): args["model"]}
    return serve_app(model, num_replicas=int(args.get("num_replicas", 1)), ray_actor_options=actor,
                     api_key=args.get("api_key"), **engine)
