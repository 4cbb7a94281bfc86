"""ColBERT late-interaction models: one vector per token, scored by MaxSim.

Three formats:

- ``HF_ColBERT`` (colbertv2.0, answerai-colbert-small-v1): a BERT encoder (keys under ``bert.`` or
  ``model.``) and a bias-free projection ``linear.weight`` (or ``colbert_linear.weight``) to ``dim``;
- ``ColBERTModernBertModel`` (vLLM's name, through ``hf_overrides``): the same on ModernBERT, the
  projection in the checkpoint or in the Sentence Transformers ``1_Dense/`` module;
- PyLate checkpoints (``config_sentence_transformers.json`` ``model_type: "ColBERT"``, BERT or ModernBERT
  backbone + Dense): PyLate's own semantics, see :class:`PyLateColBERT`.

The first two follow vLLM's semantics: ``token_embed`` returns every token's projected vector, special
tokens included, L2-normalized (``normalize`` per request as usual); no query markers, no query
expansion. ``score`` and ``rerank`` use MaxSim over the vectors (``score_type = "late-interaction"``):
each query token's best match among the document's tokens, summed.
"""

from __future__ import annotations

import json
import string
from dataclasses import dataclass, field, fields

import torch

from poolkit.batch import PackedBatch
from poolkit.builtin_models.bert import BUFFERS, BertModel, BertPoolingModel
from poolkit.builtin_models.modernbert import ModernBertModel, ModernBertPoolingModel
from poolkit.builtin_poolers.heads import DenseStack
from poolkit.inputs import TokenizedPrompt
from poolkit.layers import head_linear
from poolkit.model.interface import ModelInit, PoolingModel

PROJECTIONS = ("linear.weight", "colbert_linear.weight")


class HFColBERT(BertPoolingModel):
    """BERT + a bias-free projection per token; scored by MaxSim."""

    default_pooling = "ALL"
    supported_tasks = ("token_embed",)
    score_type = "late-interaction"
    unused_weights = (*BUFFERS, "pooler.", "cls.")

    def build_heads(self, init: ModelInit) -> None:
        self.projection = _projection(init, type(self).__name__)
        _normalized(init)
        width = _width(self.projection)
        dim = next((getattr(init.config, a) for a in ("colbert_dim", "dim", "projection_dim")
                    if getattr(init.config, a, None)), None)
        if dim is not None and dim != width:
            raise ValueError(f"the ColBERT projection has {width} dimensions, the config says {dim}")

    def embed_tokens(self, hidden: torch.Tensor, batch: PackedBatch) -> list[torch.Tensor]:
        """Every token's ColBERT vector, one ``(L_i, dim)`` per sequence (token_embed normalizes them)."""
        return list(self.projection(hidden).split(batch.lengths))


# --- the projection and its normalization, shared by the three formats ----------------------------


def _projection(init: ModelInit, owner: str) -> torch.nn.Module:
    """The ColBERT projection: ``linear.weight`` / ``colbert_linear.weight`` in the checkpoint, else the
    Sentence Transformers ``Dense`` modules saved beside it (``1_Dense/``: PyLate's format)."""
    w = init.weights
    key = next((k for k in PROJECTIONS if k in w), None)
    if key is not None:
        return head_linear(init, w.take(key), None)
    if init.st is not None and init.st.dense:
        for layer in init.st.dense:
            cfg = json.loads((layer.path / "config.json").read_text())
            if cfg.get("use_residual"):
                raise ValueError(f"{owner}: a Dense module with use_residual ({layer.path}) is not supported")
        return DenseStack(init.st.dense).to(init.device)
    raise KeyError(f"{owner}: no ColBERT projection: the checkpoint has none of {list(PROJECTIONS)} and "
                   f"no Sentence Transformers Dense module")


def _normalized(init: ModelInit) -> None:
    """A Dense module saved beside a ColBERT checkpoint comes without a ``Normalize`` module, which for a
    Sentence Transformers model would mean unnormalized vectors; ColBERT vectors are normalized (PyLate's
    ``encode`` and vLLM's token_embed): drop that ST default so the pooler's own (normalize) applies."""
    if init.st is not None and init.st.pooler.normalize is False:
        init.st.pooler = init.st.pooler.model_copy(update={"normalize": None})


def _width(projection: torch.nn.Module) -> int:
    return projection.out_features if hasattr(projection, "out_features") else [
        m for m in projection.modules() if isinstance(m, torch.nn.Linear)][-1].out_features


# --- ModernBERT backbone, vLLM's ColBERTModernBertModel ------------------------------------------


class ColBERTModernBertModel(ModernBertPoolingModel):
    """ModernBERT + a bias-free projection per token (vLLM's semantics, as :class:`HFColBERT`)."""

    default_pooling = "ALL"
    supported_tasks = ("token_embed",)
    score_type = "late-interaction"
    unused_weights = ("head.", "decoder.")

    def build_heads(self, init: ModelInit) -> None:
        self.projection = _projection(init, type(self).__name__)
        _normalized(init)

    def embed_tokens(self, hidden: torch.Tensor, batch: PackedBatch) -> list[torch.Tensor]:
        return list(self.projection(hidden).split(batch.lengths))


# --- PyLate checkpoints ---------------------------------------------------------------------------


@dataclass
class PyLateSettings:
    """PyLate's query/document settings (``config_sentence_transformers.json``; PyLate's defaults)."""

    query_prefix: str = "[Q] "
    document_prefix: str = "[D] "
    query_length: int = 32
    document_length: int = 180
    do_query_expansion: bool = True
    attend_to_expansion_tokens: bool = False
    skiplist_words: list[str] = field(default_factory=lambda: list(string.punctuation))

    @classmethod
    def read(cls, settings: dict) -> PyLateSettings:
        known = {f.name for f in fields(cls)}
        out = cls(**{k: v for k, v in settings.items() if k in known and v is not None})
        if not out.do_query_expansion:
            out.attend_to_expansion_tokens = False  # as PyLate
        return out


BACKBONES = {"bert": BertModel, "modernbert": ModernBertModel}


class PyLateColBERT(PoolingModel):
    """A PyLate ``ColBERT`` checkpoint (Sentence Transformers modules: Transformer + Dense), PyLate's semantics.

    Served for ``config_sentence_transformers.json`` ``model_type: "ColBERT"``, on a BERT or ModernBERT
    backbone (``config.json``). As ``pylate.models.ColBERT.encode``:

    - a query (``prompt_name="query"``, and the default: PyLate's ``is_query=True``) is truncated to
      ``query_length - 1`` tokens, padded with [MASK] to that length when ``do_query_expansion``, its
      marker token inserted after [CLS]; the [MASK]s read the query but are not attended to unless
      ``attend_to_expansion_tokens``; every position's vector is returned;
    - a document (``prompt_name="document"``; ``score``/``rerank`` documents) is truncated to
      ``document_length - 1``, its marker inserted; the vectors of skiplist tokens (punctuation) are dropped.
    Vectors are the Dense projection of each token, L2-normalized.
    """

    default_pooling = "ALL"
    supported_tasks = ("token_embed",)
    score_type = "late-interaction"
    unused_weights = (*BUFFERS, "pooler.", "cls.", "head.", "decoder.")

    def __init__(self, init: ModelInit) -> None:
        super().__init__(init)
        kind = getattr(init.config, "model_type", None)
        if kind not in BACKBONES:
            raise ValueError(f"PyLate ColBERT on a {kind!r} backbone is not supported natively; "
                             f"supported: {sorted(BACKBONES)}")
        if init.tokenizer is None:
            raise ValueError("PyLateColBERT needs the tokenizer (its marker, [MASK] and skiplist token ids)")
        self.encoder = BACKBONES[kind](init)
        self.projection = _projection(init, type(self).__name__)
        init.weights.check_consumed(type(self).__name__, ignore=self.unused_weights)
        s = self.settings = PyLateSettings.read(init.st.settings if init.st else {})
        tok = init.tokenizer
        self.prefix_id = {"query": tok.convert_tokens_to_ids(s.query_prefix) if s.query_prefix else None,
                          "document": tok.convert_tokens_to_ids(s.document_prefix) if s.document_prefix else None}
        # PyLate pads with [MASK] (an encoder), else end-of-sequence (a decoder)
        self.pad_id = tok.mask_token_id if tok.mask_token_id is not None else tok.eos_token_id
        self.skiplist = {tok.convert_tokens_to_ids(w) for w in s.skiplist_words}
        _normalized(init)
        # PyLate rewrites the saved max_seq_length on every call: the limits are query/document_length
        if init.st is not None:
            init.st.max_seq_length = max(s.query_length, s.document_length)

    def prepare_prompts(self, tokens: list[TokenizedPrompt], role: str | None) -> list[TokenizedPrompt]:
        role = "document" if role == "document" else "query"
        s, prefix = self.settings, self.prefix_id[role]
        length = s.query_length if role == "query" else s.document_length
        room = length - 1 if prefix is not None else length  # the tokenizer's limit, before the marker
        expand = role == "query" and s.do_query_expansion
        out = []
        for t in tokens:
            ids = t.ids if len(t.ids) <= room else t.ids[:room - 1] + t.ids[-1:]  # [CLS] ... [SEP], cut as HF
            attend = len(ids)
            if expand:
                ids = ids + [self.pad_id] * (room - len(ids))
            if prefix is not None:
                ids, attend = ids[:1] + [prefix] + ids[1:], attend + 1
            if expand and s.attend_to_expansion_tokens:
                attend = len(ids)
            keep = None
            if role == "document":
                kept = [i for i, tok in enumerate(ids) if tok not in self.skiplist]
                keep = kept if len(kept) < len(ids) else None
            out.append(TokenizedPrompt(ids, None, 0, attend if attend < len(ids) else None, keep))
        return out

    def forward(self, batch: PackedBatch) -> torch.Tensor:
        return self.encoder(batch)

    def embed_tokens(self, hidden: torch.Tensor, batch: PackedBatch) -> list[torch.Tensor]:
        vectors = list(self.projection(hidden).split(batch.lengths))
        if batch.keep is None:
            return vectors
        return [v if k is None else v[k] for v, k in zip(vectors, batch.keep)]
