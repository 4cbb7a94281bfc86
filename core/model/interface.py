"""The model contract: :class:`PoolingModel`, the base class of every architecture, and :class:`ModelInit`.

The pipeline (Engine, task adapters, server) reads a model only through the attributes and methods
declared here; each has a default, so a model declares only what differs. A model is built from one
:class:`ModelInit`: the config, the checkpoint's tensors (:class:`poolkit.model.weights.Weights`, with
``take`` and a consumed-check), dtype, device and a ``linear()`` factory that gives plugins the
prepacked CPU kernels without knowing about oneDNN. :func:`contract_problems` says what keeps a
class from this contract (the Engine refuses such a class; ``poolkit plugins --check`` reports it).
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import nn

if TYPE_CHECKING:
    from poolkit.batch import PackedBatch
    from poolkit.inputs import TokenizedPrompt
    from poolkit.model.weights import Weights


@dataclass
class ModelInit:
    """Everything a model is built from."""

    config: Any
    """The transformers config (after ``hf_overrides``); for an unknown ``model_type`` a plain
    ``PretrainedConfig`` keeping every field of ``config.json``."""
    weights: Weights
    """The checkpoint's tensors by HF key name; ``weights.take(key)`` pops one (on :attr:`device`)."""
    dtype: torch.dtype = torch.float32
    """Compute dtype of the matmuls: float32, or bfloat16 (bf16 matmuls, fp32 residual stream)."""
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    kernels: str = "auto"
    """``auto`` (oneDNN prepacked linears on CPU when they pass a probe) or ``torch``; read by
    :meth:`linear`, which is how a model should use it."""
    st: Any = None
    """The checkpoint's Sentence Transformers config (:class:`poolkit.config.SentenceTransformersConfig`:
    its modules, prompts and ``settings``), None when it has none."""
    tokenizer: Any = None
    """The tokenizer the Engine serves this model with (a family that needs token ids, e.g. PyLate's
    prefix and skiplist tokens), None when built without one."""
    quantization: str | None = None
    """``"int8"``: :meth:`linear` gives int8 linears (``Engine(quantization="int8")``, only for a family
    whose :attr:`PoolingModel.supported_quantizations` names it); None: :attr:`dtype` throughout."""

    def linear(self, weight: torch.Tensor, bias: torch.Tensor | None = None, act: str | None = None,
               keep_dtype: bool = False, quantize: bool = True) -> nn.Module:
        """``y = act(x @ weight.T + bias)`` in :attr:`dtype` with the fastest kernels available here.

        ``act``: None, ``"gelu"``, ``"gelu_tanh"`` or ``"relu"`` (fused where the kernel can). The
        output is fp32 unless ``keep_dtype`` (for an output that feeds another bf16 matmul). Under
        :attr:`quantization` the layer is int8 (:class:`poolkit.layers.Int8Linear`) unless
        ``quantize=False``: a layer whose int8 error measurably hurts the outputs stays in :attr:`dtype`.
        """
        if self.quantization == "int8" and quantize:
            from poolkit.layers.quantized import Int8Linear

            return Int8Linear(weight, bias, act, self.dtype if keep_dtype else torch.float32)
        from poolkit.layers.linear import FastLinear

        return FastLinear(weight, bias, act, self.dtype, self.kernels, keep_dtype=keep_dtype)


class PoolingModel(nn.Module):
    """Base class of model architectures: ``forward(batch)`` returns the last hidden state of every token.

    Sequences arrive packed (:class:`poolkit.batch.PackedBatch`): ``N`` tokens of all sequences end
    to end. Subclasses implement ``__init__(self, init: ModelInit)`` (call ``super().__init__(init)``)
    and :meth:`forward`, and override the attributes below where the defaults do not fit.
    """

    supported_tasks: ClassVar[tuple[str, ...]] = ("embed", "token_embed")
    """Tasks this architecture serves (see :meth:`tasks_for` for ones that depend on the config)."""
    supported_quantizations: ClassVar[tuple[str, ...]] = ()
    """Weight/activation quantizations (``Engine(quantization=...)``) this family is tested with: ``("int8",)``
    for one whose linears all come from :meth:`ModelInit.linear` and whose parity tests hold at int8."""
    default_pooling: ClassVar[str] = "CLS"
    """Pooling method when neither the Sentence Transformers files nor the user name one."""
    is_generative: ClassVar[bool] = False
    """A text-generation checkpoint (``*ForCausalLM``): served only through ``convert``."""
    score_type: ClassVar[str | None] = None
    """How ``score`` pairs texts: ``cross-encoder`` (the pair through ``classify``),
    ``late-interaction`` (MaxSim over ``token_embed``), ``bi-encoder`` (cosine of ``embed``);
    None: cross-encoder when the model serves ``score``, else bi-encoder."""
    default_use_activation: ClassVar[bool] = True
    """Whether classify/score/token_classify apply softmax/sigmoid by default (reward models: False)."""
    extra_weight_files: ClassVar[tuple[str, ...]] = ()
    """Torch state-dict files beside the checkpoint to load too, keyed ``<file stem>.<key>`` (BGE-M3)."""
    max_model_len: int | None = None
    """Longest input the model can run (None: the config's ``max_position_embeddings``)."""
    num_labels: int = 0
    """Output labels of :meth:`classify` / :meth:`classify_tokens` (0: no classifier head)."""
    id2label: dict[int, str] = {}
    """Label names by index (from the config), for classify responses."""
    image_tokens: int = 0
    """Tokens one image counts for in batching and usage (its vision sequence length), for a model
    with :meth:`embed_images`."""

    def __init__(self, init: ModelInit | None = None) -> None:
        super().__init__()
        if init is not None:
            self.config = init.config

    @classmethod
    def tasks_for(cls, config: Any) -> tuple[str, ...]:
        """The tasks served for this config (default: :attr:`supported_tasks`)."""
        return tuple(cls.supported_tasks)

    @classmethod
    def prepare_config(cls, config: Any, tokenizer: Any) -> None:
        """Complete ``config`` from the tokenizer before the model is built (e.g. token ids of labels)."""

    @property
    def hidden_size(self) -> int | None:
        """Width of :meth:`forward`'s output (default: the config's ``hidden_size``)."""
        given = self.__dict__.get("_hidden_size")
        return given if given is not None else getattr(getattr(self, "config", None), "hidden_size", None)

    @hidden_size.setter
    def hidden_size(self, value: int | None) -> None:
        self.__dict__["_hidden_size"] = value

    def forward(self, batch: PackedBatch) -> torch.Tensor:
        """``(N, C)`` float32: the last hidden state of each of the batch's ``N`` tokens."""
        raise NotImplementedError

    def prepare_prompts(self, tokens: list[TokenizedPrompt], role: str | None) -> list[TokenizedPrompt]:
        """Rewrite tokenized prompts for this model before batching (default: as they are).

        ``role`` is the request's prompt name (``"query"``/``"document"``; ``score`` and ``rerank`` pass
        ``"query"`` for the first texts and ``"document"`` for the others), None when none applies. PyLate's
        ColBERT inserts its marker token here, pads queries with [MASK] and drops punctuation from
        documents (``TokenizedPrompt.attend`` / ``.keep``).
        """
        return tokens

    def classify(self, pooled: torch.Tensor) -> torch.Tensor:
        """``(B, num_labels)`` logits from pooled ``(B, C)`` rows (classify and cross-encoder score)."""
        raise NotImplementedError(f"{type(self).__name__} has no sequence classifier")

    def classify_tokens(self, hidden: torch.Tensor) -> torch.Tensor:
        """``(N, num_labels)`` logits for every token (token_classify: NER, rewards, sparse weights)."""
        raise NotImplementedError(f"{type(self).__name__} has no token classifier")

    def embed_tokens(self, hidden: torch.Tensor, batch: PackedBatch) -> list[torch.Tensor] | None:
        """token_embed's vectors, one ``(L_i, D)`` per sequence; None (default): the hidden states (ALL)."""
        return None

    def format_score_pair(self, query: str, document: str) -> str | None:
        """One prompt for a cross-encoder pair when the model has its own template (Qwen3-Reranker);
        None (default): the tokenizer's pair encoding."""
        return None

    def embed_images(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """``(B, D)`` embeddings of ``B`` images, ``pixel_values`` ``(B, 3, H, W)`` from the checkpoint's image
        processor; the embed task then normalizes them like texts. A model that overrides it accepts image
        prompts (``{"multi_modal_data": {"image": ...}}``, CLIP, SigLIP); the default: text only."""
        raise NotImplementedError(f"{type(self).__name__} does not accept images")


def contract_problems(cls: Any) -> list[str]:
    """What keeps ``cls`` from being built as ``cls(init)`` and run: [] for a :class:`PoolingModel` subclass
    that implements ``forward`` and whose ``__init__`` takes one :class:`ModelInit`."""
    if not (isinstance(cls, type) and issubclass(cls, PoolingModel)):
        return ["is not a subclass of poolkit.PoolingModel: subclass it and take one poolkit.ModelInit, "
                "__init__(self, init)"]
    problems = []
    if cls.forward is PoolingModel.forward:
        problems.append("does not implement forward(batch)")
    signature = inspect.signature(cls)
    try:
        signature.bind(None)
    except TypeError:
        problems.append(f"has an __init__{signature} that does not take one poolkit.ModelInit: "
                        f"write __init__(self, init)")
    return problems


__all__ = ["ModelInit", "PoolingModel", "contract_problems"]
