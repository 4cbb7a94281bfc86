"""Built-in model families, registered through the ``builtin_models`` entry point like any plugin's.

One file per family; this table maps HF ``architectures`` names to ``module:Class`` targets, so
nothing is imported until a model of that architecture is loaded.
"""

from poolkit.registry.hookspecs import hookimpl

ARCHITECTURES = {
    # HF architecture -> (module in this package, class); each class declares its own supported_tasks
    "BertModel": ("bert", "BertForEmbedding"),
    "BertForSequenceClassification": ("bert", "BertForSequenceClassification"),
    "BertForTokenClassification": ("bert", "BertForTokenClassification"),
    "BertForMaskedLM": ("splade", "BertForMaskedLM"),  # SPLADE when its SparseEncoder files say SpladePooling
    "BertSpladeSparseEmbeddingModel": ("splade", "BertSpladeSparseEmbeddingModel"),  # vLLM's name (hf_overrides)
    "ModernBertModel": ("modernbert", "ModernBertForEmbedding"),
    "ModernBertForSequenceClassification": ("modernbert", "ModernBertForSequenceClassification"),
    "ModernBertForTokenClassification": ("modernbert", "ModernBertForTokenClassification"),
    "RobertaModel": ("roberta", "RobertaForEmbedding"),
    "XLMRobertaModel": ("roberta", "RobertaForEmbedding"),
    "RobertaForSequenceClassification": ("roberta", "RobertaForSequenceClassification"),
    "XLMRobertaForSequenceClassification": ("roberta", "RobertaForSequenceClassification"),
    "BgeM3EmbeddingModel": ("bge_m3", "BgeM3EmbeddingModel"),
    "HF_ColBERT": ("colbert", "HFColBERT"),
    "ColBERTModernBertModel": ("colbert", "ColBERTModernBertModel"),
    "ColBERT": ("colbert", "PyLateColBERT"),  # PyLate's Sentence Transformers model_type
    "LlamaModel": ("llama", "LlamaForEmbedding"),
    "Qwen2Model": ("llama", "Qwen2ForEmbedding"),
    "Qwen3Model": ("llama", "Qwen3ForEmbedding"),
    "LlamaForCausalLM": ("llama", "LlamaCausalLMForEmbedding"),
    "Qwen2ForCausalLM": ("llama", "Qwen2CausalLMForEmbedding"),
    "Qwen3ForCausalLM": ("llama", "Qwen3CausalLMForEmbedding"),
    "LlamaForSequenceClassification": ("llama", "LlamaForSequenceClassification"),
    "Qwen2ForSequenceClassification": ("llama", "Qwen2ForSequenceClassification"),
    "Qwen3ForSequenceClassification": ("llama", "Qwen3ForSequenceClassification"),
    "Qwen2ForRewardModel": ("llama", "Qwen2ForRewardModel"),
    "Qwen2ForProcessRewardModel": ("llama", "Qwen2ForProcessRewardModel"),
    "Gemma3TextModel": ("gemma3", "Gemma3TextEncoder"),  # EmbeddingGemma (bidirectional)
    "CLIPModel": ("clip", "CLIPForEmbedding"),
    "SiglipModel": ("siglip", "SiglipForEmbedding"),
}


@hookimpl
def register_architectures(register):
    for arch, (module, cls) in ARCHITECTURES.items():
        register(arch, f"poolkit.builtin_models.{module}:{cls}")
    # any other architecture transformers implements: padded, through transformers itself
    register("TransformersFallback", "poolkit.builtin_models.transformers_fallback:TransformersFallback",
             fallback=True)
