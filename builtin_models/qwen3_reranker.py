"""Qwen3-Reranker: a ``Qwen3ForCausalLM`` scored through two rows of its ``lm_head`` ("yes" minus "no").

Served, as in vLLM, as ``Qwen3ForSequenceClassification`` (``poolkit.builtin_models.llama``) with
``hf_overrides={"architectures": ["Qwen3ForSequenceClassification"], "classifier_from_token": ["no",
"yes"], "is_original_qwen3_reranker": True}``: the score logit is ``(lm_head[yes] - lm_head[no]) . h_last``,
so ``sigmoid(score)`` is the model card's softmax over the ``no``/``yes`` logits.

Token ids come from ``config.classifier_from_token_ids``; :func:`resolve_classifier_from_token` fills
it from the tokenizer (the Engine calls it through ``prepare_config``, or pass the ids in
``hf_overrides``), so the model class needs only config and tensors. :func:`format_qwen3_reranker_pair`
builds the model card's prompt, which ``format_score_pair`` applies to score pairs.
"""

from __future__ import annotations

from typing import Any

import torch

from poolkit.model.weights import Weights

# --- the prompt (model card) ---------------------------------------------------------------------

QWEN3_RERANKER_PREFIX = (
    "<|im_start|>system\nJudge whether the Document meets the requirements based on the Query and the Instruct "
    'provided. Note that the answer can only be "yes" or "no".<|im_end|>\n<|im_start|>user\n'
)
QWEN3_RERANKER_SUFFIX = "<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
QWEN3_RERANKER_INSTRUCTION = "Given a web search query, retrieve relevant passages that answer the query"


def format_qwen3_reranker_pair(query: str, doc: str, instruction: str | None = None) -> str:
    """The Qwen3-Reranker prompt for one (query, document) pair, to be tokenized as one text.

    Encode it with ``add_special_tokens=False``: that gives the model card's ``prefix_tokens +
    tokenizer(body) + suffix_tokens`` (Qwen3-Reranker's tokenizer has no post-processor adding
    tokens, and the last token must stay the suffix's, where the yes/no logits are read).
    """
    body = f"<Instruct>: {instruction or QWEN3_RERANKER_INSTRUCTION}\n<Query>: {query}\n<Document>: {doc}"
    return QWEN3_RERANKER_PREFIX + body + QWEN3_RERANKER_SUFFIX


def reranker_pair(cfg: Any, query: str, doc: str) -> str | None:
    """The model card's prompt when ``cfg`` is an original Qwen3-Reranker's, else None (plain pair input)."""
    if not getattr(cfg, "is_original_qwen3_reranker", False):
        return None
    return format_qwen3_reranker_pair(query, doc, getattr(cfg, "reranker_instruction", None))


# --- the classifier from lm_head rows ------------------------------------------------------------


def classifier_tokens(cfg: Any) -> list[str] | None:
    """The tokens whose ``lm_head`` rows make the classifier (``classifier_from_token``), or None."""
    tokens = getattr(cfg, "classifier_from_token", None)
    if tokens is None and getattr(cfg, "is_original_qwen3_reranker", False):
        tokens = ["no", "yes"]
    return list(tokens) if tokens is not None else None


def resolve_classifier_from_token(hf_config: Any, tokenizer: Any) -> None:
    """Set ``hf_config.classifier_from_token_ids`` from ``classifier_from_token`` with the model's tokenizer.

    A no-op when the config names no tokens or already has the ids. Call it before building the model.
    """
    tokens = classifier_tokens(hf_config)
    if tokens is None or getattr(hf_config, "classifier_from_token_ids", None) is not None:
        return
    ids = [tokenizer.convert_tokens_to_ids(t) for t in tokens]
    unknown = [t for t, i in zip(tokens, ids) if i is None or i == tokenizer.unk_token_id]
    if unknown:
        raise ValueError(f"classifier_from_token {unknown} are not single tokens of the model's vocabulary")
    hf_config.classifier_from_token_ids = ids


def classifier_from_lm_head(cfg: Any, w: Weights, embed: torch.Tensor,
                            tokens: list[str]) -> tuple[torch.Tensor, dict[int, str]]:
    """``(weight (num_labels, C), id2label)`` from the ``lm_head`` rows of ``tokens``.

    Two tokens ``[false, true]`` give one logit ``(lm_head[true] - lm_head[false]) . h`` (vLLM's
    ``from_2_way_softmax``: a sigmoid of it is the softmax probability of ``true``); any other
    number gives one logit per token (``no_post_processing``). ``embed`` is the token table, read
    when ``lm_head`` is tied to it.
    """
    ids = getattr(cfg, "classifier_from_token_ids", None)
    if ids is None or len(ids) != len(tokens):
        raise ValueError(
            f"classifier_from_token={tokens} needs the token ids in config.classifier_from_token_ids "
            "(set by poolkit.builtin_models.qwen3_reranker.resolve_classifier_from_token, or in hf_overrides)")
    lm_head = w.take("lm_head.weight", None)
    if lm_head is None:
        if not getattr(cfg, "tie_word_embeddings", False):
            w.take("lm_head.weight")  # raises, naming the key
        lm_head = embed
    rows = lm_head[torch.tensor(ids, device=lm_head.device)].float()  # (len(ids), C)
    if len(rows) == 2 and getattr(cfg, "method", "from_2_way_softmax") == "from_2_way_softmax":
        return rows[1:] - rows[:1], {0: tokens[1]}  # (1, C): true minus false
    return rows, dict(enumerate(tokens))
