"""The offline engine: assembles input processor -> forward -> pooler -> output from registered parts.

Every part is looked up in the plugin host's registries (architecture, pooling method, task
adapter); nothing built in is special-cased. Requests are sorted by token count, packed into
batches under a token budget, and returned in input order; a request's result never depends on
what else shares its batch.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Callable
from typing import Any

import torch

from poolkit.batch import PackedBatch, make_batches
from poolkit.config import ModelConfig, PoolerConfig
from poolkit.errors import InvalidInputTypeError, InvalidRequestError, UnsupportedTaskError
from poolkit.inputs import ImagePrompt, InputProcessor, TokenizedPrompt, normalize_prompts, score_items
from poolkit.layers.linear import bound_kernel_caches
from poolkit.media import MediaPolicy, load_image, load_image_processor, preprocess_image
from poolkit.model.convert import served_tasks
from poolkit.model.interface import PoolingModel
from poolkit.model.loading import build_model, resolve_architecture
from poolkit.outputs import PoolingRequestOutput, ScoringOutput
from poolkit.params import PoolingParams
from poolkit.registry import get_host
from poolkit.scoring import RerankResult, ScorePlan, rerank_order
from poolkit.tasks import TaskAdapter, TaskContext

_DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
           "float16": torch.float16, "fp16": torch.float16}
_request_ids = itertools.count()
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
        if self.accepts_images:
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
            self._calibrate()
        self._ctx = TaskContext(self.model_config, self.pooler_config, self.host, self.model)
        registered = self.host.registry("tasks")
        self.supported_tasks = tuple(t for t in tasks if t in registered)
        if len(self.supported_tasks) < len(tasks):  # a model may declare a task whose plugin is not installed
            logger.warning("%s declares tasks %s that no plugin registers a task adapter for; serving %s",
                           self.architecture, [t for t in tasks if t not in registered], list(self.supported_tasks))
        self._adapters: dict[str, TaskAdapter] = {}
        from poolkit.io_plugins.runner import IOProcessorRunner

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
        """The model's tokenizer, as the calling thread uses it (:meth:`InputProcessor.use_own_tokenizer`)."""
        processor = self.__dict__.get("input_processor")
        return processor.tokenizer if processor is not None else self.__dict__["_tokenizer"]

    @tokenizer.setter
    def tokenizer(self, value: Any) -> None:
        self.__dict__["_tokenizer"] = value
        if self.__dict__.get("input_processor") is not None:
            self.input_processor.tokenizer = value

    def _calibrate(self) -> None:
        """Int8 layers' activation ranges from :data:`poolkit.quantize.CALIBRATION_TEXTS` (fixed, so the
        quantized model is the same every load), then their weights quantized."""
        from poolkit.layers.quantized import calibrate
        from poolkit.quantize import CALIBRATION_TEXTS

        ids = self.tokenizer(CALIBRATION_TEXTS, truncation=True, max_length=self.max_model_len)["input_ids"]
        n = calibrate(self.model, lambda: self.model(PackedBatch.from_token_lists(ids, device=self.device)))
        started = time.perf_counter()
        with torch.inference_mode():  # compile the int8 kernels now, not in the first request
            self.model(PackedBatch.from_token_lists(ids[:4], device=self.device))
        logger.info("int8: %d linears quantized, activation ranges from %d calibration texts; kernels ready in %.1f s",
                    n, len(ids), time.perf_counter() - started)

    def task(self, name: str) -> TaskAdapter:
        """The task adapter for ``name``, built on first use."""
        if name not in self.supported_tasks:
            raise UnsupportedTaskError(f"Task {name!r} is not supported by {self.architecture} "
                                       f"('{self.model_config.served_name}'). Supported tasks: "
                                       f"{list(self.supported_tasks)}", "task")
        if name not in self._adapters:
            self._adapters[name] = self.host.registry("tasks").load(name)(self._ctx)
        return self._adapters[name]

    # --- public API -----------------------------------------------------------------------------

    def embed(self, prompts: Any, pooling_params: PoolingParams | list[PoolingParams] | None = None, *,
              truncate_prompt_tokens: int | None = None, prompt_name: str | None = None, prompt: str | None = None,
              use_tqdm: bool = False) -> list[PoolingRequestOutput]:
        """One embedding per prompt (``.outputs.embedding``). ``prompt``/``prompt_name`` prepend an instruction."""
        return self.encode(prompts, "embed", pooling_params, truncate_prompt_tokens=truncate_prompt_tokens,
                           prompt_name=prompt_name, prompt=prompt, use_tqdm=use_tqdm)

    def encode(self, prompts: Any, task: str | None = None,
               pooling_params: PoolingParams | list[PoolingParams] | None = None, *, pooling_task: str | None = None,
               truncate_prompt_tokens: int | None = None, prompt_name: str | None = None, prompt: str | None = None,
               use_tqdm: bool = False) -> list[PoolingRequestOutput]:
        """Run ``task`` (``pooling_task`` is an alias) on every prompt; results in input order.

        ``task="plugin"``: ``prompts`` is one request of the IO processor, or a list of them; the
        result is the processor's output per request, and a failed request raises its IOProcessorError.
        """
        if (task or pooling_task) == "plugin":
            return self._io_processor().encode(prompts, pooling_params)
        adapter, tokens, params = self.prepare(prompts, task or pooling_task, pooling_params,
                                               truncate_prompt_tokens=truncate_prompt_tokens,
                                               prompt_name=prompt_name, prompt=prompt)
        return self._run(adapter, tokens, params, use_tqdm)

    def encode_plugin_batch(self, requests: list[Any],
                            pooling_params: PoolingParams | list[PoolingParams] | None = None) -> list[Any]:
        """The ``plugin`` task with failures isolated: per request, the output or its IOProcessorError."""
        return self._io_processor().run(requests, pooling_params)

    def _io_processor(self) -> Any:
        if self.io_processor is None:
            from poolkit.io_plugins.runner import not_configured_error

            raise not_configured_error(self)
        return self.io_processor

    def prepare(self, prompts: Any, task: str | None = None,
                pooling_params: PoolingParams | list[PoolingParams] | None = None, *,
                truncate_prompt_tokens: int | None = None, prompt_name: str | None = None,
                prompt: str | None = None, role: str | None = None) -> tuple[TaskAdapter, list[Any], list[PoolingParams]]:
        """Validate and tokenize a request without running it (the server batches across requests).

        ``role``: what the model's ``prepare_prompts`` is told these prompts are (default: the prompt name).

        :returns: the task adapter, one :class:`poolkit.inputs.TokenizedPrompt` per prompt, their params.
        """
        items = normalize_prompts(prompts)
        params = self._params(pooling_params, len(items), truncate_prompt_tokens)
        task = task or (params[0].task if params else None) or self.supported_tasks[0]
        adapter = self.task(task)
        for p in params:
            if p.task not in (None, task):
                raise InvalidRequestError(f"PoolingParams(task={p.task!r}) does not match the requested task {task!r}")
            _check(adapter, p)
        instruction = self.input_processor.resolve_prompt(prompt_name, prompt)
        if any(isinstance(p, ImagePrompt) for p in items):
            tokens = self._tokenize_with_images(items, params, task, instruction)
        else:
            tokens = self.input_processor(items, params, instruction)
        role = role or self.input_processor.prompt_role(prompt_name)
        return adapter, self.model.prepare_prompts(tokens, role), params

    def run_batch(self, adapter: TaskAdapter, tokens: list[Any], params: list[PoolingParams]) -> list[torch.Tensor]:
        """One forward pass over ``tokens`` as a single packed batch; one pooled tensor each, on CPU."""
        if any(t.pixel_values is not None for t in tokens):
            return self._run_with_images(adapter, tokens, params)
        batch = PackedBatch.from_token_lists(
            [t.ids for t in tokens],
            [t.token_types or [0] * len(t.ids) for t in tokens] if any(t.token_types for t in tokens) else None,
            [t.skip for t in tokens], device=self.device, attend=[t.attend for t in tokens],
            keep=[t.keep for t in tokens])
        with torch.inference_mode():
            return [v.float().cpu() for v in adapter.pool(self.model(batch), batch, params)]

    # --- images ------------------------------------------------------------------------------------

    @property
    def accepts_images(self) -> bool:
        """Whether the model has a vision tower (it overrides :meth:`poolkit.PoolingModel.embed_images`)."""
        return type(self.model).embed_images is not PoolingModel.embed_images

    def _tokenize_with_images(self, items: list[Any], params: list[PoolingParams], task: str,
                              instruction: str | None) -> list[TokenizedPrompt]:
        """Texts through the input processor; each image loaded under the media policy, preprocessed by the
        checkpoint's image processor, with ``model.image_tokens`` placeholder ids (vLLM's CLIP: id 0)."""
        images = [i for i, p in enumerate(items) if isinstance(p, ImagePrompt)]
        name = f"'{self.model_config.served_name}' ({self.architecture})"
        if not self.accepts_images:
            raise InvalidRequestError(f"Model {name} does not accept images (prompt {images[0]} is an image); "
                                      f"it embeds text only", "input")
        if self.image_processor is None:
            raise InvalidRequestError(f"Model {name} has no image processor (preprocessor_config.json, or "
                                      f"processor_config.json's image_processor), so it cannot read images", "input")
        if task != "embed":
            raise InvalidRequestError(f"Images are embedded with the embed task; {task!r} takes text only", "task")
        out: list[Any] = [None] * len(items)
        texts = [i for i, p in enumerate(items) if not isinstance(p, ImagePrompt)]
        if texts:
            done = self.input_processor([items[i] for i in texts], [params[i] for i in texts], instruction)
            for i, t in zip(texts, done):
                out[i] = t
        placeholders = [0] * max(1, self.model.image_tokens)  # what an image costs in batching and usage
        for i in images:
            image = load_image(items[i].image, self.media_policy, i, items[i].from_client)
            out[i] = TokenizedPrompt(list(placeholders), pixel_values=preprocess_image(self.image_processor, image, i))
        return out

    def _run_with_images(self, adapter: TaskAdapter, tokens: list[Any], params: list[PoolingParams]) -> list[torch.Tensor]:
        """A batch holding images: its texts through :meth:`run_batch`, its images through ``model.embed_images``;
        each image's embedding then goes through the task as a one-token sequence (normalize, dimensions)."""
        images = [i for i, t in enumerate(tokens) if t.pixel_values is not None]
        texts = sorted(set(range(len(tokens))) - set(images))
        out: list[Any] = [None] * len(tokens)
        if texts:
            for i, v in zip(texts, self.run_batch(adapter, [tokens[i] for i in texts], [params[i] for i in texts])):
                out[i] = v
        pixels = torch.stack([tokens[i].pixel_values for i in images]).to(self.device)
        one_token = PackedBatch.from_token_lists([[0]] * len(images), device=self.device)
        with torch.inference_mode():
            pooled = adapter.pool(self.model.embed_images(pixels).float(), one_token, [params[i] for i in images])
        for i, v in zip(images, pooled):
            out[i] = v.float().cpu()
        return out

    def _batches(self, tokens: list[Any]) -> list[list[int]]:
        """:func:`make_batches` over the texts, and over the images apart (they run through another tower)."""
        images = [i for i, t in enumerate(tokens) if t.pixel_values is not None]
        if not images:
            return make_batches([len(t.ids) for t in tokens], self.max_batch_tokens)
        texts = sorted(set(range(len(tokens))) - set(images))
        return [[group[j] for j in batch] for group in (texts, images)
                for batch in make_batches([len(tokens[i].ids) for i in group], self.max_batch_tokens)]

    def _run(self, adapter: TaskAdapter, tokens: list[Any], params: list[PoolingParams],
             use_tqdm: bool = False) -> list[PoolingRequestOutput]:
        """Forward pass and pooling for tokenized requests, as outputs in input order."""
        return self.to_outputs(adapter, tokens, self.pool(adapter, tokens, params, use_tqdm=use_tqdm))

    def pool(self, adapter: TaskAdapter, tokens: list[Any], params: list[PoolingParams], *, use_tqdm: bool = False,
             on_batch: Callable[[int], None] | None = None) -> list[torch.Tensor]:
        """The pooling loop: the pooled tensors of tokenized prompts (from :meth:`prepare`), batched by the
        token budget, in input order. ``on_batch(n)`` is called after each forward pass with its prompt count
        (a progress bar); the Engine's own methods, ``poolkit embed`` jobs and the IO processor runner use it."""
        results: list[torch.Tensor | None] = [None] * len(tokens)
        batches = self._batches(tokens)
        if use_tqdm and len(batches) > 1:
            from tqdm.auto import tqdm

            batches = tqdm(batches, desc=adapter.name, unit="batch")
        for idx in batches:
            pooled = self.run_batch(adapter, [tokens[i] for i in idx], [params[i] for i in idx])
            for i, value in zip(idx, pooled):
                results[i] = value
            if on_batch is not None:
                on_batch(len(idx))
        return results  # type: ignore[return-value]

    @staticmethod
    def to_outputs(adapter: TaskAdapter, tokens: list[Any], pooled: list[torch.Tensor]) -> list[PoolingRequestOutput]:
        """One :class:`PoolingRequestOutput` per tokenized prompt, from its pooled tensor."""
        return [PoolingRequestOutput(str(next(_request_ids)), t.ids, adapter.output_cls(r))
                for t, r in zip(tokens, pooled)]

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

    def score(self, text_1: str | list[str], text_2: str | list[str],
              pooling_params: PoolingParams | None = None, *, truncate_prompt_tokens: int | None = None,
              use_tqdm: bool = False) -> list[PoolingRequestOutput]:
        """Relevance of each (text_1, text_2) pair (``.outputs.score``), for 1:1, 1:N and N:N inputs."""
        plan = self.prepare_score(text_1, text_2, pooling_params, truncate_prompt_tokens=truncate_prompt_tokens)
        pooled = self.pool(plan.adapter, plan.tokens, plan.params, use_tqdm=use_tqdm)
        return [PoolingRequestOutput(str(next(_request_ids)), ids, ScoringOutput(value))
                for ids, value in zip(plan.pair_token_ids(), plan.finish(pooled))]

    def prepare_score(self, text_1: str | list[str], text_2: str | list[str],
                      pooling_params: PoolingParams | None = None, *,
                      truncate_prompt_tokens: int | None = None) -> ScorePlan:
        """Validate and tokenize a score request; :meth:`ScorePlan.finish` turns pooled outputs into scores."""
        first, second = score_items(text_1), score_items(text_2)  # texts, or image prompts for a bi-encoder
        if not first or not second:
            name = "text_1" if not first else "text_2"
            raise InvalidRequestError(f"{name} is empty: at least one {'query' if not first else 'document'} is "
                                      f"needed to score", name)
        if len(first) == 1:
            first = first * len(second)
        if len(first) != len(second):
            raise InvalidRequestError("Input lengths must be either 1:1, 1:N or N:N")
        kind = self.score_type
        if kind == "cross-encoder":
            adapter, tokens, params = self.prepare_pairs(first, second, "score", pooling_params,
                                                         truncate_prompt_tokens=truncate_prompt_tokens)
            return ScorePlan(kind, adapter, tokens, params, first, second, [])
        base = (pooling_params or PoolingParams()).model_copy(update={"normalize": True})
        if kind == "bi-encoder":  # embed each distinct text once, normalized
            unique = list(dict.fromkeys(first + second))
            adapter, tokens, params = self.prepare(unique, "embed", base, truncate_prompt_tokens=truncate_prompt_tokens)
            return ScorePlan(kind, adapter, tokens, params, first, second, unique)
        # late interaction: queries and documents may be encoded differently (PyLate): each distinct one once
        queries, docs = list(dict.fromkeys(first)), list(dict.fromkeys(second))
        prompts = self.model_config.st.prompts if self.model_config.st else {}
        adapter, q_tokens, q_params = self.prepare(queries, "token_embed", base, role="query",
                                                   prompt_name="query" if "query" in prompts else None,
                                                   truncate_prompt_tokens=truncate_prompt_tokens)
        _, d_tokens, d_params = self.prepare(docs, "token_embed", base, role="document",
                                             prompt_name="document" if "document" in prompts else None,
                                             truncate_prompt_tokens=truncate_prompt_tokens)
        keys = [("query", t) for t in queries] + [("document", t) for t in docs]
        return ScorePlan(kind, adapter, q_tokens + d_tokens, q_params + d_params,
                         [("query", t) for t in first], [("document", t) for t in second], keys)

    def prepare_pairs(self, first: list[str], second: list[str], task: str = "score",
                      pooling_params: PoolingParams | list[PoolingParams] | None = None, *,
                      truncate_prompt_tokens: int | None = None) -> tuple[TaskAdapter, list[Any], list[PoolingParams]]:
        """:meth:`prepare` for text pairs tokenized together (a cross-encoder's input; TEI's /predict pairs):
        the params checked by ``task``'s adapter, then the model's pair template or the tokenizer's pair encoding."""
        params = self._params(pooling_params, len(first), truncate_prompt_tokens)
        adapter = self.task(task)
        for p in params:
            _check(adapter, p)
        # e.g. Qwen3-Reranker's prompt template; None: the tokenizer's pair encoding
        texts = [self.model.format_score_pair(a, b) for a, b in zip(first, second)]
        if texts and texts[0] is not None:  # the template carries its own special tokens
            return adapter, self.input_processor(texts, params, add_special_tokens=False), params
        return adapter, self.input_processor.pairs(first, second, params), params

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

    @staticmethod
    def _params(pooling_params: Any, n: int, truncate: int | None) -> list[PoolingParams]:
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

    def __repr__(self) -> str:
        return (f"Engine(model={self.model_config.name!r}, architecture={self.architecture}, "
                f"tasks={list(self.supported_tasks)}, dtype={self.dtype}, device={self.device})")
