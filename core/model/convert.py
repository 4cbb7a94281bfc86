"""``runner`` / ``convert``: which pooling tasks an architecture is served for (vLLM's rules).

An architecture name says what its checkpoint was trained for. With ``convert="auto"`` a model
class is served for the tasks it declares, and a generative ``*ForCausalLM`` checkpoint is
converted to ``embed`` (LAST token + normalize). ``convert="embed"`` / ``"classify"`` ask for that
conversion explicitly; ``"none"`` refuses generative checkpoints.
"""

from __future__ import annotations

import re

EMBED_TASKS = ("embed", "token_embed")
CLASSIFY_TASKS = ("classify", "score", "token_classify")

# (pattern over the architecture name, converted task family), first match wins
SUFFIX_RULES: tuple[tuple[str, str], ...] = (
    (r".*For.*Classification$", "classify"),
    (r".*ClassificationModel$", "classify"),
    (r".*ForTextEncoding$", "embed"),
    (r".*EmbeddingModel$", "embed"),
    (r".*ForRewardModeling$", "embed"),
    (r".*RewardModel$", "embed"),
    (r".*Model$", "embed"),
)


def default_convert(architecture: str) -> str | None:
    """``"embed"``, ``"classify"`` or None (e.g. ``*ForCausalLM``) from the architecture's suffix."""
    for pattern, kind in SUFFIX_RULES:
        if re.fullmatch(pattern, architecture):
            return kind
    return None


def served_tasks(architecture: str, model_tasks: tuple[str, ...], convert: str, generative: bool) -> tuple[str, ...]:
    """The tasks an Engine serves for this architecture and ``convert`` choice, or a ValueError."""
    if convert not in ("auto", "none", "embed", "classify"):
        raise ValueError(f"convert={convert!r}; choose 'auto', 'none', 'embed' or 'classify'")
    if convert == "none" and generative:
        raise ValueError(f"{architecture} is a generative checkpoint; poolkit serves it only converted: "
                         f"pass convert='embed' or convert='classify' (or 'auto')")
    if convert == "auto":
        convert = "embed" if generative else "none"
    if convert == "none":
        return model_tasks
    family = EMBED_TASKS if convert == "embed" else CLASSIFY_TASKS
    tasks = tuple(t for t in model_tasks if t in family)
    if not tasks:
        hint = (" For a causal LM reranker, also set hf_overrides={'architectures': ['<Family>ForSequenceClassification'], "
                "'classifier_from_token': [...]}." if convert == "classify" else "")
        raise ValueError(f"{architecture} cannot be converted to {convert}: its model class supports {list(model_tasks)}.{hint}")
    return tasks
