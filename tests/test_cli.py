"""The ``poolkit`` command: embed to JSONL and .npy, plugins listing and check, shared engine flags, help, errors."""

from __future__ import annotations

import importlib.util
import inspect
import io
import json
import os
import subprocess
import sys
import types

import numpy as np
import pytest
import torch

from poolkit import Engine, testing
from poolkit.cli import build_parser, main


def test_embed_texts_to_jsonl_on_stdout(tiny_bert_dir, capsys):
    assert main(["embed", "--model", str(tiny_bert_dir), "-q", "hello", "world"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    want = Engine(str(tiny_bert_dir)).embed(["hello", "world"])
    assert [r["index"] for r in rows] == [0, 1]
    for r, w in zip(rows, want):
        assert testing.max_abs_diff(torch.tensor(r["embedding"]), w.outputs.data) <= 1e-6


def test_embed_file_to_npy_with_progress_bar(tiny_bert_dir, tmp_path, capsys):
    texts = [f"line number {i} " + "word " * (i % 50) for i in range(300)]
    (tmp_path / "in.txt").write_text("\n".join(texts) + "\n")
    out = tmp_path / "out.npy"
    assert main(["embed", "--model", str(tiny_bert_dir), "--max-batch-tokens", "512", "-f", str(tmp_path / "in.txt"),
                 "-o", str(out), "--progress"]) == 0  # capsys' stderr is no terminal: --progress forces the bar
    err = capsys.readouterr().err
    assert "batch" in err and "wrote 300 embeddings of 32 dimensions" in err  # tqdm bar + summary on stderr
    vectors = np.load(out)
    want = torch.stack([o.outputs.data for o in Engine(str(tiny_bert_dir)).embed(texts)])
    assert vectors.shape == (300, 32) and testing.max_abs_diff(vectors, want) <= 1e-6


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_embed_errors_are_one_line(tiny_bert_dir, capsys, monkeypatch):
    assert main(["embed", "--model", str(tiny_bert_dir), "--dimensions", "8", "x"]) == 2
    assert "does not support matryoshka representation" in capsys.readouterr().err
    monkeypatch.setattr(sys, "stdin", _Terminal())  # a terminal's stdin is not read
    assert main(["embed", "--model", str(tiny_bert_dir)]) == 2
    assert capsys.readouterr().err.startswith("poolkit embed: error: nothing to embed")


def _embed_cli(*argv: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "poolkit.cli", "embed", *map(str, argv)], capture_output=True,
                          timeout=120, **kwargs)


def test_piped_stdin_is_the_input_a_text_per_line(tiny_bert_dir):
    texts = ["hello from a pipe", "second line", "ünïcödé third"]
    proc = _embed_cli("-m", tiny_bert_dir, input="".join(t + "\n" for t in texts).encode())  # echo ... | poolkit embed
    assert proc.returncode == 0, proc.stderr.decode()
    rows = [json.loads(line) for line in proc.stdout.decode().splitlines()]
    assert [r["index"] for r in rows] == [0, 1, 2]
    want = torch.stack([o.outputs.data for o in Engine(str(tiny_bert_dir)).embed(texts)])
    assert testing.max_abs_diff(torch.tensor([r["embedding"] for r in rows]), want) <= 1e-6
    assert "wrote 3 embeddings of 32 dimensions to stdout" in proc.stderr.decode()


def test_terminal_stdin_and_no_texts_is_the_one_line_error(tiny_bert_dir):
    import pty

    leader, follower = pty.openpty()
    try:
        proc = _embed_cli("-m", tiny_bert_dir, stdin=follower)
    finally:
        os.close(follower)
        os.close(leader)
    err = proc.stderr.decode()
    assert proc.returncode == 2 and err.startswith("poolkit embed: error: nothing to embed"), err
    assert err.count("\n") == 1, err


@pytest.mark.parametrize("case", ["parent is a file", "under a file", "no parent", "no grandparent", "a directory",
                                  "not writable"])
def test_unwritable_output_is_a_one_line_error_before_the_model_loads(tmp_path, capsys, monkeypatch, case):
    (tmp_path / "afile").write_text("x")
    (tmp_path / "locked").mkdir()
    output, reason = {
        "parent is a file": ("afile/out.npy", "{d}/afile is a file, not a directory"),
        "under a file": ("afile/sub/out.npy", "{d}/afile is a file, not a directory"),
        "no parent": ("new/out.npy", "directory {d}/new does not exist (pass --mkdir to create it)"),
        "no grandparent": ("new/sub/out.npy", "directory {d}/new/sub does not exist (pass --mkdir to create it)"),
        "a directory": ("locked", "it is a directory"),
        "not writable": ("locked/out.npy", "directory {d}/locked is not writable"),
    }[case]
    if case == "not writable":
        os.chmod(tmp_path / "locked", 0o500)
        real_access = os.access  # root may write anywhere: make the directory unwritable for root too
        monkeypatch.setattr(os, "access", lambda p, mode, *a, **k: False if str(p) == str(tmp_path / "locked")
                            else real_access(p, mode, *a, **k))
    out = tmp_path / output
    # no model at -m: an error about it would mean the model was loaded before the output was checked
    code = main(["embed", "-m", str(tmp_path / "no-model-here"), "some text", "-o", str(out)])
    err = capsys.readouterr().err
    os.chmod(tmp_path / "locked", 0o700)
    assert code == 2
    assert err == f"poolkit embed: error: cannot write {out}: {reason.format(d=tmp_path)}\n"  # one line, no traceback
    assert not (tmp_path / "new").exists() and not list((tmp_path / "locked").iterdir())


def test_mkdir_creates_the_output_directory(tiny_bert_dir, tmp_path, capsys):
    out = tmp_path / "new" / "sub" / "out.npy"
    assert main(["embed", "-m", str(tiny_bert_dir), "-q", "--mkdir", "one", "two", "-o", str(out)]) == 0
    want = torch.stack([o.outputs.data for o in Engine(str(tiny_bert_dir)).embed(["one", "two"])])
    assert testing.max_abs_diff(np.load(out), want) <= 1e-6
    (tmp_path / "afile").write_text("x")
    assert main(["embed", "-m", str(tiny_bert_dir), "x", "--mkdir", "-o", str(tmp_path / "afile" / "o.npy")]) == 2
    assert "afile is a file, not a directory" in capsys.readouterr().err  # --mkdir cannot help there


@pytest.mark.parametrize("arg", ["data/x.txt", "notes.csv", "corpus.JSONL", "./missing"])
def test_a_missing_path_like_argument_is_embedded_as_text_with_a_warning(tiny_bert_dir, capsys, arg):
    assert main(["embed", "-m", str(tiny_bert_dir), "-q", arg]) == 0
    captured = capsys.readouterr()
    assert captured.err == (f"poolkit embed: warning: {arg!r} is not a file; embedding it as text "
                            f"(use --literal to silence this)\n")
    (row,) = [json.loads(line) for line in captured.out.splitlines()]
    want = Engine(str(tiny_bert_dir)).embed(arg)[0].outputs.data
    assert testing.max_abs_diff(torch.tensor(row["embedding"]), want) <= 1e-6
    assert main(["embed", "-m", str(tiny_bert_dir), "-q", "--literal", arg]) == 0  # --literal: no warning
    assert capsys.readouterr().err == ""


def test_plain_texts_get_no_path_warning(tiny_bert_dir, capsys):
    assert main(["embed", "-m", str(tiny_bert_dir), "-q", "just a sentence."]) == 0
    assert main(["embed", "-m", str(tiny_bert_dir), "-q", "data/x.txt", "two texts: never a file"]) == 0
    assert capsys.readouterr().err == ""


def test_help_reads_well():
    out = subprocess.run([sys.executable, "-m", "poolkit.cli", "--help"], capture_output=True, text=True).stdout
    assert "embed" in out and "plugins" in out and "Examples" in out
    assert "Exit status, the same for every command:" in out  # one status per kind of failure, documented
    assert "1  the command ran and failed: a model that cannot be loaded" in out
    assert "2  the command line or its input is wrong" in out
    out = subprocess.run([sys.executable, "-m", "poolkit.cli", "embed", "--help"], capture_output=True, text=True).stdout
    assert "--output" in out and "--dimensions" in out
    assert "--mkdir" in out and "--progress" in out and "piped stdin" in out


def test_plugins_lists_builtins(capsys):
    assert main(["plugins"]) == 0
    rows = json.loads(capsys.readouterr().out)
    names = {r["name"]: r for r in rows}
    assert "BertModel" in names["builtin_models"]["registered"]["architectures"]
    assert names["builtin_models"]["builtin"] is True and names["builtin_models"]["version"]


# --- plugins --check ---------------------------------------------------------------------------------------

BROKEN = [
    {"plugin": "builtin_models", "distribution": "poolkit", "kind": "architectures", "name": "FooModel",
     "target": "poolkit.builtin_models.foo:FooModel",
     "problem": "ModuleNotFoundError: No module named 'poolkit.builtin_models.foo'"},
    {"plugin": "poolkit-dummy", "distribution": "poolkit-dummy", "kind": "poolers", "name": "MAX",
     "target": "dummy.poolers:MaxPool", "problem": "MaxPool is not a subclass of PoolingMethod\n(it is a function)"},
    {"plugin": "foo", "distribution": "poolkit-foo", "kind": None, "name": None, "target": "foo_pkg",
     "problem": "failed to load: ModuleNotFoundError: No module named 'sentencepiece'"},
]


def _fake_check(monkeypatch, problems: list[dict]) -> None:
    """``poolkit.registry.check.check_plugins`` returning ``problems``, whether or not the real module exists."""
    module = types.ModuleType("poolkit.registry.check")
    module.check_plugins = lambda: [dict(p) for p in problems]
    monkeypatch.setitem(sys.modules, "poolkit.registry.check", module)


def test_plugins_check_prints_the_broken_parts_and_exits_1(monkeypatch, capsys):
    _fake_check(monkeypatch, BROKEN)
    assert main(["plugins", "--check"]) == 1
    out, err = capsys.readouterr()
    assert json.loads(out) == BROKEN  # the problems as JSON on stdout
    lines = err.splitlines()
    assert len(lines) == 3, err  # one line per broken part on stderr, naming it
    assert lines[0].startswith("poolkit plugins: broken architectures 'FooModel' of plugin 'builtin_models'")
    assert "poolkit.builtin_models.foo:FooModel" in lines[0] and "No module named" in lines[0]
    assert "'MAX' of plugin 'poolkit-dummy'" in lines[1] and lines[1].endswith("PoolingMethod (it is a function)")
    assert lines[2] == ("poolkit plugins: broken plugin 'foo' (poolkit-foo, entry point 'foo_pkg'): "
                        "failed to load: ModuleNotFoundError: No module named 'sentencepiece'")


def test_plugins_check_all_well_prints_an_empty_list(monkeypatch, capsys):
    _fake_check(monkeypatch, [])
    assert main(["plugins", "--check"]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out) == [] and err == ""


def test_plugins_check_keeps_the_listing_filters(monkeypatch, capsys):
    _fake_check(monkeypatch, BROKEN)
    assert main(["plugins", "--check", "--hook", "register_architectures"]) == 1
    assert [p["name"] for p in json.loads(capsys.readouterr().out)] == ["FooModel"]  # poolkit-dummy is not loaded
    main(["plugins", "--check", "--third-party"])
    assert all(p["distribution"] != "poolkit" for p in json.loads(capsys.readouterr().out))


@pytest.mark.skipif(importlib.util.find_spec("poolkit.registry.check") is None,
                    reason="poolkit.registry.check (check_plugins) is not written yet")
def test_plugins_check_passes_on_the_builtins():
    proc = subprocess.run([sys.executable, "-m", "poolkit.cli", "plugins", "--check"], capture_output=True, text=True,
                          timeout=300, env={**os.environ, "POOLKIT_PLUGINS": "poolkit"})  # the built-ins only
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == []


# --- the engine flags embed and serve share -----------------------------------------------------------------

ENGINE_FLAGS = ["--dtype", "bf16", "--device", "cpu", "--kernels", "torch", "--quantization", "int8", "--max-model-len", "64",
                "--max-batch-tokens", "512", "--pooler-config", '{"pooling_type": "CLS"}',
                "--hf-overrides", '{"num_labels": 3}', "--trust-remote-code", "--revision", "v1", "--no-auto-truncate",
                "--runner", "pooling", "--convert", "embed", "--io-processor-plugin", "prithvi",
                "--allowed-media-domains", "a.example", "b.example", "--allowed-local-media-path", "/srv/images"]


def test_embed_and_serve_share_one_set_of_engine_flags():
    from poolkit.cli.parser import engine_kwargs

    embed = build_parser().parse_args(["embed", "a text", *ENGINE_FLAGS])
    serve = build_parser().parse_args(["serve", "a-model", *ENGINE_FLAGS])
    want = dict(runner="pooling", convert="embed", pooler_config={"pooling_type": "CLS"},
                hf_overrides={"num_labels": 3}, dtype="bfloat16", device="cpu", kernels="torch", quantization="int8",
                max_model_len=64,
                max_batch_tokens=512, trust_remote_code=True, revision="v1", auto_truncate=False,
                io_processor_plugin="prithvi", allowed_media_domains=["a.example", "b.example"],
                allowed_local_media_path="/srv/images")
    assert engine_kwargs(embed) == engine_kwargs(serve) == want
    defaults = engine_kwargs(build_parser().parse_args(["embed", "a text"]))
    assert defaults == engine_kwargs(build_parser().parse_args(["serve", "a-model"]))
    engine_defaults = inspect.signature(Engine.__init__).parameters
    assert {k: engine_defaults[k].default for k in defaults} == defaults  # no flag changes an Engine default


def test_embed_passes_the_engine_flags_to_the_engine(monkeypatch, capsys):
    import poolkit

    seen = {}

    def fake_engine(model, **kwargs):
        seen.update(kwargs, model=model)
        raise ValueError("not loading a model in this test")

    monkeypatch.setattr(poolkit, "Engine", fake_engine)
    assert main(["embed", "-m", "some/model", "x", "--hf-overrides", '{"num_labels": 3}', "--trust-remote-code",
                 "--revision", "v1"]) == 1  # a model that cannot load: EXIT_FAILURE, as serve
    assert capsys.readouterr().err == ("poolkit embed: error: cannot load model 'some/model': ValueError: not loading a "
                                       "model in this test\n")
    assert seen["model"] == "some/model" and seen["hf_overrides"] == {"num_labels": 3}
    assert seen["trust_remote_code"] is True and seen["revision"] == "v1"


# --- first contact (issue 21): what a new user meets first ---------------------------------------------------

def _cli(*argv, **kwargs) -> subprocess.CompletedProcess:
    """``poolkit ARGV`` as a user runs it; ``argv`` items may be bytes (a byte that is not UTF-8)."""
    return subprocess.run([sys.executable, "-m", "poolkit.cli", *argv], capture_output=True, text=True, timeout=300,
                          **kwargs)


def test_an_existing_output_or_the_input_is_refused_before_the_model_loads(tmp_path):
    src = tmp_path / "texts.txt"
    src.write_text("first\nsecond\n")
    out = tmp_path / "out.npy"
    out.write_bytes(b"keep me")
    (tmp_path / "link.txt").symlink_to(src)
    no_model = str(tmp_path / "no-model-here")  # an error about it would mean the model was loaded first
    for argv, message in [
        (["-f", src, "-o", out], f"{out} exists; pass --overwrite to replace it"),
        (["-f", src, "-o", src, "--overwrite"],
         f"cannot write {src}: it is the input file {src}; choose another output"),
        (["link.txt", "-o", "./texts.txt", "--overwrite"],  # through a link and a relative path: the same file
         "cannot write texts.txt: it is the input file link.txt; choose another output"),
    ]:
        proc = _cli("embed", "-m", no_model, *map(str, argv), cwd=tmp_path)
        assert (proc.returncode, proc.stderr) == (2, f"poolkit embed: error: {message}\n")
    assert out.read_bytes() == b"keep me" and src.read_text() == "first\nsecond\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link.txt", "out.npy", "texts.txt"]  # no .partial/


def test_overwrite_replaces_an_existing_output(tiny_bert_dir, tmp_path):
    out = tmp_path / "out.npy"
    out.write_bytes(b"old")
    assert main(["embed", "-m", str(tiny_bert_dir), "-q", "one", "two", "-o", str(out), "--overwrite"]) == 0
    want = torch.stack([o.outputs.data for o in Engine(str(tiny_bert_dir)).embed(["one", "two"])])
    assert testing.max_abs_diff(np.load(out), want) <= 1e-6


def test_text_that_is_not_unicode_is_an_error_naming_it(tiny_bert_dir, tmp_path, capsys):
    proc = _cli("embed", "-m", str(tmp_path / "no-model-here"), "fine", b"bad \xff byte")  # argv: not UTF-8
    assert (proc.returncode, proc.stderr) == (
        2, "poolkit embed: error: TEXT argument 2 is not valid UTF-8 (byte 0xff at character 4): give texts in UTF-8\n")
    src = tmp_path / "in.jsonl"
    src.write_text('{"text": "good"}\n{"text": "\\ud800 lone"}\n{"text": "also good"}\n')  # JSON's escape
    assert main(["embed", "-m", str(tiny_bert_dir), str(src), "-o", str(tmp_path / "o.jsonl"), "-q"]) == 2
    reason = "field 'text' is not valid Unicode (a lone surrogate '\\ud800' at character 0)"
    assert capsys.readouterr().err.startswith(f"poolkit embed: error: {src} line 2: {reason} (pass --on-error skip")
    assert main(["embed", "-m", str(tiny_bert_dir), str(src), "-o", str(tmp_path / "o.jsonl"), "-q",
                 "--on-error", "skip"]) == 0
    assert capsys.readouterr().err == f"poolkit: skipped {src} line 2: {reason}\n"
    assert [json.loads(r)["index"] for r in (tmp_path / "o.jsonl").read_text().splitlines()] == [0, 2]


@pytest.mark.parametrize("argv, message", [
    (["embed", "x", "--dimensions", "0"], "argument --dimensions: must be at least 1, got 0"),
    (["embed", "x", "--dimensions", "eight"], "argument --dimensions: expected an integer, got 'eight'"),
    (["embed", "x", "--chunk-size", "0"], "argument --chunk-size: must be at least 1, got 0"),
    (["embed", "x", "--truncate-prompt-tokens", "0"],
     "argument --truncate-prompt-tokens: must be -1 (truncate to the model's max_model_len) or at least 1, got 0"),
    (["embed", "x", "--truncate-prompt-tokens", "-2"],
     "argument --truncate-prompt-tokens: must be at least -1, got -2"),
    (["embed", "x", "--max-model-len", "0"], "argument --max-model-len: must be at least 1, got 0"),
    (["serve", "m", "--max-batch-tokens", "-5"], "argument --max-batch-tokens: must be at least 1, got -5"),
    (["embed", "x", "--max-batch-token", "100"], "unrecognized arguments: --max-batch-token"),  # no abbreviations
    (["serve", "m", "--max-batch-token", "100"], "unrecognized arguments: --max-batch-token"),
    (["plugins", "--third"], "unrecognized arguments: --third"),
    (["models", "--foo"], "unrecognized arguments: --foo"),
])
def test_bad_flags_are_usage_errors_of_their_subcommand(argv, message, capsys):
    with pytest.raises(SystemExit) as exited:
        main(argv)
    err = capsys.readouterr().err
    assert exited.value.code == 2
    assert err.startswith(f"usage: poolkit {argv[0]} ") and err.endswith(f"poolkit {argv[0]}: error: {message}\n"), err


def test_a_mistyped_flag_a_bad_json_flag_and_a_directory_input(tmp_path):
    proc = _cli("serve", "--prot", "1", "MODEL")
    assert proc.returncode == 2 and proc.stderr.startswith("usage: poolkit serve ")
    assert proc.stderr.endswith("poolkit serve: error: unrecognized arguments: --prot\n")
    proc = _cli("serve", "MODEL", "--pooler-config", "{")  # as embed: exit status 2, one line naming the flag
    assert (proc.returncode, proc.stderr) == (2, "poolkit serve: error: --pooler-config: invalid JSON '{' (Expecting "
                                                 "property name enclosed in double quotes: line 1 column 2 (char 1))\n")
    proc = _cli("embed", "-m", str(tmp_path / "no-model-here"), "-f", str(tmp_path))
    assert (proc.returncode, proc.stderr) == (2, f"poolkit embed: error: {tmp_path} is a directory, not an input file "
                                                 f"(give a txt, JSONL, CSV/TSV or Parquet file)\n")


def test_a_model_that_cannot_load_exits_1_with_one_line(tmp_path, capsys):
    assert main(["embed", "-m", str(tmp_path / "no-model-here"), "hello"]) == 1  # as serve does
    err = capsys.readouterr().err
    assert err.startswith(f"poolkit embed: error: cannot load model '{tmp_path / 'no-model-here'}': ")
    assert err.count("\n") == 1


def test_pooler_config_errors_name_the_key_and_the_valid_ones(capsys):
    assert main(["embed", "x", "--pooler-config", '{"pooling_typ": "MEAN"}']) == 2
    assert capsys.readouterr().err == (
        "poolkit embed: error: --pooler-config: unknown key 'pooling_typ'; valid keys: pooling_type, normalize, "
        "dimensions, include_prompt, use_activation, step_tag_id, returned_token_ids, activation\n")
    assert main(["embed", "x", "--pooler-config", '{"pooling_type": ["MEAN"]}']) == 2
    assert capsys.readouterr().err == ("poolkit embed: error: --pooler-config key 'pooling_type': Input should be a "
                                       "valid string (got ['MEAN'])\n")
    assert main(["embed", "x", "--pooler-config", '{"pooling_type": "MEAN"']) == 2  # was exit status 1
    assert capsys.readouterr().err.startswith("poolkit embed: error: --pooler-config: invalid JSON '{\"pooling_type\"")


def test_a_validation_error_reaching_main_is_one_line_per_field(monkeypatch, capsys):
    from pydantic import BaseModel, Field, StrictBool

    from poolkit.cli import embed

    class Options(BaseModel):  # pydantic's own messages: the test is about how main renders them
        dimensions: int = Field(gt=0)
        verbose: StrictBool = False

    def run(args):
        Options(dimensions=0, verbose="maybe")

    monkeypatch.setattr(embed, "run", run)
    assert main(["embed", "x"]) == 2
    err = capsys.readouterr().err
    assert "pydantic" not in err and "validation error" not in err
    assert err.splitlines() == ["poolkit embed: error: --dimensions: Input should be greater than 0 (got 0)",
                                "poolkit embed: error: verbose: Input should be a valid boolean (got 'maybe')"]
