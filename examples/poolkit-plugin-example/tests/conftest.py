"""poolkit's fixtures for plugin authors (poolkit_host, tiny_bert_path, tiny_engine), plus this plugin's model."""

import pytest

from poolkit_plugin_example.testing import build_tiny_bow

pytest_plugins = ["poolkit.pytest_plugin"]


@pytest.fixture(scope="session")
def bow_path(tmp_path_factory):
    return build_tiny_bow(tmp_path_factory.mktemp("bow"))
