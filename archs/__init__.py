"""Model definitions: mixer families, FFNs, the HF model and its cache, greedy decoding
(docs/architecture.md).

    from attnlab.archs import AttnLabConfig, AttnLabForCausalLM, greedy_decode, preset

Names load on first use (PEP 562), so importing a light part of archs (presets, specs) does not
pull in torch.
"""

from __future__ import annotations

from ..common import lazy_exports

_LAZY = {
    "AttnLabConfig": "config",
    "AttnLabForCausalLM": "model",
    "AttnLabModel": "model",
    "GreedyOutput": "generate",
    "greedy_decode": "generate",
    "from_llama": "llama",
    "to_llama": "llama",
    "check_model_files": "model_files",
    "preset": "presets",
    "PRESETS": "presets",
    "KVSpec": "state",
    "LatentSpec": "state",
    "RecurrentSpec": "state",
    "CompositeSpec": "state",
    "mixer_types": "families",
    "MoEFFN": "ffn",
    "shared_rope_tables": "rope",
}
__all__ = sorted(_LAZY)
__getattr__ = lazy_exports(__name__, _LAZY)
