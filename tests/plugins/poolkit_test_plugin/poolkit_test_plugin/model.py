"""The plugin's model: the native BERT encoder, served under the plugin's own architecture name."""

from poolkit.builtin_models.bert import BertForEmbedding


class TestPluginBert(BertForEmbedding):
    default_pooling = "FIRST_LAST"
    supported_tasks = ("embed",)
