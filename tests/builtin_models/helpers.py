"""What the family tests share: the BPE trainer of the tiny checkpoints, padded references, native builds.

Tolerances
----------
Every family is compared with transformers on tiny random checkpoints whose weights have std 0.2
(ten times transformers' 0.02 initializer), so activations stay lively (hidden states of magnitude
up to ~5) and a wrong mask or position moves the output by far more than any tolerance here
(several tests also assert that their reference varies, so the comparison can fail).

- :data:`PARITY_TOL` (fp32 vs transformers fp32, every family): the two compute the same math in a
  different order (packed vs padded batches, fused q/k/v, oneDNN vs MKL matmuls), so they differ by
  fp32 rounding only: measured max abs diffs are 2e-7 (BERT, outputs ~0.5) to 4e-6 (Qwen3,
  ModernBERT, RoBERTa, outputs ~4.5). 1e-5 is the same bound for all, a few times above that.
- :data:`BF16_MIN_COSINE` (bf16 mode vs fp32 mode, hidden states; Llama/Qwen, ModernBERT, RoBERTa): bf16
  keeps 8 significant bits, a relative rounding of up to 2^-9 (~0.2%) on every matmul input, and
  the errors add up over the layers and grow with the activations' scale. Measured minimum cosines are 0.9995 (Qwen3, ModernBERT) to 0.99999 (BERT), so
  0.99 leaves 20x headroom on ``1 - cosine``: the tests fail when bf16 mode is broken, not from
  rounding. (RoBERTa's bf16 test also bounds its classifier logits; see its comment.)
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

PARITY_TOL = 1e-5
BF16_MIN_COSINE = 0.99


# --- tokenizers -------------------------------------------------------------------------------


def train_bpe_tokenizer(dest: str | Path, texts: list[str], special_tokens: list[str], vocab_size: int, *,
                        unk_token: str | None = None, post_processor: Callable[[Any], Any] | None = None,
                        **fast_kwargs: Any) -> Any:
    """Train a byte-level BPE on ``texts`` offline and save it to ``dest`` as a transformers tokenizer.

    ``unk_token`` is the BPE model's and the tokenizer's; ``post_processor(tokenizer)`` returns the
    ``tokenizers`` post-processor (special tokens around a text) or None; ``fast_kwargs`` go to
    ``PreTrainedTokenizerFast`` (the other special tokens...). Returns the ``PreTrainedTokenizerFast``.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=unk_token))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=special_tokens, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer)
    processor = post_processor(tok) if post_processor is not None else None
    if processor is not None:
        tok.post_processor = processor
    if unk_token is not None:
        fast_kwargs["unk_token"] = unk_token
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, model_input_names=["input_ids", "attention_mask"],
                                   **fast_kwargs)
    fast.save_pretrained(dest)
    return fast


# --- references ---------------------------------------------------------------------------------


def padded(ids: list[list[int]], pad_id: int = 0, token_types: list[list[int]] | None = None) -> dict[str, torch.Tensor]:
    """transformers' inputs for ``ids``, right-padded into ``(B, T)``: input_ids, attention_mask and,
    when ``token_types`` is given, token_type_ids."""
    T = max(len(s) for s in ids)
    inputs = {"input_ids": torch.full((len(ids), T), pad_id, dtype=torch.long),
              "attention_mask": torch.zeros(len(ids), T, dtype=torch.long)}
    if token_types is not None:
        inputs["token_type_ids"] = torch.zeros(len(ids), T, dtype=torch.long)
    for b, s in enumerate(ids):
        inputs["input_ids"][b, : len(s)] = torch.tensor(s)
        inputs["attention_mask"][b, : len(s)] = 1
        if token_types is not None:
            inputs["token_type_ids"][b, : len(s)] = torch.tensor(token_types[b])
    return inputs


def unpad(x: torch.Tensor, ids: list[list[int]]) -> list[torch.Tensor]:
    """``(B, T, ...)`` -> one ``(L_i, ...)`` tensor per sequence."""
    return [x[b, : len(s)] for b, s in enumerate(ids)]


def reference_hidden(model: Any, ids: list[list[int]], pad_id: int = 0,
                     token_types: list[list[int]] | None = None) -> list[torch.Tensor]:
    """A transformers model's last hidden state of each sequence, run as one padded batch."""
    with torch.no_grad():
        hidden = model(**padded(ids, pad_id, token_types)).last_hidden_state
    return unpad(hidden, ids)


# --- native models ------------------------------------------------------------------------------


def model_init(hf_config: Any, state: dict[str, torch.Tensor], dtype: torch.dtype = torch.float32,
               kernels: str = "auto") -> Any:
    """The :class:`poolkit.ModelInit` the Engine would build on CPU."""
    from poolkit.model.interface import ModelInit
    from poolkit.model.weights import Weights

    return ModelInit(hf_config, Weights(state), dtype, torch.device("cpu"), kernels)


def native_class(architecture: str) -> type:
    """The built-in class registered for ``architecture``."""
    from poolkit.builtin_models import ARCHITECTURES

    module, cls = ARCHITECTURES[architecture]
    return getattr(importlib.import_module(f"poolkit.builtin_models.{module}"), cls)


def native(cls: type | None, path: str | Path, *, dtype: torch.dtype = torch.float32, kernels: str = "auto",
           hf_overrides: dict[str, Any] | None = None, state: dict[str, torch.Tensor] | None = None) -> Any:
    """``cls`` (default: the class of the config's architecture) built from the checkpoint at ``path``
    as the Engine builds it (``extra_weight_files`` too), in eval mode. ``state`` replaces the
    checkpoint's tensors (a test that removes or adds one)."""
    from poolkit.config import ModelConfig
    from poolkit.model.weights import load_extra_weight_files, load_state_dict

    cfg = ModelConfig.load(str(path), hf_overrides=hf_overrides)
    cls = cls or native_class(cfg.architectures[0])
    if state is None:
        state = {**load_state_dict(path), **load_extra_weight_files(path, cls.extra_weight_files)}
    return cls(model_init(cfg.hf_config, state, dtype, kernels)).eval()


def assert_bf16_close(bf16: torch.Tensor, fp32: torch.Tensor) -> None:
    """bf16 mode returns fp32 rows within :data:`BF16_MIN_COSINE` of the fp32 mode's (see the module docstring)."""
    assert bf16.dtype == torch.float32
    assert float(torch.nn.functional.cosine_similarity(bf16, fp32, dim=-1).min()) >= BF16_MIN_COSINE
