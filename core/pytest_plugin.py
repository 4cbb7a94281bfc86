"""pytest fixtures for testing poolkit plugins. Opt in from your ``conftest.py``::

    pytest_plugins = ["poolkit.pytest_plugin"]

Fixtures (the helpers behind them are plain functions in :mod:`poolkit.testing`):

- ``poolkit_host``: a freshly loaded plugin host (entry points re-read), reset again afterwards;
- ``tiny_bert_path``: a 2-layer, 32-wide random BERT with a WordPiece tokenizer (built once per session);
- ``tiny_engine``: a factory ``tiny_engine(**engine_kwargs)`` for Engines on a fresh copy of it.
"""

from __future__ import annotations

import shutil

import pytest

from poolkit import testing


@pytest.fixture
def poolkit_host():
    from poolkit.registry import get_host, reset_host

    reset_host()
    yield get_host()
    reset_host()


@pytest.fixture(scope="session")
def tiny_bert_path(tmp_path_factory):
    return testing.build_tiny_bert(tmp_path_factory.mktemp("poolkit_tiny_bert"))


@pytest.fixture
def tiny_engine(tiny_bert_path, tmp_path):
    """``tiny_engine(model_kwargs=None, **engine_kwargs)``: an Engine on a private copy of the tiny BERT,
    or on a tiny BERT built with ``model_kwargs`` (see :func:`poolkit.testing.tiny_engine`)."""

    def make(model_kwargs=None, **engine_kwargs):
        dest = tmp_path / f"model_{len(list(tmp_path.iterdir()))}"
        if not model_kwargs:  # the session's checkpoint is the one asked for: copy, don't rebuild
            shutil.copytree(tiny_bert_path, dest)
        return testing.tiny_engine(dest, model_kwargs=model_kwargs, **engine_kwargs)

    return make
