"""Generic fallback: any architecture transformers implements, run through transformers itself.

Registered with ``fallback=True``: the Engine uses it only when no plugin registered the
architecture natively. It pads each packed batch back into ``(B, T)`` (slower than the native
families, same results as transformers), and unpacks the outputs again. What it serves follows
the architecture name (``poolkit.model.convert``): ``*For*Classification`` -> classify (and score with 1
label) or token_classify; ``*Model``, ``*ForCausalLM``... -> embed from the last hidden state.
"""

from __future__ import annotations

import re
from typing import Any

import torch

from poolkit.batch import PackedBatch
from poolkit.config import id2label
from poolkit.model.convert import default_convert
from poolkit.model.interface import ModelInit, PoolingModel


def _arch(cfg: Any) -> str:
    return (getattr(cfg, "architectures", None) or ["?"])[0]


def _tolerated(hf: Any, key: str) -> bool:
    """A checkpoint tensor the class has no parameter for that transformers' own loading ignores too:
    a saved buffer (``position_ids``...) or a key matching ``_keys_to_ignore_on_load_unexpected``."""
    patterns = getattr(hf, "_keys_to_ignore_on_load_unexpected", None) or []
    return key.endswith(("position_ids", "token_type_ids", "inv_freq")) or any(re.search(p, key) for p in patterns)


class TransformersFallback(PoolingModel):
    """Wraps ``transformers.<Architecture>`` built from the config and the checkpoint's tensors."""

    default_pooling = "CLS"
    supported_tasks: tuple[str, ...] = ("embed", "token_embed", "classify", "score", "token_classify")

    @classmethod
    def accepts(cls, cfg: Any) -> bool:
        import transformers

        return isinstance(getattr(transformers, _arch(cfg), None), type)

    @classmethod
    def tasks_for(cls, config: Any) -> tuple[str, ...]:
        arch = _arch(config)
        if default_convert(arch) != "classify":
            return ("embed", "token_embed")
        if "TokenClassification" in arch:
            return ("token_classify",)
        return ("classify", "score") if getattr(config, "num_labels", 2) == 1 else ("classify",)

    @classmethod
    def default_pooling_for(cls, cfg: Any) -> str:
        decoder = getattr(cfg, "is_decoder", False) or _arch(cfg).endswith("ForCausalLM")
        return "LAST" if decoder else "CLS"

    def __init__(self, init: ModelInit) -> None:
        super().__init__(init)
        import transformers

        cfg, w = init.config, init.weights
        self.arch = _arch(cfg)
        self.hf = getattr(transformers, self.arch)(cfg).eval()
        expected = self.hf.state_dict().keys()
        missing, _ = self.hf.load_state_dict({k: w.take(k) for k in list(w) if k in expected}, strict=False)
        missing = [k for k in missing if not k.endswith(("position_ids", "lm_head.weight"))]
        if missing:
            raise KeyError(f"Checkpoint is missing tensors for {self.arch}: {missing[:8]}")
        w.check_consumed(self.arch, ignore=tuple(k for k in w if _tolerated(self.hf, k)))
        self.hf.to(device=init.device, dtype=init.dtype)
        self.num_labels = getattr(cfg, "num_labels", 0)
        self.id2label = id2label(cfg, self.num_labels)
        self.default_pooling = self.default_pooling_for(cfg)
        self._logits: torch.Tensor | None = None

    def forward(self, batch: PackedBatch) -> torch.Tensor:
        B, T = len(batch.lengths), max(batch.lengths)
        valid = torch.arange(T, device=batch.device)[None, :] < torch.tensor(batch.lengths, device=batch.device)[:, None]
        ids = torch.zeros(B, T, dtype=torch.long, device=batch.device)
        ids[valid] = batch.input_ids
        kwargs: dict[str, Any] = {"input_ids": ids, "attention_mask": valid.long()}
        if batch.token_type_ids is not None:
            kwargs["token_type_ids"] = torch.zeros_like(ids).masked_scatter(valid, batch.token_type_ids)
        out = self.hf(**kwargs, output_hidden_states=True)
        logits = getattr(out, "logits", None)
        self._logits = None if logits is None else (logits[valid] if logits.dim() == 3 else logits).float()
        return out.hidden_states[-1][valid].float()  # (N, C)

    def classify(self, pooled: torch.Tensor) -> torch.Tensor:
        """The logits transformers' own head computed in the last forward (it pools inside)."""
        assert self._logits is not None and self._logits.shape[0] == pooled.shape[0]
        return self._logits

    def classify_tokens(self, hidden: torch.Tensor) -> torch.Tensor:
        """The per-token logits transformers' own head computed in the last forward, (N, num_labels)."""
        assert self._logits is not None and self._logits.shape[0] == hidden.shape[0]
        return self._logits
