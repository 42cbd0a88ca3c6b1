"""What the cache tests share: models whose attention is peaked enough for a position error to
show, cached `generate()` compared with an independent no-cache greedy loop (tokens and logits),
and a planted cache bug (RoPE positions one too far on every cached chunk) that the comparison
must see.

Why peaked weights: at HF's init std 0.02 attention is nearly uniform on these tiny models, and
shifting every cached position by one moves the logits by only 1e-4 to 2e-2 (measured over
tests/variants.py) — no greedy token changes, and on the 7:1 hybrid not even past LOGIT_ATOL. At
std 0.2 the same bug moves them by 0.2 to 2.3 and changes the greedy tokens (test_model.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from variants import tiny_config

from attnlab import AttnLabForCausalLM
from attnlab.archs.model import AttnLabModel

PEAKED_INIT = 0.2
# fp32: the cached and uncached paths sum in different orders, measured at most 6e-6 apart on
# these models (logits up to ~5); 1e-4 leaves 15x room and sits 2000x below a one-position error.
LOGIT_ATOL = 1e-4


def peaked_model(name: str, seed: int = 0, **overrides) -> AttnLabForCausalLM:
    """The tiny `name` variant with weights drawn at std PEAKED_INIT, fp32, eval mode."""
    torch.manual_seed(seed)
    return AttnLabForCausalLM(tiny_config(name, initializer_range=PEAKED_INIT, **overrides)).eval()


@dataclass
class Comparison:
    tokens_equal: bool
    max_abs_logit_diff: float  # over the steps up to and including the first differing token

    @property
    def passes(self) -> bool:
        return self.tokens_equal and self.max_abs_logit_diff <= LOGIT_ATOL


@torch.no_grad()
def generate_against_no_cache(model, x: torch.Tensor, steps: int) -> Comparison:
    """Cached `generate()` against a loop that re-runs the whole sequence each step (written here,
    not the project's greedy_decode, so that the reference shares no code with what it checks)."""
    out = model.generate(
        x,
        max_new_tokens=steps,
        min_new_tokens=steps,
        do_sample=False,
        output_logits=True,
        return_dict_in_generate=True,
    )
    cached_tokens, cached_logits = out.sequences[:, x.shape[1] :], torch.stack(out.logits, dim=1)
    ids, logits = x, []
    for _ in range(steps):
        last = model(ids, use_cache=False).logits[:, -1]  # [B, V]
        logits.append(last)
        ids = torch.cat([ids, last.argmax(-1, keepdim=True)], dim=1)
    tokens, logits = ids[:, x.shape[1] :], torch.stack(logits, dim=1)
    differ = (cached_tokens != tokens).any(0).nonzero()
    upto = int(differ[0]) + 1 if len(differ) else steps
    diff = (cached_logits[:, :upto] - logits[:, :upto]).abs().max().item()
    return Comparison(not len(differ), diff)


def plant_rope_off_by_one(monkeypatch) -> None:
    """A cache bug: every chunk run on a cache that already holds tokens (each decode step of
    generate(), every later prefill chunk) takes positions one too far, wherever they came from
    (generate()'s position_ids or the cache's own count). The prefix keeps its true positions, so
    the new queries see every cached key one position further away than it is."""
    real = AttnLabModel.forward

    def shifted(self, input_ids=None, inputs_embeds=None, cache=None, position_ids=None):
        if cache is not None and cache.get_seq_length() > 0:
            b, t = (input_ids if input_ids is not None else inputs_embeds).shape[:2]
            if position_ids is None:
                position_ids = cache[0].positions(b, t, self.embed_tokens.weight.device)
            position_ids = position_ids + 1
        return real(self, input_ids, inputs_embeds, cache, position_ids)

    monkeypatch.setattr(AttnLabModel, "forward", shifted)
