"""The plugin's learned pooler: a SIF-style weighted mean whose per-token weights ship in the model directory.

``SIF_MEAN`` pools ``sum_i w[id_i] h_i / sum_i w[id_i]`` over each sequence's tokens, where ``w`` is the vector
``weight`` (one entry per vocabulary id, e.g. ``a / (a + p(token))`` from a frequency table) of the model
directory's ``sif_weights.safetensors``. It reads the model's config (the vocabulary size the vector must
match) and that file once, when the Engine is built (``PoolingMethod.load``).
"""

from poolkit.pooling import SEQUENCE_TASKS, MeanPool, PoolerInit

WEIGHTS_FILE = "sif_weights.safetensors"


class SifMeanPool(MeanPool):
    name, supported_tasks = "SIF_MEAN", SEQUENCE_TASKS
    st_modes = ()

    def __init__(self, config=None, token_weights=None):
        super().__init__(config)
        self.token_weights = token_weights

    @classmethod
    def load(cls, init: PoolerInit) -> "SifMeanPool":
        weights = init.weights(WEIGHTS_FILE)["sif_weights.weight"].float()
        vocab = init.hf_config.vocab_size
        if weights.shape != (vocab,):
            raise ValueError(f"{WEIGHTS_FILE}: weight has shape {tuple(weights.shape)}; this model's vocabulary "
                             f"needs ({vocab},)")
        return cls(init.config, weights)

    def __call__(self, hidden, batch):
        w = self.token_weights.to(hidden.device)[batch.input_ids]  # (N,) each token's weight
        seq = batch.seq_ids
        sums = hidden.new_zeros(len(batch.lengths), hidden.shape[1]).index_add_(0, seq, hidden * w[:, None])
        totals = hidden.new_zeros(len(batch.lengths)).index_add_(0, seq, w)
        return sums / totals.clamp(min=1e-9)[:, None]
