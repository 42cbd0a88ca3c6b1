"""archs.greedy_decode, the one greedy loop (the demo, the eval suite and the probes use it): its
three paths — generate() with the cache, the no-cache loop, the explicit step loop — choose the
tokens of an independent no-cache argmax loop, with logits within fp32 noise, and stop at the
end-of-sequence token the way generate() does."""

from __future__ import annotations

import pytest
import torch
from cache_checks import LOGIT_ATOL, peaked_model

from attnlab.archs import greedy_decode

STEPS = 8


@torch.no_grad()
def reference(model, x: torch.Tensor, steps: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Greedy tokens [B, steps] and their logits [B, steps, V], re-running the sequence each step."""
    ids, logits = x, []
    for _ in range(steps):
        logits.append(model(ids, use_cache=False).logits[:, -1])
        ids = torch.cat([ids, logits[-1].argmax(-1, keepdim=True)], dim=1)
    return ids[:, x.shape[1] :], torch.stack(logits, dim=1)


def model_step(model):
    """The plain cached forward, as a `step` for the explicit loop."""

    def step(ids, cache):
        cache = model.new_cache(ids.shape[0]) if cache is None else cache
        return model(ids, cache=cache).logits, cache

    return step


def paths(model) -> dict[str, dict]:
    return {"generate": {}, "no cache": {"use_cache": False}, "step": {"step": model_step(model)}}


@pytest.mark.parametrize("name", ["full", "mla", "lightning", "hybrid-1to1", "intra-lightning-full"])
def test_every_path_gives_the_reference_tokens_and_logits(name):
    model = peaked_model(name)
    x = torch.randint(0, 64, (2, 6))
    tokens, logits = reference(model, x, STEPS)
    for path, options in paths(model).items():
        out = greedy_decode(model, x, STEPS, output_logits=True, **options)
        assert torch.equal(out.tokens, tokens), path
        assert (out.logits - logits).abs().max().item() <= LOGIT_ATOL, path
        assert greedy_decode(model, x, STEPS, **options).logits is None, path


def test_stop_at_eos_pads_finished_rows_and_ends_when_every_row_has():
    model = peaked_model("hybrid-1to1")
    x = torch.randint(0, 64, (2, 6))
    tokens, _ = reference(model, x, STEPS)
    eos, pad = int(tokens[1, 2]), 63
    model.generation_config.eos_token_id = eos
    expected = []
    for row in tokens.tolist():  # each row: up to its first eos, then pad
        end = row.index(eos) + 1 if eos in row else len(row)
        expected.append(row[:end] + [pad] * (len(row) - end))
    done = max(row.index(eos) + 1 if eos in row else STEPS for row in tokens.tolist())
    expected = torch.tensor(expected)[:, :done]
    assert done < STEPS and pad in expected[1].tolist()  # this prompt ends early, with a padded row
    for path, options in paths(model).items():
        out = greedy_decode(model, x, STEPS, stop_at_eos=True, pad_token_id=pad, **options)
        assert torch.equal(out.tokens, expected), path
        assert torch.equal(greedy_decode(model, x, STEPS, **options).tokens, tokens), path  # eos ignored


def test_zero_steps_give_no_tokens():
    model = peaked_model("full")
    out = greedy_decode(model, torch.randint(0, 64, (3, 4)), 0)
    assert out.tokens.shape == (3, 0)
