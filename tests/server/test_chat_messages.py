"""vLLM's chat form (``messages``) on /v1/embeddings and /pooling: rendered with the tokenizer's chat template."""

from __future__ import annotations

import json

import httpx
import numpy as np
import pytest

from poolkit import Engine, testing
from poolkit.server.app import create_app
from tests.server.conftest import LiveServer

TEMPLATE = ("{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }}\n{% endfor %}"
            "{% if add_generation_prompt %}[assistant]{% endif %}")
MESSAGES = [{"role": "system", "content": "Be brief."},
            {"role": "user", "content": [{"type": "text", "text": "what is"}, {"type": "text", "text": "pooling?"}]}]


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    path = testing.build_tiny_bert(tmp_path_factory.mktemp("chat"), seed=51)
    cfg = json.loads((path / "tokenizer_config.json").read_text())
    cfg["chat_template"] = TEMPLATE
    (path / "tokenizer_config.json").write_text(json.dumps(cfg))
    engines = {"chat": Engine(str(path)), "plain": Engine(str(testing.build_tiny_bert(tmp_path_factory.mktemp("plain"))))}
    server = LiveServer(create_app(lambda: engines))
    yield server, engines
    server.stop()


def reference_ids(engine, **kwargs):
    """transformers' own rendering: text parts of a message joined by newlines, as vLLM does."""
    conversation = [{"role": m["role"], "content": m["content"] if isinstance(m["content"], str)
                     else "\n".join(p["text"] for p in m["content"])} for m in MESSAGES]
    text = engine.tokenizer.apply_chat_template(conversation, tokenize=False, **kwargs)
    return engine.tokenizer(text, add_special_tokens=False)["input_ids"]


@pytest.mark.parametrize("flags", [{}, {"add_generation_prompt": True}, {"continue_final_message": True}])
def test_messages_use_the_chat_template(live, flags):
    server, engines = live
    engine = engines["chat"]
    ids = reference_ids(engine, add_generation_prompt=flags.get("add_generation_prompt", False),
                        continue_final_message=flags.get("continue_final_message", False))
    want = engine.embed([ids])[0].outputs.data
    r = httpx.post(server.url + "/v1/embeddings", json={"model": "chat", "messages": MESSAGES, **flags}).json()
    assert testing.max_abs_diff(np.array(r["data"][0]["embedding"]), want) <= 1e-6
    assert r["usage"]["prompt_tokens"] == len(ids)
    p = httpx.post(server.url + "/pooling", json={"model": "chat", "messages": MESSAGES, "task": "embed", **flags}).json()
    assert testing.max_abs_diff(np.array(p["data"][0]["data"]), want) <= 1e-6


def test_bad_messages_are_400(live):
    server, _ = live
    url = server.url + "/v1/embeddings"
    both = httpx.post(url, json={"model": "chat", "messages": MESSAGES, "add_generation_prompt": True,
                                 "continue_final_message": True})
    assert both.status_code == 400 and "cannot both" in both.json()["message"]
    plain = httpx.post(url, json={"model": "plain", "messages": MESSAGES})
    assert plain.status_code == 400 and "no chat template" in plain.json()["message"]
    neither = httpx.post(url, json={"model": "chat"})
    assert neither.status_code == 400
