"""Per-head hooks for Hugging Face causal LMs, without patched modeling files.

transformers 5 routes every attention layer through `AttentionInterface`; we register one function,
`attnlab_probe`, that runs the model's own eager attention (so `output_attentions` returns the
softmax maps) and applies the probe's head flags on the way:

- uniform (Wu et al. 2024 masking): the head's query rows are zeroed, so its pre-softmax logits are
  0 and it attends uniformly to every key the mask allows;
- zero: the head's output is multiplied by 0 before the output projection.

Flags live on the attention module (`module.attnlab_head_flags`), set by `HFTarget`; a module
without flags runs plain eager attention. The mask function registered under the same name is
transformers' eager mask: without one, a custom implementation gets no causal mask at all.
"""

from __future__ import annotations

import sys
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from transformers import AttentionInterface
from transformers.masking_utils import AttentionMaskInterface, eager_mask

IMPLEMENTATION = "attnlab_probe"
FLAGS_ATTR = "attnlab_head_flags"
_recording: list | None = None  # (module, num_heads) per call, while `record_attention_calls` is open


@dataclass
class HeadFlags:
    uniform: torch.Tensor  # [H] bool
    keep: torch.Tensor  # [H] float, 0 for zero-ablated heads


def module_eager(module) -> callable:
    """The eager attention function of the module's own modeling file."""
    fn = getattr(sys.modules[type(module).__module__], "eager_attention_forward", None)
    if fn is None:
        raise ValueError(
            f"{type(module).__name__} has no eager_attention_forward in {type(module).__module__}; "
            "probes need a model whose attention goes through transformers' AttentionInterface"
        )
    return fn


def probe_attention(module, query, key, value, attention_mask, **kwargs):
    """query [B, H, T, D], key/value [B, Hkv, S, D] -> (out [B, T, H, Dv], weights [B, H, T, S])."""
    if _recording is not None:
        _recording.append((module, query.shape[1]))
    flags: HeadFlags | None = getattr(module, FLAGS_ATTR, None)
    if flags is not None:
        query = query.masked_fill(flags.uniform.to(query.device)[:, None, None], 0.0)
    out, weights = module_eager(module)(module, query, key, value, attention_mask, **kwargs)
    if flags is not None:
        assert out.shape[2] == flags.keep.numel(), "eager attention output is not [B, T, H, D]"
        out = out * flags.keep.to(device=out.device, dtype=out.dtype)[:, None]
    return out, weights


@contextmanager
def record_attention_calls():
    """Collect (attention module, number of query heads) in call order: the model's attention
    layers as `output_attentions` lists them, found by running the model rather than by names."""
    global _recording
    _recording = calls = []
    try:
        yield calls
    finally:
        _recording = None


AttentionInterface.register(IMPLEMENTATION, probe_attention)
AttentionMaskInterface.register(IMPLEMENTATION, eager_mask)
