"""``poolkit embed INPUT -o OUTPUT`` as a batch job: formats, tasks, malformed rows, resume after SIGKILL, flat memory.

Every result is compared to the offline :class:`poolkit.Engine` on the same texts (the job must
not change a vector), and a resumed job's output to an uninterrupted run's, byte for byte.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from poolkit import Engine, testing
from poolkit.cli import main
from poolkit.jobs import JobMismatchError, embed_file, partial_dir

TEXTS = ["hello world", "Pooling models turn text into vectors", 'a "quoted", comma text', "ünïcödé façade",
         "tab\tinside", "x", "the quick brown fox " * 6, "line\u2028separator"]
TEXTS += [f"text number {i}" for i in range(22)]


@pytest.fixture(scope="module")
def engine(tiny_bert_dir):
    return Engine(str(tiny_bert_dir))


@pytest.fixture(scope="module")
def want(engine):
    return np.stack([o.outputs.data.numpy() for o in engine.embed(TEXTS)])


def write_input(path: Path, texts: list[str], fmt: str) -> Path:
    if fmt == "txt":
        path.write_text("".join(t + "\n" for t in texts), encoding="utf-8")
    elif fmt == "jsonl":
        path.write_text("".join(json.dumps({"id": f"doc-{i}", "text": t}) + "\n" for i, t in enumerate(texts)))
    elif fmt in ("csv", "tsv"):
        with open(path, "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f, delimiter="\t" if fmt == "tsv" else ",")
            w.writerow(["id", "text"])
            w.writerows([f"doc-{i}", t] for i, t in enumerate(texts))
    else:
        pq.write_table(pa.table({"id": [f"doc-{i}" for i in range(len(texts))], "text": texts}), path, row_group_size=9)
    return path


def run(*argv: str) -> int:
    return main(["embed", *map(str, argv)])


@pytest.mark.parametrize("fmt", ["txt", "jsonl", "csv", "tsv", "parquet"])
def test_every_input_format_to_parquet_in_row_groups(tiny_bert_dir, tmp_path, want, fmt):
    src = write_input(tmp_path / f"in.{fmt}", TEXTS, fmt)
    out = tmp_path / "out.parquet"
    assert run("-m", tiny_bert_dir, src, "-o", out, "--chunk-size", 7, "-q") == 0
    table = pq.read_table(out)
    assert table.column_names == ["id", "embedding"]
    assert table["id"].to_pylist() == list(range(len(TEXTS)))  # the 0-based row number
    assert str(table.schema.field("embedding").type) == "fixed_size_list<element: float>[32]"
    assert testing.max_abs_diff(np.stack(table["embedding"].to_numpy(zero_copy_only=False)), want) <= 1e-6
    assert pq.ParquetFile(out).num_row_groups == 5  # 30 texts in chunks of 7, one row group each
    assert not partial_dir(out).exists()


def test_id_field_is_copied(tiny_bert_dir, tmp_path, want):
    for fmt in ("jsonl", "csv", "parquet"):
        src = write_input(tmp_path / f"in.{fmt}", TEXTS, fmt)
        assert run("-m", tiny_bert_dir, src, "-o", tmp_path / f"{fmt}.parquet", "--id-field", "id", "-q") == 0
        table = pq.read_table(tmp_path / f"{fmt}.parquet")
        assert table["id"].to_pylist() == [f"doc-{i}" for i in range(len(TEXTS))]
    src = write_input(tmp_path / "in.jsonl", TEXTS, "jsonl")
    assert run("-m", tiny_bert_dir, src, "-o", tmp_path / "ids.jsonl", "--id-field", "id", "-q") == 0
    first = json.loads((tmp_path / "ids.jsonl").read_text().splitlines()[0])
    assert first["index"] == 0 and first["id"] == "doc-0"


@pytest.mark.parametrize("ext", ["npy", "jsonl"])
def test_npy_and_jsonl_outputs(tiny_bert_dir, tmp_path, want, ext):
    src = write_input(tmp_path / "in.txt", TEXTS, "txt")
    out = tmp_path / f"out.{ext}"
    assert run("-m", tiny_bert_dir, src, "-o", out, "--chunk-size", 4, "-q") == 0
    if ext == "npy":
        got = np.load(out)
        assert got.dtype == np.float32 and got.shape == want.shape
        assert testing.max_abs_diff(np.array(np.load(out, mmap_mode="r")), want) <= 1e-6
    else:
        rows = [json.loads(line) for line in out.read_text().splitlines()]
        assert [r["index"] for r in rows] == list(range(len(TEXTS)))
        assert testing.max_abs_diff(np.array([r["embedding"] for r in rows]), want) <= 1e-6


def test_other_tasks_and_options(tmp_path, tiny_bert_dir, engine):
    texts = TEXTS[:10]
    src = write_input(tmp_path / "in.txt", texts, "txt")
    # token_embed: a (tokens, dim) matrix per text
    assert run("-m", tiny_bert_dir, src, "-o", tmp_path / "tok.parquet", "--task", "token_embed", "-q") == 0
    table = pq.read_table(tmp_path / "tok.parquet")
    for got, ref in zip(table["token_embeddings"].to_pylist(), engine.encode(texts, "token_embed")):
        assert testing.max_abs_diff(torch.tensor(got), ref.outputs.data) <= 1e-6
    # --pooler-config: CLS pooling, unnormalized, must differ from the default MEAN
    assert run("-m", tiny_bert_dir, src, "-o", tmp_path / "cls.npy", "--pooler-config", '{"pooling_type": "CLS"}',
               "--no-normalize", "-q") == 0
    from poolkit import PoolingParams

    cls = Engine(str(tiny_bert_dir), pooler_config={"pooling_type": "CLS"}).embed(texts, PoolingParams(normalize=False))
    assert testing.max_abs_diff(np.load(tmp_path / "cls.npy"), torch.stack([o.outputs.data for o in cls])) <= 1e-6
    assert testing.max_abs_diff(np.load(tmp_path / "cls.npy")[:, :4],
                                torch.stack([o.outputs.data for o in engine.embed(texts)])[:, :4]) > 1e-3
    # classify on a sequence-classification head: probabilities
    clf_dir = testing.build_tiny_bert(tmp_path / "clf", head="sequence", num_labels=3)
    assert run("-m", clf_dir, src, "-o", tmp_path / "probs.jsonl", "--task", "classify", "-q") == 0
    rows = [json.loads(line) for line in (tmp_path / "probs.jsonl").read_text().splitlines()]
    ref = Engine(str(clf_dir)).classify(texts)
    probs = torch.tensor([r["probs"] for r in rows])
    assert testing.max_abs_diff(probs, torch.stack([o.outputs.data for o in ref])) <= 1e-6
    # a matrix per text cannot go into .npy
    assert run("-m", tiny_bert_dir, src, "-o", tmp_path / "tok.npy", "--task", "token_embed", "-q") == 2


def test_malformed_rows_stop_the_job_with_their_line_number(tiny_bert_dir, tmp_path, capsys):
    src = tmp_path / "in.jsonl"
    src.write_text('{"text": "fine"}\n{"text": "also fine"}\n{not json}\n{"text": "after"}\n')
    out = tmp_path / "out.parquet"
    assert run("-m", tiny_bert_dir, src, "-o", out, "-q") == 2
    err = capsys.readouterr().err
    assert "in.jsonl line 3: invalid JSON" in err and "--on-error skip" in err
    assert not out.exists()


def test_malformed_rows_skipped_are_reported_and_counted(tiny_bert_dir, tmp_path, capsys, engine):
    lines = ['{"text": "first"}', "{broken", '{"body": "no text field"}', "", '{"text": ""}', '{"text": 7}',
             '[1, 2]', '"a bare JSON string is a text"', '{"text": "last"}']
    src = tmp_path / "in.jsonl"
    src.write_text("\n".join(lines) + "\n")
    out = tmp_path / "out.parquet"
    assert run("-m", tiny_bert_dir, src, "-o", out, "--on-error", "skip", "--chunk-size", 3) == 0
    err = capsys.readouterr().err
    for line, reason in [(2, "invalid JSON"), (3, "no field 'text'"), (4, "empty line"), (5, "field 'text' is empty"),
                         (6, "field 'text' is a number, not a string"), (7, "expected a JSON object")]:
        assert f"skipped {src} line {line}: {reason}" in err
    assert "wrote 3 embeddings of 32 dimensions" in err and "skipped 6 malformed rows" in err
    table = pq.read_table(out)
    assert table["id"].to_pylist() == [0, 7, 8]  # ids keep the input's row numbers
    ref = engine.embed(["first", "a bare JSON string is a text", "last"])
    assert testing.max_abs_diff(np.stack(table["embedding"].to_numpy(zero_copy_only=False)),
                                torch.stack([o.outputs.data for o in ref])) <= 1e-6


def test_malformed_csv_and_txt_rows(tiny_bert_dir, tmp_path, capsys):
    src = tmp_path / "in.csv"
    src.write_bytes(b'\xef\xbb\xbfid,text\n1,good\n2\n3,\n\n4,"multi\nline text"\n5,x,extra\n6,bad \xff byte\n7,end\n')
    assert run("-m", tiny_bert_dir, src, "-o", tmp_path / "out.parquet", "--on-error", "skip", "-q",
               "--id-column", "id") == 0
    err = capsys.readouterr().err
    for line, reason in [(3, "row has 1 fields; the header has 2"), (4, "column 'text' is empty"), (5, "empty row"),
                         (8, "row has 3 fields"), (9, "not valid UTF-8")]:
        assert f"line {line}: {reason}" in err, err
    assert pq.read_table(tmp_path / "out.parquet")["id"].to_pylist() == ["1", "4", "7"]
    txt = tmp_path / "in.txt"
    txt.write_text("one\n\n   \nfour\n")
    assert run("-m", tiny_bert_dir, txt, "-o", tmp_path / "t.jsonl", "--on-error", "skip", "-q") == 0
    assert "line 2: empty line" in capsys.readouterr().err
    assert [json.loads(r)["index"] for r in (tmp_path / "t.jsonl").read_text().splitlines()] == [0, 3]


def test_too_long_text_is_a_row_error_unless_truncated(tiny_bert_dir, tmp_path, capsys):
    src = tmp_path / "in.txt"
    src.write_text("short one\n" + "word " * 100 + "\nshort two\n")
    model = (tiny_bert_dir, "--max-model-len", 32)
    assert run("-m", *model, src, "-o", tmp_path / "a.npy", "-q") == 2
    assert "in.txt line 2: the text has 102 tokens, more than the model's maximum of 32" in capsys.readouterr().err
    assert run("-m", *model, src, "-o", tmp_path / "b.npy", "-q", "--on-error", "skip") == 0
    assert np.load(tmp_path / "b.npy").shape == (2, 32)
    assert run("-m", *model, src, "-o", tmp_path / "c.npy", "-q", "--truncate-prompt-tokens", "-1") == 0
    assert np.load(tmp_path / "c.npy").shape == (3, 32)


def test_progress_bar_rate_eta_and_quiet(tiny_bert_dir, tmp_path, capsys):
    src = write_input(tmp_path / "in.txt", TEXTS, "txt")
    assert run("-m", tiny_bert_dir, src, "-o", tmp_path / "o.parquet", "--chunk-size", 10, "--progress") == 0
    err = capsys.readouterr().err
    assert "30/30" in err and "texts/s" in err and "<00:00" in err and "batches=" in err  # counted total, rate, ETA
    assert "wrote 30 embeddings of 32 dimensions to" in err
    assert run("-m", tiny_bert_dir, src, "-o", tmp_path / "q.parquet", "--quiet", "--progress") == 0
    assert capsys.readouterr().err == ""  # --quiet beats --progress


def test_no_progress_bar_when_stderr_is_not_a_terminal(tiny_bert_dir, tmp_path, capsys):
    src = write_input(tmp_path / "in.txt", TEXTS, "txt")
    assert run("-m", tiny_bert_dir, src, "-o", tmp_path / "o.parquet") == 0  # capsys' stderr is no terminal
    err = capsys.readouterr().err
    assert err == f"poolkit: wrote 30 embeddings of 32 dimensions to {tmp_path / 'o.parquet'}\n"  # the summary only


def test_progress_bar_advances_per_forward_pass(tiny_bert_dir, tmp_path, capsys, monkeypatch, engine):
    """Not per chunk: with 16 texts a chunk and a few texts a forward pass, the bar shows counts between chunks."""
    from poolkit.batch import make_batches

    texts = TEXTS[:6] + [f"text number {i}" for i in range(34)]
    src = write_input(tmp_path / "in.txt", texts, "txt")
    monkeypatch.setenv("TQDM_MININTERVAL", "0")  # redraw at every update, however fast the tiny model is
    out = tmp_path / "o.npy"
    assert run("-m", tiny_bert_dir, src, "-o", out, "--chunk-size", 16, "--max-batch-tokens", 48, "--progress") == 0
    err = capsys.readouterr().err
    counts = [int(c) for c in re.findall(r"\b(\d+)/40\b", err)]
    assert counts[0] == 0 and counts[-1] == 40 and counts == sorted(counts), err
    between = sorted({c for c in counts if c % 16 and c != 40})
    passes = sum(len(make_batches([len(t.ids) for t in engine.prepare(texts[i:i + 16], "embed").tokens], 48))
                 for i in range(0, 40, 16))
    assert passes > 3 and len(set(counts) - {0}) == passes and between, (passes, counts)  # one step per pass
    assert f"batches={passes}" in err and "wrote 40 embeddings of 32 dimensions" in err
    want = np.stack([o.outputs.data.numpy() for o in engine.embed(texts)])
    assert testing.max_abs_diff(np.load(out), want) <= 1e-6  # batched longest first, written in input order


def test_library_jobs_log_instead_of_printing(engine, tmp_path, capsys, caplog):
    src = tmp_path / "in.txt"
    src.write_text("one\n\nthree\n")
    with caplog.at_level(logging.INFO, logger="poolkit.jobs"):
        result = embed_file(engine, str(src), str(tmp_path / "o.npy"), on_error="skip", progress=False)
    assert (result.rows, result.skipped) == (2, 1)
    assert [(r.name, r.levelno, r.getMessage()) for r in caplog.records] == [
        ("poolkit.jobs", logging.WARNING, f"poolkit: skipped {src} line 2: empty line")]
    assert capsys.readouterr().err == ""


def test_input_file_or_literal_texts(tiny_bert_dir, tmp_path, capsys, engine):
    src = write_input(tmp_path / "in.txt", ["from the file", "second line"], "txt")
    assert run("-m", tiny_bert_dir, src, "-q") == 0  # one argument naming a file: the input, JSONL on stdout
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(rows) == 2 and testing.max_abs_diff(torch.tensor(rows[0]["embedding"]),
                                                    engine.embed("from the file")[0].outputs.data) <= 1e-6
    assert run("-m", tiny_bert_dir, src, "--literal", "-q") == 0  # the path itself, as a text
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(rows) == 1 and testing.max_abs_diff(torch.tensor(rows[0]["embedding"]),
                                                    engine.embed(str(src))[0].outputs.data) <= 1e-6
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    assert run("-m", tiny_bert_dir, "-f", empty, "-o", tmp_path / "e.npy", "-q") == 1  # the job embedded nothing
    assert "nothing to embed" in capsys.readouterr().err and not partial_dir(tmp_path / "e.npy").exists()


def test_stdin_input(tiny_bert_dir, engine):
    proc = subprocess.run([sys.executable, "-m", "poolkit.cli", "embed", "-m", str(tiny_bert_dir), "-f", "-", "-q",
                           "--input-format", "jsonl"], input='{"text": "from stdin"}\n', capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    row = json.loads(proc.stdout)
    assert testing.max_abs_diff(torch.tensor(row["embedding"]), engine.embed("from stdin")[0].outputs.data) <= 1e-6


def test_python_api(engine, tmp_path, want):
    src = write_input(tmp_path / "in.parquet", TEXTS, "parquet")
    result = embed_file(engine, str(src), str(tmp_path / "o.npy"), chunk_size=8, progress=False)
    assert (result.rows, result.skipped, result.dim) == (len(TEXTS), 0, 32)
    assert testing.max_abs_diff(np.load(tmp_path / "o.npy"), want) <= 1e-6


def test_the_job_runs_its_forward_passes_through_engine_pool(engine, tmp_path, monkeypatch, want):
    """One Engine.pool call per chunk, with on_batch (the progress bar), and nothing else runs a batch."""
    calls, real_pool, real_batch = [], engine.pool, engine.run_batch
    in_pool = []

    def pool(requests, **kwargs):
        calls.append((sum(len(r.tokens) for r in requests), kwargs.get("on_batch") is not None))
        in_pool.append(True)
        try:
            return real_pool(requests, **kwargs)
        finally:
            in_pool.pop()

    def run_batch(*args, **kwargs):
        assert in_pool, "a forward pass outside Engine.pool"
        return real_batch(*args, **kwargs)

    monkeypatch.setattr(engine, "pool", pool)
    monkeypatch.setattr(engine, "run_batch", run_batch)
    src = write_input(tmp_path / "in.txt", TEXTS, "txt")
    result = embed_file(engine, str(src), str(tmp_path / "o.npy"), chunk_size=8, progress=False)
    assert calls == [(8, True), (8, True), (8, True), (6, True)] and result.rows == len(TEXTS)
    assert testing.max_abs_diff(np.load(tmp_path / "o.npy"), want) <= 1e-6


@pytest.mark.parametrize("fmt", ["txt", "jsonl", "csv", "tsv", "parquet"])
def test_readers_continue_from_any_cursor(tmp_path, fmt):
    """What resuming relies on: the rows after a saved cursor are exactly the rest of the input."""
    from poolkit.jobs import open_reader

    texts = TEXTS + ["multi\nline"] if fmt in ("csv", "tsv", "parquet") else TEXTS
    reader = open_reader(str(write_input(tmp_path / f"in.{fmt}", texts, fmt)), id_field=None)
    everything = list(reader.rows(None))
    assert [r.text for r, _ in everything] == texts and reader.count() == len(texts)
    for k in (0, 8, 13, len(texts) - 1):  # 13: inside the Parquet input's second row group
        rest = [(r.index, r.text) for r, _ in reader.rows(everything[k][1])]
        assert rest == [(r.index, r.text) for r, _ in everything[k + 1:]]


# --- resume ----------------------------------------------------------------------------------------------

N_RESUME = 3_000


def _cmd(model: Path, src: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "poolkit.cli", "embed", "-m", str(model), str(src), "-o", str(out),
            "--chunk-size", "200", *extra]


def _kill_after_first_commit(cmd: list[str], out: Path) -> dict:
    """Start the job, SIGKILL it as soon as its manifest records written rows; the manifest then."""
    manifest = partial_dir(out) / "manifest.json"
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if manifest.is_file() and json.loads(manifest.read_text())["rows"] > 0:
                break
            time.sleep(0.005)
        assert proc.poll() is None, "the job ended before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    return json.loads(manifest.read_text())


@pytest.mark.parametrize("ext", ["parquet", "jsonl", "npy"])
def test_killed_job_resumes_to_the_uninterrupted_output(tiny_bert_dir, tmp_path, ext):
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps({"text": f"resumable text {i} " + "w " * (i % 9)}) + "\n"
                           for i in range(N_RESUME)))
    ref = tmp_path / f"ref.{ext}"
    assert run("-m", tiny_bert_dir, src, "-o", ref, "--chunk-size", 200, "-q") == 0  # uninterrupted

    out = tmp_path / f"out.{ext}"
    state = _kill_after_first_commit(_cmd(tiny_bert_dir, src, out), out)
    assert 0 < state["rows"] < N_RESUME and not out.exists()
    data = partial_dir(out)
    if ext == "parquet":  # a part written but not committed, and a torn temporary file
        (data / f"part-{state['parts']:06d}.parquet").write_bytes(b"PAR1 torn")
        (data / f"part-{state['parts'] + 1:06d}.tmp").write_bytes(b"junk")
    else:  # a torn tail past the last commit
        with open(data / f"data.{ext}", "ab") as f:
            f.write(b'{"index": 99999, "embedd')
    proc = subprocess.run(_cmd(tiny_bert_dir, src, out), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert f"resuming {out}: {state['rows']} rows were written" in proc.stderr
    assert f"({state['rows']} of them by an earlier, interrupted run)" in proc.stderr
    assert not partial_dir(out).exists()
    if ext == "parquet":
        got, expected = pq.read_table(out), pq.read_table(ref)
        assert got.equals(expected) and got["id"].to_pylist() == list(range(N_RESUME))
        assert pq.ParquetFile(out).num_row_groups == pq.ParquetFile(ref).num_row_groups == N_RESUME // 200
    else:
        assert out.read_bytes() == ref.read_bytes()


def test_resume_refuses_another_job_and_restart_starts_over(tiny_bert_dir, tmp_path, capsys):
    src = write_input(tmp_path / "in.txt", TEXTS, "txt")
    out = tmp_path / "out.parquet"
    stale = partial_dir(out)
    stale.mkdir()
    (stale / "manifest.json").write_text(json.dumps({"version": 1, "job": {"input": "/elsewhere.txt"}, "rows": 5}))
    assert run("-m", tiny_bert_dir, src, "-o", out, "-q") == 2
    err = capsys.readouterr().err
    assert "holds an unfinished job that differs from this one in" in err and "input" in err and "--restart" in err
    assert run("-m", tiny_bert_dir, src, "-o", out, "-q", "--restart") == 0
    assert pq.read_table(out).num_rows == len(TEXTS) and not stale.exists()


def test_resume_with_a_changed_option_names_the_flag(tiny_bert_dir, tmp_path, capsys, engine):
    src = tmp_path / "in.jsonl"
    src.write_text('{"text": "a"}\n{"text": "b"}\n{"text": "c"}\n{broken\n')
    out = tmp_path / "out.parquet"
    job = ("-m", tiny_bert_dir, src, "-o", out, "--chunk-size", 2, "-q")
    assert run(*job, "--truncate-prompt-tokens", 16) == 2  # stopped at line 4, after a chunk was committed
    assert f"kept in {partial_dir(out)}" in capsys.readouterr().err and partial_dir(out).is_dir()
    assert run(*job, "--truncate-prompt-tokens", 8, "--no-normalize") == 2
    assert capsys.readouterr().err == (
        f"poolkit embed: error: {partial_dir(out)} holds an unfinished job that differs from this one in "
        f"--no-normalize (before: not given, now: given); --truncate-prompt-tokens (before: 16, now: 8): run the "
        f"same command as before to resume it, or pass --restart to discard it and start over\n")
    with pytest.raises(JobMismatchError, match=r"in params\.truncate_prompt_tokens: .* pass restart=True") as info:
        embed_file(engine, str(src), str(out), chunk_size=2, truncate_prompt_tokens=8, progress=False)
    assert info.value.changes == [("params.truncate_prompt_tokens", 16, 8)]  # Python's words, for Python callers
    assert partial_dir(out).is_dir()  # a resumable run is never removed


def test_a_resume_whose_data_is_gone_is_refused_not_padded(tiny_bert_dir, tmp_path, capsys):
    src = tmp_path / "in.jsonl"
    src.write_text('{"text": "a"}\n{"text": "b"}\n{"text": "c"}\n{broken\n')
    out = tmp_path / "out.jsonl"
    job = ("-m", tiny_bert_dir, src, "-o", out, "--chunk-size", 2, "-q")
    assert run(*job) == 2  # stopped at line 4, the first chunk committed
    (partial_dir(out) / "data.jsonl").unlink()  # as if moved to OUTPUT by a run killed before it cleaned up
    capsys.readouterr()
    assert run(*job, "--on-error", "skip") == 2
    assert "data.jsonl holds 0 bytes, fewer than the" in capsys.readouterr().err
    assert not out.exists() and partial_dir(out).is_dir()  # no output of zero bytes; the run is left as it was


def test_a_failed_start_leaves_no_partial_directory(tiny_bert_dir, tmp_path, capsys):
    src = tmp_path / "in.jsonl"
    src.write_text('{broken\n{"text": "fine"}\n')
    out = tmp_path / "out.npy"
    assert run("-m", tiny_bert_dir, src, "-o", out, "-q") == 2
    err = capsys.readouterr().err
    assert f"{src} line 1: invalid JSON" in err and "kept in" not in err  # nothing was kept: it says none
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.jsonl"]


def test_a_job_that_embeds_nothing_fails(tiny_bert_dir, tmp_path):
    src = tmp_path / "docs.jsonl"
    src.write_text("".join(json.dumps({"id": i, "body": f"text {i}"}) + "\n" for i in range(76)))
    out = tmp_path / "out.parquet"
    proc = subprocess.run(_cmd(tiny_bert_dir, src, out, "--on-error", "skip", "-q"), capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.splitlines()[-1] == (
        "poolkit embed: error: 0 of 76 rows embedded: every row was skipped: no field 'text' (fields: id, body) "
        "(76 rows); pass --text-field with the field that holds the text (now 'text')")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["docs.jsonl"]  # no output, no .partial/


@pytest.mark.parametrize("name, content", [
    ("a.txt", "first\nsecond\n\n"), ("b.txt", "first\nsecond\n\n  \r\n\n"),
    ("c.jsonl", '{"text": "first"}\n{"text": "second"}\n\n\n'), ("d.csv", "text\nfirst\nsecond\n\n\n"),
])
def test_blank_lines_at_the_end_are_no_rows(tiny_bert_dir, tmp_path, engine, capsys, name, content):
    src = tmp_path / name
    src.write_bytes(content.encode())
    out = tmp_path / "out.npy"
    assert run("-m", tiny_bert_dir, src, "-o", out, "--progress") == 0
    err = capsys.readouterr().err
    assert "2/2" in err and f"wrote 2 embeddings of 32 dimensions to {out}" in err  # the bar's total too
    want = torch.stack([o.outputs.data for o in engine.embed(["first", "second"])])
    assert testing.max_abs_diff(np.load(out), want) <= 1e-6


def test_classify_output_carries_the_label_names(tmp_path, capsys):
    names = ["negative", "neutral", "positive"]
    clf = testing.build_tiny_bert(tmp_path / "clf", head="sequence", num_labels=3, id2label=dict(enumerate(names)),
                                  label2id={n: i for i, n in enumerate(names)})
    texts = TEXTS[:8]
    src = write_input(tmp_path / "in.txt", texts, "txt")
    probs = torch.stack([o.outputs.data for o in Engine(str(clf)).classify(texts)])
    top = [names[i] for i in probs.argmax(1).tolist()]
    assert run("-m", clf, src, "-o", tmp_path / "p.jsonl", "--task", "classify", "-q") == 0
    rows = [json.loads(line) for line in (tmp_path / "p.jsonl").read_text().splitlines()]
    assert [list(r) for r in rows[:1]] == [["index", "label", "probs"]]  # vLLM's /classify fields
    assert [r["label"] for r in rows] == top
    assert testing.max_abs_diff(torch.tensor([r["probs"] for r in rows]), probs) <= 1e-6
    assert run("-m", clf, src, "-o", tmp_path / "p.parquet", "--task", "classify", "-q") == 0
    table = pq.read_table(tmp_path / "p.parquet")
    assert table.column_names == ["id", "probs", "label"] and table["label"].to_pylist() == top
    assert json.loads(table.schema.metadata[b"poolkit.labels"]) == names
    assert run("-m", clf, src, "-o", tmp_path / "p.npy", "--task", "classify") == 0  # the bare matrix
    assert np.load(tmp_path / "p.npy").shape == (8, 3)
    assert "labels, in the order of each row's probs: negative, neutral, positive" in capsys.readouterr().err


# --- memory ----------------------------------------------------------------------------------------------

PEAK_RSS = """
import sys
from poolkit.cli import main
assert main(sys.argv[1:]) == 0
status = open("/proc/self/status").read()
print(next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM")))
"""


def _peak_rss_kb(model: Path, src: Path, out: Path) -> int:
    proc = subprocess.run([sys.executable, "-c", PEAK_RSS, "embed", "-m", str(model), str(src), "-o", str(out), "-q"],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    return int(proc.stdout.split()[-1])


@pytest.mark.slow  # 20 s on an idle machine, up to 105 s on a busy one
def test_peak_memory_does_not_grow_with_input_size(tiny_bert_dir, tmp_path):
    """200,000 short texts peak within 10% of 2,000 (VmHWM of the whole process, Parquet output)."""
    words = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta"]
    for n in (2_000, 200_000):
        (tmp_path / f"{n}.txt").write_text("".join(f"{words[i % 8]} {i}\n" for i in range(n)))
    small = _peak_rss_kb(tiny_bert_dir, tmp_path / "2000.txt", tmp_path / "small.parquet")
    big = _peak_rss_kb(tiny_bert_dir, tmp_path / "200000.txt", tmp_path / "big.parquet")
    assert pq.read_metadata(tmp_path / "big.parquet").num_rows == 200_000
    print(f"peak RSS: {small / 1024:.0f} MiB for 2,000 texts, {big / 1024:.0f} MiB for 200,000")
    assert big <= small * 1.10, f"peak RSS {big / 1024:.0f} MiB for 200,000 texts vs {small / 1024:.0f} MiB for 2,000"


def test_a_row_too_long_counted_on_a_prefix_is_worded_for_the_command_line():
    """A text far over the limit is refused from a prefix ("at least N tokens"): the row still says which flag
    truncates it, not the API's truncate_prompt_tokens."""
    from poolkit.jobs.run import _row_reason

    exact = ValueError("This model's maximum context length is 256 tokens. However, you requested 300 tokens in "
                       "the input (prompt 0). Please reduce the length of the input, or pass truncate_prompt_tokens")
    prefix = ValueError("This model's maximum context length is 256 tokens. However, you requested at least 300 "
                        "tokens in the input (prompt 0, 99999 characters; counted on a prefix). Please reduce ...")
    assert _row_reason(exact) == ("the text has 300 tokens, more than the model's maximum of 256 "
                                  "(--truncate-prompt-tokens -1 truncates it)")
    assert _row_reason(prefix).startswith("the text has at least 300 tokens") and "--truncate-prompt-tokens" in _row_reason(prefix)
