"""probes: per-head scores, ablation and reports (README "Commands": `attnlab probe`).

target.py          one interface over attnlab models and HF causal LMs (maps, cache, head flags)
hf_attention.py    the AttentionInterface function behind HF maps and masks (no patched files)
decode.py          greedy decoding, masks on the decode steps only (Wu et al.)
patterns.py        detection patterns and their scores (TransformerLens, Olsson et al.)
sequences.py       repeated random token sequences; in-context copy accuracy
niah_tokens.py     token-level needle-in-a-haystack prompts and ROUGE-1 recall
probe.py           Probe / ProbeResult / ProbeSettings; probe_registry.py: the probes by name
retrieval.py, induction.py, previous_token.py, duplicate.py, prefix_matching.py: one probe each
pattern_probe.py   what the four pattern probes share
ablation.py        top-k vs random-k masking; plots.py, probe_markdown.py, runner.py: the outputs
load.py, cli.py    `attnlab probe PATH`

from attnlab.probes import ProbeTarget, ProbeSettings, get_probe, run_probes
"""

from __future__ import annotations

from ..common import lazy_exports

_LAZY = {
    "ProbeResult": "probe",
    "ProbeSettings": "probe",
    "ProbeTarget": "target",
    "get_probe": "probe_registry",
    "probe_names": "probe_registry",
    "run_probes": "runner",
    "load_model": "load",
}
__all__ = sorted(_LAZY)
__getattr__ = lazy_exports(__name__, _LAZY)
