"""Issue 22: errors are classified once (``poolkit.server.errors.classify``) and each API renders that one
classification in its own shape; a bug is logged with its traceback once, whichever API it came through."""

import json
import logging

from fastapi import Request
from fastapi.exceptions import RequestValidationError

from poolkit.errors import InputTooLongError, UnsupportedTaskError
from poolkit.io_processor import IOProcessorError
from poolkit.server import middleware
from poolkit.server.errors import APIError, Overloaded, classify, openai_response
from poolkit.server.routes import tei


def _request(path="/embed"):
    return Request({"type": "http", "method": "POST", "path": path, "headers": [], "state": {"request_id": "r1"}})


CASES = [  # exception, its status and kind, TEI's status and error_type
    (InputTooLongError("too long", "input"), 400, "invalid", 422, "validation"),
    (UnsupportedTaskError("no classify", "task"), 400, "unsupported", 424, "backend"),
    (Overloaded("busy"), 429, "overloaded", 429, "overloaded"),
    (APIError(503, "loading"), 503, "unavailable", 503, "unhealthy"),
    (APIError(400, "nothing to embed", "input", kind="empty"), 400, "empty", 400, "empty"),
    (tei.TEIError("backend", "not SPLADE"), 424, "unsupported", 424, "backend"),
    (IOProcessorError.of("p", None, "pre_process", ValueError("bad field")), 400, "invalid", 422, "validation"),
    (RequestValidationError([{"type": "missing", "loc": ("body", "inputs"), "msg": "Field required"}]),
     400, "invalid", 422, "validation"),
]


def test_one_classification_rendered_by_each_api(caplog):
    caplog.set_level(logging.INFO, logger="poolkit")
    for exc, status, kind, tei_status, tei_type in CASES:
        c = classify(exc, _request())
        assert (c.status, c.kind, c.bug) == (status, kind, False), exc
        openai = openai_response(c)
        body = json.loads(openai.body)
        assert openai.status_code == status and body["object"] == "error" and body["message"] == c.message
        shaped = tei.error_response(c)
        assert shaped.status_code == tei_status and json.loads(shaped.body)["error_type"] == tei_type, exc
    assert not [r for r in caplog.records if r.exc_info], "a client error logged a traceback"
    assert json.loads(tei.error_response(classify(CASES[-1][0], _request())).body)["error"].startswith(
        "Failed to deserialize the JSON body into the target type: inputs")


def test_a_bug_is_logged_once_and_every_shape_names_only_the_request_id(caplog):
    caplog.set_level(logging.INFO, logger="poolkit")
    c = classify(RuntimeError("secret detail"), _request())
    assert c.bug and c.status == 500 and "r1" in c.message and "secret" not in c.message
    assert [r.getMessage() for r in caplog.records if r.exc_info] == ["request r1 (POST /embed) failed with a server error"]
    for response in (openai_response(c), tei.error_response(c), middleware.respond("/embed", c),
                     middleware.respond("/v1/embeddings", c), middleware.respond("/rerank", c)):
        assert response.status_code == 500 and b"secret" not in response.body and b"r1" in response.body
    plugin_bug = classify(IOProcessorError.of("p", None, "post_process", ValueError("oops")), _request())
    assert plugin_bug.bug and plugin_bug.status == 500


def test_one_batch_size_rule_for_every_api():
    """One check (ServerState.check_batch_size): OpenAI's 413 and TEI's 422 carry the same words."""
    import pytest

    from poolkit.server.state import Limits, ServerState

    state = ServerState(limits=Limits(max_client_batch_size=2))
    state.check_batch_size(2)
    with pytest.raises(APIError) as many:
        state.check_batch_size(3)
    c = classify(many.value, _request())
    assert openai_response(c).status_code == 413 and c.param == "input"
    shaped = tei.error_response(c)
    assert shaped.status_code == 422 and json.loads(shaped.body) == {
        "error": "batch size 3 > maximum allowed batch size 2 (the server's max_client_batch_size)",
        "error_type": "validation"}
    with pytest.raises(APIError) as none:
        state.check_batch_size(0, empty=tei.EMPTY)
    c = classify(none.value, _request())
    assert openai_response(c).status_code == 400 and json.loads(tei.error_response(c).body) == {
        "error": tei.EMPTY, "error_type": "empty"}


def test_one_cosine():
    """Bi-encoder scores and TEI's /similarity use poolkit.scoring.cosine; checked against numpy."""
    import numpy as np
    import torch

    from poolkit.scoring import cosine

    a, b = torch.randn(7), torch.randn(7)
    expected = float(a.numpy() @ b.numpy() / np.linalg.norm(a.numpy()) / np.linalg.norm(b.numpy()))
    assert abs(float(cosine(a, b)) - expected) < 1e-6
    assert float(cosine(a, torch.zeros(7))) == 0.0
