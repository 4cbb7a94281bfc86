"""The ``plugin`` task: choosing the IO processor, its errors, batching and per-request isolation."""

from __future__ import annotations

import asyncio
import json
import shutil

import pytest
import torch
from pydantic import BaseModel

from poolkit import Engine, PoolingParams, testing
from poolkit.io_processor import IOProcessor, IOProcessorError
from poolkit.registry import PluginLoadError, UnknownNameError, UnknownTaskError


class Req(BaseModel):
    texts: list[str]


class SumOfEmbeddings(IOProcessor[Req, list]):
    """Several prompts per request; fails in pre_process on "boom" and in post_process on "bust"."""

    task = "embed"
    request_type = Req

    def pre_process(self, data, params):
        if "boom" in data.texts:
            raise RuntimeError("pre_process exploded")
        return data.texts

    def post_process(self, outputs, request):
        if "bust" in request.texts:
            raise ZeroDivisionError("post_process exploded")
        return sum(o.outputs.data for o in outputs).tolist() if outputs else []


@pytest.fixture
def parts(fresh_host):
    with testing.plugin_parts(io_processors={"sum": SumOfEmbeddings}) as host:
        yield host


def test_not_configured_says_how_and_lists_installed(tiny_bert_dir, parts):
    engine = Engine(str(tiny_bert_dir))
    assert "plugin" not in engine.supported_tasks and engine.io_processor is None
    for call in (lambda: engine.encode("x", task="plugin"), lambda: engine.encode_plugin_batch(["x"])):
        with pytest.raises(UnknownTaskError) as err:
            call()
        message = str(err.value)
        assert "io_processor_plugin='<name>'" in message and '"io_processor_plugin": "<name>"' in message
        assert "['long-text', 'multi-vector-matryoshka', 'sparse-lexical', 'sum']" in message


def test_unknown_processor_lists_registered(tiny_bert_dir, parts):
    with pytest.raises(UnknownNameError, match=r"io_processor_plugin='nope': Unknown IO processor 'nope'. "
                                               r"Registered: \['long-text', .*'sum'\]"):
        Engine(str(tiny_bert_dir), io_processor_plugin="nope")


def test_config_json_selects_and_the_argument_wins(tiny_bert_dir, tmp_path, parts):
    path = tmp_path / "model"
    shutil.copytree(tiny_bert_dir, path)
    cfg = json.loads((path / "config.json").read_text())
    (path / "config.json").write_text(json.dumps({**cfg, "io_processor_plugin": "sum"}))
    assert Engine(str(path)).io_processor.name == "sum"
    assert "plugin" in Engine(str(path)).supported_tasks
    assert Engine(str(path), io_processor_plugin="long-text").io_processor.name == "long-text"
    assert Engine(str(path), io_processor_plugin="").io_processor is None  # "" turns it off
    with pytest.raises(UnknownNameError, match="config.json io_processor_plugin='gone'"):
        Engine(str(tiny_bert_dir), hf_overrides={"io_processor_plugin": "gone"})


def test_several_prompts_per_request_and_batch_results_in_order(tiny_bert_dir, parts):
    engine = Engine(str(tiny_bert_dir), io_processor_plugin="sum", max_batch_tokens=16)
    requests = [{"texts": ["a", "b c"]}, {"texts": ["a much longer text than the others here"]}, {"texts": []}]
    outs = engine.encode(requests, task="plugin", pooling_params=PoolingParams(normalize=False))
    for req, out in zip(requests[:2], outs):
        want = sum(o.outputs.data for o in engine.embed(req["texts"], PoolingParams(normalize=False)))
        assert testing.max_abs_diff(out, want) <= 1e-6
    assert outs[2] == []  # no prompts: post_process got an empty list
    [single] = engine.encode(requests[0], task="plugin", pooling_params=PoolingParams(normalize=False))
    assert single == outs[0]


@pytest.mark.parametrize("bad, stage, cause", [("boom", "pre_process", "RuntimeError: pre_process exploded"),
                                              ("bust", "post_process", "ZeroDivisionError: post_process exploded")])
def test_a_failing_request_fails_alone_and_names_the_plugin(tiny_bert_dir, parts, bad, stage, cause):
    engine = Engine(str(tiny_bert_dir), io_processor_plugin="sum")
    good = [{"texts": ["first request"]}, {"texts": ["third", "request"]}]
    alone = [engine.encode(r, task="plugin")[0] for r in good]
    results = engine.encode_plugin_batch([good[0], {"texts": ["fine", bad]}, good[1], {"oops": 1}])
    # within float noise of running alone (docs/architecture.md: a request's result does not depend on its batch)
    assert torch.allclose(torch.tensor(results[0]), torch.tensor(alone[0]), atol=1e-6, rtol=0)
    assert torch.allclose(torch.tensor(results[2]), torch.tensor(alone[1]), atol=1e-6, rtol=0)
    err = results[1]
    assert isinstance(err, IOProcessorError) and err.stage == stage and err.index == 1 and not err.client_error
    assert str(err) == (f"IO processor 'sum' from plugin 'testing' (distribution poolkit.testing 0, entry point "
                        f"poolkit.testing.plugin_parts) failed in {stage} for request 1: {cause}")
    assert isinstance(results[3], IOProcessorError) and results[3].stage == "parse_request" and results[3].client_error
    with pytest.raises(IOProcessorError, match=f"failed in {stage} for request 0"):
        engine.encode({"texts": [bad]}, task="plugin")


def test_bad_input_to_an_io_processor_is_an_invalid_request_error(tiny_bert_dir, parts):
    """Issue 22: offline callers catching ValueError (InvalidRequestError) get a request's bad input; the
    plugin's own bug stays an IOProcessorError that is not one."""
    from poolkit.errors import InvalidRequestError

    engine = Engine(str(tiny_bert_dir), io_processor_plugin="sum", max_model_len=8)
    with pytest.raises(ValueError, match="failed in parse_request") as bad:
        engine.encode({"oops": 1}, task="plugin")
    assert isinstance(bad.value, InvalidRequestError) and isinstance(bad.value, IOProcessorError)
    assert bad.value.status == 400 and bad.value.client_error
    with pytest.raises(InvalidRequestError, match="maximum context length is 8 tokens"):
        engine.encode({"texts": ["word " * 20]}, task="plugin")
    with pytest.raises(IOProcessorError, match="post_process") as bug:
        engine.encode({"texts": ["bust"]}, task="plugin")
    assert not isinstance(bug.value, ValueError)


def test_bad_prompts_from_pre_process_are_attributed(tiny_bert_dir, parts):
    engine = Engine(str(tiny_bert_dir), io_processor_plugin="sum", max_model_len=8)
    ok, too_long = engine.encode_plugin_batch([{"texts": ["ok"]}, {"texts": ["word " * 20]}])
    assert isinstance(ok, list)
    assert "IO processor 'sum'" in str(too_long) and "maximum context length is 8 tokens" in str(too_long)


def test_processor_for_a_task_the_model_lacks(tiny_bert_dir, fresh_host):
    class NeedsClassify(SumOfEmbeddings):
        task = "classify"

    with testing.plugin_parts(io_processors={"needs-classify": NeedsClassify}):
        with pytest.raises(IOProcessorError, match=r"'needs-classify'.*failed in __init__.*task 'classify'.*"
                                                   r"supported tasks: \['embed', 'token_embed'\]"):
            Engine(str(tiny_bert_dir), io_processor_plugin="needs-classify")


def test_processor_whose_module_fails_to_import(tiny_bert_dir, fresh_host):
    with testing.plugin_parts(io_processors={"ghost": "poolkit_no_such_module:Processor"}):
        with pytest.raises(PluginLoadError, match=r"(?i)IO processor 'ghost' from plugin 'testing' .*could not be "
                                                  r"imported.*ModuleNotFoundError"):
            Engine(str(tiny_bert_dir), io_processor_plugin="ghost")
        engine = Engine(str(tiny_bert_dir), io_processor_plugin="long-text")  # the others keep working
        assert engine.encode("still fine", task="plugin")[0].num_chunks == 1


def test_the_plugin_task_honours_encodes_options_and_fails_a_bad_request_before_pooling(tiny_bert_dir, parts,
                                                                                          monkeypatch):
    engine = Engine(str(tiny_bert_dir), io_processor_plugin="sum")
    texts, raw = ["a longer text about pooling tokens into one vector", "another"], PoolingParams(normalize=False)
    for options in ({"truncate_prompt_tokens": 4}, {"prompt": "query: "}):
        [got] = engine.encode({"texts": texts}, task="plugin", pooling_params=raw, **options)
        want = sum(o.outputs.data for o in engine.embed(texts, raw, **options))
        assert testing.max_abs_diff(torch.tensor(got), want) <= 1e-6, options
        [plain] = engine.encode({"texts": texts}, task="plugin", pooling_params=raw)
        assert testing.max_abs_diff(torch.tensor(plain), want) > 1e-3, options  # the option changed the result
    passes, real = [], engine.run_batch
    monkeypatch.setattr(engine, "run_batch", lambda *args: passes.append(len(args[1])) or real(*args))
    with pytest.raises(IOProcessorError, match="failed in pre_process for request 2"):
        engine.encode([{"texts": ["fine"]}, {"texts": ["also fine"]}, {"texts": ["boom"]}], task="plugin")
    assert passes == []  # refused before anything was pooled
    engine.encode([{"texts": ["fine"]}, {"texts": ["also fine"]}], task="plugin")
    assert passes == [2]  # both requests' prompts in one forward pass


def test_async_hooks_are_not_part_of_the_contract_and_a_processor_defining_one_is_refused(tiny_bert_dir, fresh_host):
    """poolkit runs the sync hooks (the server: on the model's tokenizer thread); vLLM's *_async would silently
    never run, so a processor that defines one fails when the Engine is built, saying where the work goes."""
    assert [m for m in dir(IOProcessor) if m.endswith("_async")] == []

    class AwaitsIO(SumOfEmbeddings):
        async def pre_process_async(self, data, params):
            await asyncio.sleep(0)
            return data.texts

    with testing.plugin_parts(io_processors={"awaits": AwaitsIO}):
        with pytest.raises(IOProcessorError, match=r"'awaits'.*failed in __init__.*defines \['pre_process_async'\], "
                                                   r"which poolkit never calls.*into \['pre_process'\]"):
            Engine(str(tiny_bert_dir), io_processor_plugin="awaits")


def test_a_class_that_is_not_an_io_processor_is_refused_by_isinstance(tiny_bert_dir, fresh_host):
    class DuckTyped:  # every method, no base class
        task = "embed"
        parse_request = merge_pooling_params = pre_process = post_process = output_to_response = print

        def __init__(self, ctx):
            pass

    with testing.plugin_parts(io_processors={"duck": DuckTyped}):
        with pytest.raises(IOProcessorError, match=r"failed in __init__.*is not a poolkit.IOProcessor; subclass it"):
            Engine(str(tiny_bert_dir), io_processor_plugin="duck")


def test_plugin_parts_never_displaces_a_registered_part(fresh_host):
    with pytest.raises(ValueError, match="'long-text' is already registered by plugin 'io_plugins'"):
        with testing.plugin_parts(io_processors={"long-text": SumOfEmbeddings}):
            pass
    from poolkit.registry import get_host

    assert get_host().registry("io_processors").get("long-text").plugin.dist == "poolkit"


def test_response_body_shapes_http_bodies(tiny_bert_dir, parts):
    runner = Engine(str(tiny_bert_dir), io_processor_plugin="sum").io_processor

    def serve(data):  # what POST /pooling answers: the body of one request, or of a list of them
        return runner.response_body(data, runner.encode(data))

    one = serve({"texts": ["a"]})
    assert one.keys() == {"data"} and one["data"].keys() == {"data"} and len(one["data"]["data"]) == 32
    many = serve([{"texts": ["a"]}, {"texts": ["b"]}])
    assert len(many["data"]) == 2 and many["data"][0] == one["data"]
    assert json.dumps(many)
    with pytest.raises(IOProcessorError, match="parse_request") as err:
        serve({"nope": 1})
    assert err.value.client_error
