"""BGE-M3 (an XLM-RoBERTa checkpoint plus two small heads): dense, sparse and ColBERT outputs, packed.

References: FlagEmbedding's ``BGE_M3/modeling.py`` (``BGEM3Model``: ``_dense_embedding``,
``_sparse_embedding``, ``_colbert_embedding``) and vLLM's ``BgeM3EmbeddingModel`` in
vllm/model_executor/models/roberta.py. Selected with
``hf_overrides={"architectures": ["BgeM3EmbeddingModel"]}`` on the BAAI/bge-m3 directory.

- ``embed``: the ``<s>`` token's hidden state (``default_pooling`` CLS), normalized by the task;
- ``token_classify``: sparse lexical weights ``relu(sparse_linear(h))``, one per token, ``(N, 1)``,
  returned as they are (``default_use_activation`` False: no sigmoid);
- ``token_embed``: ColBERT vectors ``colbert_linear(h)`` of every token but the first (``<s>``),
  normalized by the task.

The two heads are not in ``model.safetensors``: FlagEmbedding saves them next to it as
``sparse_linear.pt`` and ``colbert_linear.pt``, each a torch state dict ``{"weight", "bias"}``. The
class names them in ``extra_weight_files``; whoever builds it (the Engine) loads each file with
:func:`poolkit.model.weights.load_extra_weight_files` into the checkpoint's tensors under ``<file stem>.<key>``
(``sparse_linear.weight``...). The class itself only reads ``init.weights``, so it is built like
every other model class, from one :class:`poolkit.ModelInit`.
"""

from __future__ import annotations

import torch

from poolkit.batch import PackedBatch
from poolkit.builtin_models.roberta import RobertaForEmbedding
from poolkit.model.interface import ModelInit


def _take_head(init: ModelInit, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    try:
        return init.weights.take(f"{name}.weight"), init.weights.take(f"{name}.bias")
    except KeyError:
        raise KeyError(f"BGE-M3 needs the tensors '{name}.weight' and '{name}.bias', loaded from {name}.pt in the "
                       f"model directory (BgeM3EmbeddingModel.extra_weight_files); the checkpoint has none") from None


class BgeM3EmbeddingModel(RobertaForEmbedding):
    """XLM-RoBERTa encoder with BGE-M3's sparse (``token_classify``) and ColBERT (``token_embed``) heads."""

    default_pooling = "CLS"  # BGE-M3's dense vector is the normalized <s> state
    supported_tasks = ("embed", "token_embed", "token_classify")
    supported_quantizations = ()  # its sparse and ColBERT heads are untested at int8
    # torch state dicts beside the checkpoint, loaded as "<stem>.weight"/"<stem>.bias"
    extra_weight_files = ("sparse_linear.pt", "colbert_linear.pt")
    default_use_activation = False  # sparse weights are relu outputs already: no sigmoid on top
    num_labels = 1
    id2label = {0: "sparse_weight"}

    def build_heads(self, init: ModelInit) -> None:
        # the heads see every token: matmuls in the compute dtype like the encoder's, results in fp32
        self.sparse_linear = init.linear(*_take_head(init, "sparse_linear"), "relu")  # C -> 1, relu fused
        self.colbert_linear = init.linear(*_take_head(init, "colbert_linear"))  # C -> colbert_dim

    def classify_tokens(self, hidden: torch.Tensor) -> torch.Tensor:
        """Sparse lexical weights ``relu(sparse_linear(h))``: ``(N, C) -> (N, 1)``."""
        return self.sparse_linear(hidden)

    def embed_tokens(self, hidden: torch.Tensor, batch: PackedBatch) -> list[torch.Tensor]:
        """ColBERT vectors, not normalized: ``(L_i - 1, colbert_dim)`` per sequence, the ``<s>`` token dropped."""
        keep = batch.positions > 0  # (N,) every token but each sequence's first
        vectors = self.colbert_linear(hidden[keep])  # (N - B, D)
        return list(vectors.split([n - 1 for n in batch.lengths]))
