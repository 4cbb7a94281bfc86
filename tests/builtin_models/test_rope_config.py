"""Issue 22: one reading of a config's RoPE (``poolkit.layers.rope_parameters``) for Llama, Gemma3 and ModernBERT."""

from types import SimpleNamespace

import pytest
import torch

from poolkit.builtin_models.gemma3 import rotary_of
from poolkit.builtin_models.modernbert import rope_theta
from poolkit.layers import rope_frequencies, rope_parameters
from poolkit.layers.rotary import default_frequencies


def test_every_config_form_reads_the_same():
    flat = SimpleNamespace(rope_theta=500.0)  # transformers 4
    assert rope_parameters(flat) == {"rope_type": "default", "rope_theta": 500.0}
    v5 = SimpleNamespace(rope_parameters={"rope_type": "default", "rope_theta": 500.0})
    assert rope_parameters(v5) == rope_parameters(flat)
    per_layer = SimpleNamespace(rope_parameters={"full_attention": {"rope_type": "default", "rope_theta": 500.0},
                                                 "sliding_attention": {"rope_type": "default", "rope_theta": 10.0}})
    assert rope_parameters(per_layer, "full_attention") == rope_parameters(flat)
    assert rope_parameters(SimpleNamespace(), "sliding_attention", theta=7.0)["rope_theta"] == 7.0


def test_the_families_share_the_parser():
    cfg = SimpleNamespace(rope_parameters={"full_attention": {"rope_type": "default", "rope_theta": 500.0},
                                           "sliding_attention": {"rope_type": "default", "rope_theta": 10.0}})
    gemma = rotary_of(cfg, "sliding_attention", 8, torch.device("cpu"))
    assert torch.equal(gemma.inv_freq, default_frequencies(8, 10.0))
    assert torch.equal(gemma.inv_freq, rope_frequencies(cfg, 8, "sliding_attention")[0])
    assert rope_theta(cfg, "full_attention") == 500.0
    # a layer's partial rotation was silently ignored by Gemma3's own parser
    partial = SimpleNamespace(rope_parameters={"full_attention": {"rope_type": "default", "rope_theta": 1.0,
                                                                  "partial_rotary_factor": 0.5}})
    for read in (lambda: rotary_of(partial, "full_attention", 8, torch.device("cpu")),
                 lambda: rope_theta(partial, "full_attention")):
        with pytest.raises(ValueError, match="partial_rotary_factor"):
            read()
