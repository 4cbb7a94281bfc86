"""The pytest plugin's ``tiny_engine`` fixture: a copy of the session's tiny BERT, or one built to order."""

pytest_plugins = ["poolkit.pytest_plugin"]


def test_tiny_engine_copies_the_session_model(tiny_engine):
    engine = tiny_engine(max_model_len=16)
    assert engine.architecture == "BertModel" and engine.max_model_len == 16


def test_tiny_engine_builds_what_model_kwargs_ask_for(tiny_engine):
    engine = tiny_engine(model_kwargs={"head": "sequence", "num_labels": 3})
    assert engine.architecture == "BertForSequenceClassification"
    assert "classify" in engine.supported_tasks and engine.model.num_labels == 3
