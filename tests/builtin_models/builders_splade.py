"""Tiny SPLADE checkpoints: a random ``BertForMaskedLM`` and the Sentence Transformers SparseEncoder files
around it, in the current layout (fill-mask ``Transformer``) or the older ``MLMTransformer`` one."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

from poolkit import testing

OLD_TYPES = ("sentence_transformers.sparse_encoder.models.MLMTransformer",
             "sentence_transformers.sparse_encoder.models.SpladePooling")  # Sentence Transformers 5.0-5.3 saves


def build_tiny_mlm(dest: str | Path, *, seed: int = 0, tie_word_embeddings: bool = True) -> Path:
    """A random-weight ``BertForMaskedLM`` (safetensors) with MiniLM's WordPiece tokenizer.

    Weights have std 0.1 and LayerNorm scales ~1 (std 0.2 everywhere, as ``testing.build_tiny_bert``,
    makes this model's hidden states nearly the same for every token); the decoder bias is shifted by
    -1.5 so most logits are negative: a text's vector is mostly zeros with a few thousand weights
    that differ from text to text, so dropping zeros or pooling the wrong tokens shows.
    """
    from transformers import BertConfig, BertForMaskedLM

    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    cfg = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                     max_position_embeddings=512, tie_word_embeddings=tie_word_embeddings)
    torch.manual_seed(seed)
    model = BertForMaskedLM(cfg).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.normal_(1.0 if name.endswith("LayerNorm.weight") else 0.0, 0.2 if "LayerNorm" in name else 0.1)
        model.cls.predictions.decoder.bias.sub_(1.5)  # the bias the forward adds (tied: cls.predictions.bias)
    model.save_pretrained(dest, safe_serialization=True)
    testing.copy_wordpiece_tokenizer(dest)
    return dest


def save_as_sparse_encoder(src: str | Path, dest: str | Path, *, strategy: str = "max", style: str = "new",
                           activation: str = "relu") -> Path:
    """Copy the checkpoint at ``src`` to ``dest`` and add the SparseEncoder files.

    ``style="new"``: saved by Sentence Transformers itself (``Transformer(transformer_task="fill-mask")``
    + ``SpladePooling``); ``"old"``: the module type names and config files older saves wrote.
    """
    dest = Path(dest)
    shutil.copytree(src, dest, dirs_exist_ok=True)
    if style == "new":
        from sentence_transformers import SparseEncoder
        from sentence_transformers.sparse_encoder.modules import SpladePooling, Transformer

        model = SparseEncoder(modules=[Transformer(str(dest), transformer_task="fill-mask"),
                                       SpladePooling(pooling_strategy=strategy)], device="cpu")
        model.save(str(dest))
        return dest
    assert style == "old", style
    modules = [{"idx": 0, "name": "0", "path": "", "type": OLD_TYPES[0]},
               {"idx": 1, "name": "1", "path": "1_SpladePooling", "type": OLD_TYPES[1]}]
    (dest / "modules.json").write_text(json.dumps(modules))
    (dest / "1_SpladePooling").mkdir(exist_ok=True)
    (dest / "1_SpladePooling" / "config.json").write_text(json.dumps(
        {"pooling_strategy": strategy, "activation_function": activation, "word_embedding_dimension": 30522}))
    (dest / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 512, "do_lower_case": False}))
    (dest / "config_sentence_transformers.json").write_text(json.dumps(
        {"model_type": "SparseEncoder", "prompts": {"query": "", "document": ""}, "default_prompt_name": None,
         "similarity_fn_name": "dot"}))
    return dest


def sparse_encoder_reference(path: str | Path, texts: list[str]) -> torch.Tensor:
    """``SparseEncoder.encode`` on the same directory: ``(len(texts), V)`` dense fp32 (padded batches)."""
    from sentence_transformers import SparseEncoder

    model = SparseEncoder(str(path), device="cpu")
    return model.encode(texts, convert_to_tensor=True, convert_to_sparse_tensor=False).float()
