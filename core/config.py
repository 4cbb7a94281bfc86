"""Everything read from a model directory before any weight is loaded.

Pooler configuration comes from three layers, later ones winning field by field:

1. the architecture's defaults (``default_pooling`` on the model class; ``normalize`` on for embed),
2. the Sentence Transformers files, when the directory has them (``modules.json`` with
   ``1_Pooling/config.json``, ``2_Dense``, ``Normalize``; ``sentence_bert_config.json``'s
   ``max_seq_length`` and ``do_lower_case``; ``config_sentence_transformers.json``'s ``prompts``
   and ``default_prompt_name``),
3. the user's ``pooler_config``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict


class PoolerConfig(BaseModel):
    """How a model pools (vLLM's ``--pooler-config``). Every field is optional; see the module doc.

    - ``pooling_type``: ``CLS``, ``MEAN``, ``MAX``, ``LAST``, ``ALL``, ``STEP`` or a plugin's name.
    - ``normalize``: L2-normalize embeddings by default.
    - ``dimensions``: default Matryoshka dimensions when a request names none.
    - ``include_prompt``: whether MEAN/MAX pooling counts the prompt's tokens (ST's flag).
    - ``use_activation``: default for classify/score/token_classify's softmax or sigmoid.
    - ``step_tag_id``: STEP pooling keeps only the tokens with this id (process reward models).
    - ``returned_token_ids``: token_classify keeps only these label columns (e.g. a PRM's
      [no, yes] token logits) before the activation.
    - ``activation``: a registered activation (``register_activations``: built-in ``softmax``,
      ``sigmoid``, ``identity``, ``normalize``, or a plugin's) that classify, score and
      token_classify apply instead of the default (softmax for >= 2 labels, sigmoid for 1).
    """

    model_config = ConfigDict(extra="forbid")

    pooling_type: str | None = None
    normalize: bool | None = None
    dimensions: int | None = None
    include_prompt: bool | None = None
    use_activation: bool | None = None
    step_tag_id: int | None = None
    returned_token_ids: list[int] | None = None
    activation: str | None = None

    def merged(self, other: PoolerConfig | dict[str, Any] | None) -> PoolerConfig:
        """This config with every field that ``other`` sets (not None) replaced."""
        if other is None:
            return self
        if isinstance(other, dict):
            other = PoolerConfig(**other)
        return self.model_copy(update={k: v for k, v in other.model_dump().items() if v is not None})


def _st_mode(key: str) -> str:
    """A Sentence Transformers pooling mode, normalized: the flag ``pooling_mode_mean_tokens`` and the
    ST >= 5 string ``mean`` are both ``mean``; ``mean_sqrt_len_tokens`` is ``mean_sqrt_len``."""
    mode = key.removeprefix("pooling_mode_")
    for suffix in ("_tokens", "_token"):
        mode = mode.removesuffix(suffix)
    return mode


def st_pooling_method(mode: str, where: Any = "the Pooling module") -> str:
    """The registered pooling method that declares Sentence Transformers ``mode`` in its own ``st_modes``
    (the built-ins: cls, mean, max, lasttoken; a plugin may add e.g. mean_sqrt_len)."""
    from poolkit.registry.loading import get_host

    poolers = get_host().registry("poolers")
    declared: dict[str, str] = {}
    for name in poolers.names():
        try:
            cls = poolers.load(name)
        except Exception:  # a broken plugin is reported by `poolkit plugins`; it serves no mode
            continue
        for m in vars(cls).get("st_modes", ()):  # declared by the class itself, not inherited
            declared.setdefault(m, name)
    if mode not in declared:
        raise ValueError(f"{where}: Sentence Transformers pooling mode {mode!r} has no registered pooling method "
                         f"(modes served: {sorted(declared)}). A plugin pooler serves it by declaring "
                         f"st_modes = ({mode!r},); see docs/plugins.md")
    return declared[mode]


@dataclass
class DenseLayer:
    """A Sentence Transformers ``Dense`` module: its directory and config."""

    path: Path
    in_features: int
    out_features: int
    bias: bool
    activation: str


@dataclass
class SentenceTransformersConfig:
    """What the Sentence Transformers files of a model directory say."""

    pooler: PoolerConfig = field(default_factory=PoolerConfig)
    dense: list[DenseLayer] = field(default_factory=list)
    max_seq_length: int | None = None
    do_lower_case: bool = False
    prompts: dict[str, str] = field(default_factory=dict)
    default_prompt_name: str | None = None
    model_type: str | None = None
    """``config_sentence_transformers.json``'s ``model_type``: ``SentenceTransformer``, or another library's
    model class saved in this format (PyLate's ``ColBERT``, ``SparseEncoder``); an architecture
    registered under that name serves the checkpoint (``poolkit.model.loading.resolve_architecture``)."""
    settings: dict[str, Any] = field(default_factory=dict)
    """The whole ``config_sentence_transformers.json`` (PyLate keeps its query/document settings there)."""

    @classmethod
    def read(cls, model_dir: Path) -> SentenceTransformersConfig | None:
        modules_file = model_dir / "modules.json"
        if not modules_file.is_file():
            return None
        st = cls()
        pooler: dict[str, Any] = {"normalize": False}  # ST normalizes only with a Normalize module
        for module in json.loads(modules_file.read_text()):
            kind = module["type"].rsplit(".", 1)[-1]
            path = model_dir / module.get("path", "")
            if kind == "Pooling":
                pooler.update(_read_st_pooling(path / "config.json"))
            elif kind == "Dense":
                dense = json.loads((path / "config.json").read_text())
                st.dense.append(DenseLayer(path, dense["in_features"], dense["out_features"], dense.get("bias", True),
                                           dense.get("activation_function", "torch.nn.modules.linear.Identity")))
            elif kind == "Normalize":
                pooler["normalize"] = True
            elif kind == "SpladePooling":  # a SparseEncoder: SPLADE vectors from the MLM logits, not normalized
                pooler.update(_read_splade_pooling(path / "config.json"))
            elif kind not in ("Transformer", "MLMTransformer"):  # MLMTransformer: older SparseEncoder saves
                raise ValueError(f"Sentence Transformers module {module['type']!r} in {modules_file} is not supported")
        st.pooler = PoolerConfig(**pooler)
        bert_cfg = model_dir / "sentence_bert_config.json"
        if bert_cfg.is_file():
            data = json.loads(bert_cfg.read_text())
            st.max_seq_length = data.get("max_seq_length")
            st.do_lower_case = bool(data.get("do_lower_case", False))
        tok_cfg = model_dir / "tokenizer_config.json"
        if st.max_seq_length is None and tok_cfg.is_file():
            # Sentence Transformers >= 5 keeps max_seq_length as the tokenizer's model_max_length
            limit = json.loads(tok_cfg.read_text()).get("model_max_length")
            st.max_seq_length = int(limit) if isinstance(limit, (int, float)) and limit < 1_000_000 else None
        st_cfg = model_dir / "config_sentence_transformers.json"
        if st_cfg.is_file():
            data = json.loads(st_cfg.read_text())
            st.prompts = data.get("prompts") or {}
            st.default_prompt_name = data.get("default_prompt_name")
            st.model_type = data.get("model_type")
            st.settings = data
        return st


def _read_st_pooling(path: Path) -> dict[str, Any]:
    cfg = json.loads(path.read_text())
    if "pooling_mode" in cfg:  # Sentence Transformers >= 5: one string (or a list) instead of flags
        mode = cfg["pooling_mode"]
        modes = [_st_mode(m) for m in ([mode] if isinstance(mode, str) else mode)]
    else:
        modes = [_st_mode(key) for key, on in cfg.items() if key.startswith("pooling_mode_") and on is True]
    if len(modes) != 1:
        raise ValueError(f"{path}: exactly one Sentence Transformers pooling mode must be set, found {modes}")
    out: dict[str, Any] = {"pooling_type": st_pooling_method(modes[0], path)}
    if "include_prompt" in cfg:
        out["include_prompt"] = bool(cfg["include_prompt"])
    return out


SPLADE_STRATEGIES = {"max": "SPLADE_MAX", "sum": "SPLADE_SUM"}
"""A ``SpladePooling`` module's ``pooling_strategy`` -> the pooling method serving it (``builtin_poolers/splade.py``)."""


def _read_splade_pooling(path: Path) -> dict[str, Any]:
    """A ``SpladePooling`` module's config: its ``pooling_strategy`` selects SPLADE_MAX or SPLADE_SUM."""
    cfg = json.loads(path.read_text()) if path.is_file() else {}
    strategy, act = cfg.get("pooling_strategy", "max"), cfg.get("activation_function", "relu")
    if strategy not in SPLADE_STRATEGIES:
        raise ValueError(f"{path}: SpladePooling pooling_strategy {strategy!r} is not supported; "
                         f"supported: {sorted(SPLADE_STRATEGIES)}")
    if act != "relu":
        raise ValueError(f"{path}: SpladePooling activation_function {act!r} is not supported; supported: ['relu']")
    return {"pooling_type": SPLADE_STRATEGIES[strategy], "normalize": False}


@dataclass
class ModelConfig:
    """A resolved model directory: its HF config (after ``hf_overrides``) and ST config."""

    name: str
    path: Path
    hf_config: Any
    st: SentenceTransformersConfig | None
    served_name: str = ""  # what messages call the model (``served_model_name``); ``name`` when empty
    hf_overrides: dict[str, Any] = field(default_factory=dict)  # what the user merged into config.json

    def __post_init__(self) -> None:
        self.served_name = self.served_name or str(self.name)

    @classmethod
    def load(cls, model: str, *, revision: str | None = None, hf_overrides: dict[str, Any] | None = None,
             trust_remote_code: bool = False) -> ModelConfig:
        from poolkit.model.hub import resolve_model_dir

        path = resolve_model_dir(model, revision=revision)
        raw = json.loads((path / "config.json").read_text())
        raw.update(hf_overrides or {})
        return cls(model, path, _hf_config(path, raw, trust_remote_code), SentenceTransformersConfig.read(path),
                   hf_overrides=dict(hf_overrides or {}))

    def load_tokenizer(self, trust_remote_code: bool = False) -> Any:
        """The checkpoint's tokenizer (``AutoTokenizer``). For a model type transformers does not know (a
        plugin's), it is handed this config: left to itself, transformers would read config.json again into a
        base config and log "You are using a model of type X to instantiate a model of type ..." on every load."""
        from transformers import AutoTokenizer, PretrainedConfig

        kwargs: dict[str, Any] = {"trust_remote_code": trust_remote_code}
        if type(self.hf_config) is PretrainedConfig:  # _hf_config's plain config: the type is unknown to transformers
            kwargs["config"] = self.hf_config
        return AutoTokenizer.from_pretrained(self.path, **kwargs)

    @property
    def architectures(self) -> list[str]:
        return list(getattr(self.hf_config, "architectures", None) or [])

    def matryoshka_dimensions(self) -> tuple[bool, list[int] | None]:
        """(supported, allowed dimensions or None for any) from ``is_matryoshka`` / ``matryoshka_dimensions``."""
        dims = getattr(self.hf_config, "matryoshka_dimensions", None)
        return bool(getattr(self.hf_config, "is_matryoshka", False) or dims), (list(dims) if dims else None)


def _hf_config(path: Path, raw: dict[str, Any], trust_remote_code: bool) -> Any:
    """A transformers config object (class defaults filled in); a plain one for unknown model types."""
    from transformers import AutoConfig, PretrainedConfig

    model_type = raw.get("model_type")
    try:
        config_cls = AutoConfig.for_model(model_type).__class__ if model_type else PretrainedConfig
    except ValueError:
        if trust_remote_code:
            return AutoConfig.from_pretrained(path, trust_remote_code=True, **raw)
        config_cls = PretrainedConfig  # a plugin's own model type: keep every field as given
    return config_cls.from_dict(raw)


def id2label(hf_config: Any, num_labels: int) -> dict[int, str]:
    """Class names for a head of ``num_labels`` outputs: config.json's ``id2label``, ``LABEL_i`` where it has none."""
    named = {int(k): str(v) for k, v in (getattr(hf_config, "id2label", None) or {}).items()}
    return {i: named.get(i, f"LABEL_{i}") for i in range(num_labels)}
