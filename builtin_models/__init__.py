"""Built-in model families, registered through the ``builtin_models`` entry point like any plugin's.

One file per family; this table maps HF ``architectures`` names to ``module:Class`` targets, so
nothing is imported until a model of that architecture is loaded.
"""

from poolkit.registry.hookspecs import hookimpl

ARCHITECTURES = {
    # HF architecture -> (module in this package, class, tasks)
    "BertModel": ("bert", "BertForEmbedding", ("embed", "token_embed")),
    "BertForSequenceClassification": ("bert", "BertForSequenceClassification", ("classify", "score")),
    "BertForTokenClassification": ("bert", "BertForTokenClassification", ("token_classify",)),
    "ModernBertModel": ("modernbert", "ModernBertForEmbedding", ("embed", "token_embed")),
    "ModernBertForSequenceClassification": ("modernbert", "ModernBertForSequenceClassification", ("classify", "score")),
    "ModernBertForTokenClassification": ("modernbert", "ModernBertForTokenClassification", ("token_classify",)),
    "RobertaModel": ("roberta", "RobertaForEmbedding", ("embed", "token_embed")),
    "XLMRobertaModel": ("roberta", "RobertaForEmbedding", ("embed", "token_embed")),
    "RobertaForSequenceClassification": ("roberta", "RobertaForSequenceClassification", ("classify", "score")),
    "XLMRobertaForSequenceClassification": ("roberta", "RobertaForSequenceClassification", ("classify", "score")),
    "BgeM3EmbeddingModel": ("bge_m3", "BgeM3EmbeddingModel", ("embed", "token_embed", "token_classify")),
    "LlamaModel": ("llama", "LlamaForEmbedding", ("embed", "token_embed")),
    "Qwen2Model": ("llama", "Qwen2ForEmbedding", ("embed", "token_embed")),
    "Qwen3Model": ("llama", "Qwen3ForEmbedding", ("embed", "token_embed")),
    "LlamaForCausalLM": ("llama", "LlamaCausalLMForEmbedding", ("embed", "token_embed")),
    "Qwen2ForCausalLM": ("llama", "Qwen2CausalLMForEmbedding", ("embed", "token_embed")),
    "Qwen3ForCausalLM": ("llama", "Qwen3CausalLMForEmbedding", ("embed", "token_embed")),
    "LlamaForSequenceClassification": ("llama", "LlamaForSequenceClassification", ("classify", "score")),
    "Qwen2ForSequenceClassification": ("llama", "Qwen2ForSequenceClassification", ("classify", "score")),
    "Qwen3ForSequenceClassification": ("llama", "Qwen3ForSequenceClassification", ("classify", "score")),
    "Qwen2ForRewardModel": ("llama", "Qwen2ForRewardModel", ("token_classify",)),
    "Qwen2ForProcessRewardModel": ("llama", "Qwen2ForProcessRewardModel", ("token_classify",)),
}


@hookimpl
def register_architectures(register):
    for arch, (module, cls, tasks) in ARCHITECTURES.items():
        register(arch, f"poolkit.builtin_models.{module}:{cls}", tasks=tasks)
    # any other architecture transformers implements: padded, through transformers itself
    register("TransformersFallback", "poolkit.builtin_models.transformers_fallback:TransformersFallback",
             tasks=("embed", "token_embed", "classify", "score", "token_classify"), fallback=True)
