"""Greedy decoding, the one loop every job uses (the demo's check, the eval suite, the probes).

    out = greedy_decode(model, ids, steps)                      # generate() with the model's cache
    ref = greedy_decode(model, ids, steps, use_cache=False)     # the whole prefix re-run each step
    out.tokens [B, n], out.logits [B, n, V] (output_logits=True): n = steps, or fewer with stop_at_eos

Three ways to run the same greedy choice, so that they can be checked against each other:

- cached (default): Hugging Face `generate()`, the path users call, with the model's own cache;
- `use_cache=False`: each step re-runs the whole sequence, the reference a cache bug cannot reach;
- `step=`: an explicit cached loop that prefills all but the last prompt token and then feeds one
  token per call, so every generated token comes from a single-query forward (probes read that
  query's attention row and mask heads on those calls only).

Prompts are unpadded rows of equal length (attnlab models refuse left padding). Works on any
Hugging Face causal LM, not only attnlab's.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

# step(ids [B, t], cache or None) -> (logits [B, t, V], cache): one forward continuing `cache`
Step = Callable[[torch.Tensor, object], tuple[torch.Tensor, object]]


@dataclass
class GreedyOutput:
    tokens: torch.Tensor  # [B, n] generated ids (after a row's end-of-sequence token: the pad id)
    logits: torch.Tensor | None  # [B, n, V] the logits each token was chosen from (output_logits)


@torch.no_grad()
def greedy_decode(
    model,
    input_ids: torch.Tensor,
    steps: int,
    *,
    use_cache: bool = True,
    step: Step | None = None,
    stop_at_eos: bool = False,
    pad_token_id: int | None = None,
    output_logits: bool = False,
) -> GreedyOutput:
    """`steps` greedy tokens after `input_ids` [B, T]. With `stop_at_eos`, a row that produced one
    of the model's end-of-sequence ids (`model.generation_config.eos_token_id`) continues with
    `pad_token_id` (default 0) and decoding ends once every row has; without it, exactly `steps`
    tokens whatever they are (a check compares the same number of tokens on every path)."""
    eos = eos_ids(model) if stop_at_eos else []
    pad = 0 if pad_token_id is None else pad_token_id
    if steps == 0:
        return GreedyOutput(input_ids.new_zeros((input_ids.shape[0], 0)), None)
    if use_cache and step is None:
        return _generate(model, input_ids, steps, eos, pad, output_logits)
    if use_cache:
        if input_ids.shape[1] < 2:
            raise ValueError("the step loop prefills all but the last prompt token: give at least two")
        return _loop(input_ids, steps, _cached_calls(step, input_ids), eos, pad, output_logits)
    return _loop(input_ids, steps, _calls_without_cache(model, input_ids), eos, pad, output_logits)


def eos_ids(model) -> list[int]:
    config = getattr(model, "generation_config", None) or model.config
    eos = getattr(config, "eos_token_id", None)
    return [] if eos is None else list(eos) if isinstance(eos, (list, tuple)) else [eos]


def _generate(model, ids, steps, eos, pad, output_logits) -> GreedyOutput:
    out = model.generate(
        input_ids=ids,
        attention_mask=torch.ones_like(ids),  # never inferred from the pad id, which a prompt may hold
        max_new_tokens=steps,
        min_new_tokens=0 if eos else steps,
        eos_token_id=eos or None,
        pad_token_id=pad,
        do_sample=False,
        output_logits=output_logits,
        return_dict_in_generate=True,
    )
    logits = torch.stack(out.logits, dim=1) if output_logits else None  # steps x [B, V] -> [B, n, V]
    return GreedyOutput(out.sequences[:, ids.shape[1] :], logits)


def _calls_without_cache(model, ids):
    """Yields the next-token logits [B, V] of the sequence so far, re-running all of it each time."""
    while True:
        nxt = yield model(input_ids=ids, use_cache=False).logits[:, -1]
        ids = torch.cat([ids, nxt[:, None].to(ids.device)], dim=1)


def _cached_calls(step: Step, ids):
    """The same through `step`: the prompt but its last token once, then one token per call."""
    _, cache = step(ids[:, :-1], None)
    token = ids[:, -1:]
    while True:
        logits, cache = step(token, cache)
        nxt = yield logits[:, -1]
        token = nxt[:, None].to(ids.device)


def _loop(ids, steps, calls, eos, pad, output_logits) -> GreedyOutput:
    """Greedy choice over `calls` (a generator of next-token logits [B, V], sent each choice)."""
    eos = torch.tensor(eos, dtype=torch.long, device=ids.device)
    finished = torch.zeros(ids.shape[0], dtype=torch.bool, device=ids.device)
    tokens, logits = [], []
    last = next(calls)
    for i in range(steps):
        nxt = last.argmax(-1).to(ids.device)
        nxt = torch.where(finished, torch.full_like(nxt, pad), nxt)  # as generate() pads ended rows
        tokens.append(nxt)
        logits.append(last)
        finished |= torch.isin(nxt, eos)
        if bool(finished.all()) or i == steps - 1:
            break
        last = calls.send(nxt)
    return GreedyOutput(torch.stack(tokens, dim=1), torch.stack(logits, dim=1) if output_logits else None)
