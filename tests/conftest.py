"""Shared fixtures: tiny random-weight checkpoints built offline, the packaged MiniLM, a fresh plugin host."""

from __future__ import annotations

import pytest

from poolkit import testing
from poolkit.registry import reset_host


@pytest.fixture(scope="session")
def minilm_dir():
    return testing.minilm_path()


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory):
    """A 2-layer, 32-wide random BERT with MiniLM's tokenizer."""
    return testing.build_tiny_bert(tmp_path_factory.mktemp("tiny_bert"))


@pytest.fixture
def fresh_host():
    """Forget loaded plugins before and after the test, so env vars and sys.path changes take effect."""
    reset_host()
    yield
    reset_host()
