"""The offline engine: assembles input processor -> forward -> pooler -> output from registered parts.

Every part is looked up in the plugin host's registries (architecture, pooling method, task
adapter); nothing built in is special-cased. The Engine does three things: it loads the model,
``prepare``s a request (validated params, task adapter, tokenized prompts: a
:class:`poolkit.request.Prepared`) and ``execute``s prepared requests together: their prompts are
sorted by token count, packed into batches under a token budget, and returned in input order, each
request's through its ``finish``; a request's result never depends on what else shares its batch.
Images are :mod:`poolkit.media`'s, score plans :mod:`poolkit.scoring`'s, int8 calibration
:mod:`poolkit.layers.quantized`'s.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import torch

from poolkit.batch import PackedBatch
from poolkit.config import ModelConfig, PoolerConfig
from poolkit.errors import InvalidInputTypeError, InvalidRequestError, UnsupportedTaskError
from poolkit.inputs import ImagePrompt, InputProcessor, normalize_prompts
from poolkit.layers.linear import bound_kernel_caches
from poolkit.media import (MediaPolicy, has_vision_tower, image_batches, load_image_processor, run_with_images,
                           tokenize_with_images)
from poolkit.model.convert import served_tasks
from poolkit.model.loading import build_model, resolve_architecture
from poolkit.outputs import PoolingRequestOutput
from poolkit.params import PoolingParams
from poolkit.registry import get_host
from poolkit.request import Prepared, per_request
from poolkit.scoring import RerankResult, ScorePlan, plan_score, rerank_order
from poolkit.tasks import TaskAdapter, TaskContext

_DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
           "float16": torch.float16, "fp16": torch.float16}
logger = logging.getLogger("poolkit.engine")


def _check(adapter: TaskAdapter, params: PoolingParams) -> None:
    """``adapter.check(params)``: validation by contract, so a ``ValueError``/``TypeError`` from it (what
    task plugins raised before :class:`InvalidRequestError` existed) is the request's fault too."""
    try:
        adapter.check(params)
    except InvalidRequestError:
        raise
    except (ValueError, TypeError) as exc:
        raise InvalidRequestError(str(exc)) from exc


class Engine:
    """Load a pooling model and run ``embed`` / ``encode`` on it.

    :param model: a local directory, or a hub id resolved through the Hugging Face cache first.
    :param runner: ``"auto"`` or ``"pooling"`` (poolkit runs pooling models only).
    :param convert: ``"auto"`` (serve what the architecture declares; a ``*ForCausalLM`` becomes an
        embedder), ``"none"``, ``"embed"`` or ``"classify"`` (see ``poolkit.model.convert``).
    :param pooler_config: dict or :class:`PoolerConfig`, overriding the model's and ST's settings.
    :param hf_overrides: keys merged into ``config.json`` before anything reads it.
    :param dtype: ``"auto"`` (float32 on CPU, bfloat16 on GPU), ``"float32"``, ``"bfloat16"`` (bf16
        matmuls and attention, fp32 residual stream and LayerNorm) or ``"float16"`` (GPU only).
    :param device: ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"``, ``"cuda:1"``...
    :param max_model_len: the one limit on tokens per input (default: the Sentence Transformers
        ``max_seq_length`` when the model has one, else the model's position limit; never above the
        position limit). ``max_model_len`` on the Engine is the limit actually applied.
    :param auto_truncate: inputs longer than ``max_model_len`` are truncated (True) or rejected with
        :class:`poolkit.errors.InputTooLongError` (False). Default (None): truncated when the model has a
        Sentence Transformers ``max_seq_length`` (what ``SentenceTransformer.encode`` does and model cards
        promise), rejected otherwise (vLLM's behaviour). A request's ``truncate_prompt_tokens`` always truncates.
    :param max_batch_tokens: token budget of one forward pass (default: 2048 at float32, 4096 at bfloat16 and
        float16, whose matmuls run about twice as fast and reach their speed only on larger passes:
        ``bench/embed_offline.py --max-batch-tokens``).
    :param kernels: ``"auto"`` (oneDNN prepacked linears on CPU when they pass a probe) or ``"torch"``.
    :param quantization: None, or ``"int8"`` (CPU, opt-in): the encoder's linears run as int8 matmuls
        with per-channel weight and per-token activation scales (:mod:`poolkit.layers.quantized`), the
        rest in bfloat16 (``dtype="auto"`` then means bfloat16). Only for families that declare it
        (``supported_quantizations``: the BERT and RoBERTa embedding models); any other is a ValueError.
    :param io_processor_plugin: the IO processor of the ``plugin`` task (docs/plugins.md); default:
        ``config.json``'s ``io_processor_plugin``, none if absent; ``""`` turns that one off.
    :param served_model_name: what error messages call the model (the server's name for it);
        default: ``model``.
    :param allowed_media_domains: hosts whose ``http(s)://`` image URLs are fetched (vLLM's name); any
        other remote URL is refused with a 400, never fetched.
    :param allowed_local_media_path: the directory ``file://`` image URLs (and a server client's local
        paths) may be read from; default: none. The Engine's own caller may pass any local path.
    """

    def __init__(self, model: str, runner: str = "auto", convert: str = "auto",
                 pooler_config: PoolerConfig | dict[str, Any] | None = None, hf_overrides: dict[str, Any] | None = None,
                 dtype: str = "auto", device: str = "auto", max_model_len: int | None = None,
                 max_batch_tokens: int | None = None, trust_remote_code: bool = False, revision: str | None = None,
                 kernels: str = "auto", quantization: str | None = None, io_processor_plugin: str | None = None,
                 served_model_name: str | None = None, auto_truncate: bool | None = None,
                 allowed_media_domains: list[str] | None = None, allowed_local_media_path: str | None = None) -> None:
        if runner not in ("auto", "pooling"):
            raise ValueError(f"runner={runner!r}: poolkit runs pooling models only; use 'auto' or 'pooling'")
        if max_batch_tokens is not None and max_batch_tokens < 1:
            raise ValueError("max_batch_tokens must be positive")
        self.media_policy = MediaPolicy.of(allowed_media_domains, allowed_local_media_path)
        started = time.perf_counter()
        self.host = get_host()
        self.model_config = ModelConfig.load(model, revision=revision, hf_overrides=hf_overrides,
                                             trust_remote_code=trust_remote_code)
        self.model_config.served_name = served_model_name or str(model)
        self.architecture, model_cls = resolve_architecture(self.host, self.model_config)
        self.device = torch.device("cuda" if device == "auto" and torch.cuda.is_available() else
                                   ("cpu" if device == "auto" else device))
        self.quantization = quantization or None
        if self.quantization is not None:
            from poolkit.layers.quantized import check_quantization

            check_quantization(self.quantization, model_cls, self.architecture, self.device)
        if dtype == "auto":
            dtype = "bfloat16" if self.device.type == "cuda" or self.quantization else "float32"
        if dtype not in _DTYPES:
            raise ValueError(f"dtype={dtype!r}; choose one of {sorted(_DTYPES)} or 'auto'")
        self.dtype = _DTYPES[dtype]
        if self.dtype == torch.float16 and self.device.type == "cpu":
            raise ValueError("dtype='float16' is for GPUs; on CPU use 'float32' or 'bfloat16'")
        hf = self.model_config.hf_config
        tasks = served_tasks(self.architecture, model_cls.tasks_for(hf), convert, model_cls.is_generative)

        self.tokenizer = self.model_config.load_tokenizer(trust_remote_code)
        model_cls.prepare_config(hf, self.tokenizer)  # a family that needs the tokenizer to read its config
        bound_kernel_caches()  # before oneDNN's first use: memory stays flat over many batch shapes
        self.model = build_model(model_cls, self.model_config, self.dtype, self.device, kernels, self.tokenizer,
                                 self.quantization)
        self.image_processor = None  # a model with a vision tower reads images with the checkpoint's own processor
        if has_vision_tower(self.model):
            self.image_processor = load_image_processor(self.model_config.path)

        st = self.model_config.st
        self.pooler_config = (PoolerConfig(pooling_type=self.model.default_pooling)  # normalize: the method's default
                              .merged(st.pooler if st else None).merged(pooler_config))
        # a family may know better than the config (RoBERTa's positions start after padding_idx)
        limit = self.model.max_model_len or getattr(hf, "max_position_embeddings", None) or 10**9
        st_limit = st.max_seq_length if st else None
        self.max_model_len = min(max_model_len or st_limit or limit, limit)
        self.auto_truncate = bool(st_limit) if auto_truncate is None else auto_truncate
        self.max_batch_tokens = max_batch_tokens or (2048 if self.dtype == torch.float32 else 4096)
        self.input_processor = InputProcessor(self.tokenizer, self.max_model_len, st,
                                              include_prompt=self.pooler_config.include_prompt is not False,
                                              vocab_size=getattr(hf, "vocab_size", None),
                                              auto_truncate=self.auto_truncate)
        if self.quantization:
            from poolkit.layers.quantized import calibrate_model

            calibrate_model(self.model, self.tokenizer, self.max_model_len, self.device)
        self._ctx = TaskContext(self.model_config, self.pooler_config, self.host, self.model)
        registered = self.host.registry("tasks")
        self.supported_tasks = tuple(t for t in tasks if t in registered)
        if len(self.supported_tasks) < len(tasks):  # a model may declare a task whose plugin is not installed
            logger.warning("%s declares tasks %s that no plugin registers a task adapter for; serving %s",
                           self.architecture, [t for t in tasks if t not in registered], list(self.supported_tasks))
        self._adapters: dict[str, TaskAdapter] = {}
        from poolkit.io_runner import IOProcessorRunner

        for name in self.supported_tasks:  # a broken pooler config or task plugin stops the build, not a request
            self.task(name)
        self.io_processor = IOProcessorRunner.configure(self, io_processor_plugin)  # the `plugin` task
        if self.io_processor is not None:
            self.supported_tasks += ("plugin",)
        self.kernels = kernels
        logger.info("loaded %s (%s) in %.1f s: tasks %s, dtype %s%s, device %s, kernels %s, max_model_len %d (%s)",
                    self.model_config.served_name, self.architecture, time.perf_counter() - started,
                    list(self.supported_tasks), str(self.dtype).removeprefix("torch."),
                    f" + {self.quantization} linears" if self.quantization else "", self.device, kernels,
                    self.max_model_len, "longer inputs truncated" if self.auto_truncate else "longer inputs rejected")

    @property
    def tokenizer(self) -> Any:
        """The model's tokenizer, as the calling thread uses it (:meth:`InputProcessor.use_tokenizer`)."""
        processor = self.__dict__.get("input_processor")
        return processor.tokenizer if processor is not None else self.__dict__["_tokenizer"]

    @tokenizer.setter
    def tokenizer(self, value: Any) -> None:
        self.__dict__["_tokenizer"] = value
        if self.__dict__.get("input_processor") is not None:
            self.input_processor.tokenizer = value

    def task(self, name: str) -> TaskAdapter:
        """The task adapter for ``name``, built on first use."""
        if name not in self.supported_tasks:
            raise UnsupportedTaskError(f"Task {name!r} is not supported by {self.architecture} "
                                       f"('{self.model_config.served_name}'). Supported tasks: "
                                       f"{list(self.supported_tasks)}", "task")
        if name not in self._adapters:
            self._adapters[name] = self.host.registry("tasks").load(name)(self._ctx)
        return self._adapters[name]


    def checked_task(self, name: str, params: list[PoolingParams]) -> TaskAdapter:
        """The task adapter for ``name``, after it checked every request's params (``adapter.check``)."""
        adapter = self.task(name)
        for p in params:
            if p.task not in (None, name):
                raise InvalidRequestError(f"PoolingParams(task={p.task!r}) does not match the requested task {name!r}")
            _check(adapter, p)
        return adapter

    @staticmethod
    def params_for(pooling_params: Any, n: int, truncate: int | None = None) -> list[PoolingParams]:
        """One :class:`PoolingParams` per prompt: one given for all, or one each; ``truncate`` set on each."""
        if pooling_params is None:
            pooling_params = PoolingParams()
        if isinstance(pooling_params, PoolingParams):
            pooling_params = [pooling_params] * n
        elif len(pooling_params) != n:
            raise InvalidRequestError(f"Got {len(pooling_params)} PoolingParams for {n} prompts; "
                                      f"pass one or one per prompt")
        if truncate is not None:
            pooling_params = [p.model_copy(update={"truncate_prompt_tokens": truncate}) for p in pooling_params]
        return list(pooling_params)

    # --- prepare: one request, validated and tokenized -----------------------------------------------

    def prepare(self, prompts: Any, task: str | None = None,
                pooling_params: PoolingParams | list[PoolingParams] | None = None, *,
                truncate_prompt_tokens: int | None = None, prompt_name: str | None = None,
                prompt: str | None = None, role: str | None = None) -> Prepared:
        """Validate and tokenize a request without running it (:meth:`execute` runs it; the server batches
        the prompts of many). ``role``: what the model's ``prepare_prompts`` is told these prompts are
        (default: the prompt name)."""
        items = normalize_prompts(prompts)
        params = self.params_for(pooling_params, len(items), truncate_prompt_tokens)
        task = task or (params[0].task if params else None) or self.supported_tasks[0]
        adapter = self.checked_task(task, params)
        instruction = self.input_processor.resolve_prompt(prompt_name, prompt)
        if any(isinstance(p, ImagePrompt) for p in items):
            tokens = tokenize_with_images(self, items, params, task, instruction)
        else:
            tokens = self.input_processor(items, params, instruction)
        role = role or self.input_processor.prompt_role(prompt_name)
        return Prepared(adapter, self.model.prepare_prompts(tokens, role), params)

    def prepare_score(self, text_1: Any, text_2: Any, pooling_params: PoolingParams | None = None, *,
                      truncate_prompt_tokens: int | None = None) -> ScorePlan:
        """A score request for the model's :attr:`score_type`, validated and tokenized (:func:`plan_score`)."""
        return plan_score(self, text_1, text_2, pooling_params, truncate_prompt_tokens=truncate_prompt_tokens)

    # --- execute: prepared requests, pooled together ---------------------------------------------------

    def execute(self, requests: list[Prepared], *, use_tqdm: bool = False,
                on_batch: Callable[[int], None] | None = None) -> list[Any]:
        """Run prepared requests together; per request, its result (:meth:`Prepared.finish`)."""
        pooled = self.pool(requests, use_tqdm=use_tqdm, on_batch=on_batch)
        return [r.finish(p) for r, p in zip(requests, pooled)]

    def pool(self, requests: list[Prepared], *, use_tqdm: bool = False,
             on_batch: Callable[[int], None] | None = None) -> list[list[torch.Tensor]]:
        """The pooling loop: the prompts of every request (per task adapter) batched by the token budget; per
        request, its pooled tensors in prompt order. ``on_batch(n)`` is called after each forward pass with
        its prompt count (a progress bar)."""
        flat: list[torch.Tensor | None] = [None] * sum(len(r.tokens) for r in requests)
        groups: dict[int, list[tuple[int, Prepared, int]]] = {}  # adapter -> (flat slot, request, prompt)
        slot = 0
        for r in requests:
            for i in range(len(r.tokens)):
                groups.setdefault(id(r.adapter), []).append((slot, r, i))
                slot += 1
        for members in groups.values():
            adapter = members[0][1].adapter
            tokens = [r.tokens[i] for _, r, i in members]
            params = [r.params[i] for _, r, i in members]
            batches = image_batches(tokens, self.max_batch_tokens)
            if use_tqdm and len(batches) > 1:
                from tqdm.auto import tqdm

                batches = tqdm(batches, desc=adapter.name, unit="batch")
            for idx in batches:
                for j, value in zip(idx, self.run_batch(adapter, [tokens[j] for j in idx], [params[j] for j in idx])):
                    flat[members[j][0]] = value
                if on_batch is not None:
                    on_batch(len(idx))
        return per_request(requests, flat)

    def run_batch(self, adapter: TaskAdapter, tokens: list[Any], params: list[PoolingParams]) -> list[torch.Tensor]:
        """One forward pass over ``tokens`` as a single packed batch; one pooled tensor each, on CPU."""
        if any(t.pixel_values is not None for t in tokens):
            return run_with_images(self, adapter, tokens, params)
        batch = PackedBatch.from_token_lists(
            [t.ids for t in tokens],
            [t.token_types or [0] * len(t.ids) for t in tokens] if any(t.token_types for t in tokens) else None,
            [t.skip for t in tokens], device=self.device, attend=[t.attend for t in tokens],
            keep=[t.keep for t in tokens])
        with torch.inference_mode():
            return [v.float().cpu() for v in adapter.pool(self.model(batch), batch, params)]

    # --- the public API: prepare, then execute ---------------------------------------------------------

    def encode(self, prompts: Any, task: str | None = None,
               pooling_params: PoolingParams | list[PoolingParams] | None = None, *, pooling_task: str | None = None,
               truncate_prompt_tokens: int | None = None, prompt_name: str | None = None, prompt: str | None = None,
               use_tqdm: bool = False) -> list[PoolingRequestOutput]:
        """Run ``task`` (``pooling_task`` is an alias) on every prompt; results in input order.

        ``task="plugin"``: ``prompts`` is one request of the IO processor, or a list of them; the
        result is the processor's output per request, and a failed request raises its IOProcessorError
        (one that fails while it is read, before anything is pooled). The other arguments apply to the
        prompts its ``pre_process`` builds.
        """
        if (task or pooling_task) == "plugin":
            return self._io_processor().encode(prompts, pooling_params, truncate_prompt_tokens=truncate_prompt_tokens,
                                               prompt_name=prompt_name, prompt=prompt, use_tqdm=use_tqdm)
        request = self.prepare(prompts, task or pooling_task, pooling_params,
                               truncate_prompt_tokens=truncate_prompt_tokens, prompt_name=prompt_name, prompt=prompt)
        return self.execute([request], use_tqdm=use_tqdm)[0]

    def embed(self, prompts: Any, pooling_params: PoolingParams | list[PoolingParams] | None = None, *,
              truncate_prompt_tokens: int | None = None, prompt_name: str | None = None, prompt: str | None = None,
              use_tqdm: bool = False) -> list[PoolingRequestOutput]:
        """One embedding per prompt (``.outputs.embedding``). ``prompt``/``prompt_name`` prepend an instruction."""
        return self.encode(prompts, "embed", pooling_params, truncate_prompt_tokens=truncate_prompt_tokens,
                           prompt_name=prompt_name, prompt=prompt, use_tqdm=use_tqdm)

    def classify(self, prompts: Any, pooling_params: PoolingParams | list[PoolingParams] | None = None, *,
                 truncate_prompt_tokens: int | None = None, use_tqdm: bool = False) -> list[PoolingRequestOutput]:
        """Class probabilities per prompt (``.outputs.probs``); labels in :attr:`id2label`."""
        return self.encode(prompts, "classify", pooling_params, truncate_prompt_tokens=truncate_prompt_tokens,
                           use_tqdm=use_tqdm)

    def reward(self, prompts: Any, pooling_params: PoolingParams | list[PoolingParams] | None = None, *,
               truncate_prompt_tokens: int | None = None, use_tqdm: bool = False) -> list[PoolingRequestOutput]:
        """Per-token rewards / labels (``token_classify``)."""
        return self.encode(prompts, "token_classify", pooling_params, truncate_prompt_tokens=truncate_prompt_tokens,
                           use_tqdm=use_tqdm)

    def score(self, text_1: str | list[str], text_2: str | list[str],
              pooling_params: PoolingParams | None = None, *, truncate_prompt_tokens: int | None = None,
              use_tqdm: bool = False) -> list[PoolingRequestOutput]:
        """Relevance of each (text_1, text_2) pair (``.outputs.score``), for 1:1, 1:N and N:N inputs."""
        plan = self.prepare_score(text_1, text_2, pooling_params, truncate_prompt_tokens=truncate_prompt_tokens)
        return self.execute([plan], use_tqdm=use_tqdm)[0]

    def rerank(self, query: str, documents: list[str], top_n: int | None = None,
               return_documents: bool = False, **kwargs: Any) -> list[RerankResult]:
        """Documents sorted by relevance to ``query``: index, relevance_score and optionally the document."""
        if not isinstance(query, str):
            raise InvalidInputTypeError(f"query must be a string, got {type(query).__name__}")
        if not documents:
            raise InvalidRequestError("documents is empty: at least one document is needed to rerank", "documents")
        scores = [o.outputs.score for o in self.score(query, list(documents), **kwargs)]
        order = rerank_order(scores, top_n)
        return [RerankResult(i, scores[i], documents[i] if return_documents else None) for i in order]

    def encode_plugin_batch(self, requests: list[Any],
                            pooling_params: PoolingParams | list[PoolingParams] | None = None) -> list[Any]:
        """The ``plugin`` task with failures isolated: per request, the output or its IOProcessorError."""
        return self._io_processor().run(requests, pooling_params)

    def _io_processor(self) -> Any:
        if self.io_processor is None:
            from poolkit.io_runner import not_configured_error

            raise not_configured_error(self)
        return self.io_processor

    # --- what the model is ---------------------------------------------------------------------------

    @property
    def accepts_images(self) -> bool:
        """Whether the model has a vision tower (it overrides :meth:`poolkit.PoolingModel.embed_images`)."""
        return has_vision_tower(self.model)

    @property
    def id2label(self) -> dict[int, str]:
        return dict(self.model.id2label or {})

    @property
    def score_type(self) -> str:
        """``cross-encoder`` (a 1-label pair classifier), ``late-interaction`` (MaxSim) or ``bi-encoder`` (cosine)."""
        if self.model.score_type:
            return self.model.score_type
        if "score" in self.supported_tasks:
            return "cross-encoder"
        if "embed" in self.supported_tasks:
            return "bi-encoder"
        raise UnsupportedTaskError(f"{self.architecture} supports neither score nor embed, so it cannot score pairs. "
                                   f"Supported tasks: {list(self.supported_tasks)}")

    def __repr__(self) -> str:
        return (f"Engine(model={self.model_config.name!r}, architecture={self.architecture}, "
                f"tasks={list(self.supported_tasks)}, dtype={self.dtype}, device={self.device})")
