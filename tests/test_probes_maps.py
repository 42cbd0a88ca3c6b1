"""Attention-map capture for attnlab models: what the probes read, for every mixer family."""

import math

import pytest
import torch
from probes_helpers import one_thread  # noqa: F401
from variants import tiny_config

from attnlab import AttnLabForCausalLM
from attnlab.kernels import lightning_implied_map
from attnlab.probes import ProbeSettings, ProbeTarget, get_probe, probe_names
from attnlab.probes.decode import greedy_decode


def target_for(name):
    torch.manual_seed(0)
    return ProbeTarget.wrap(AttnLabForCausalLM(tiny_config(name)).eval())


@pytest.mark.parametrize(
    "name", ["full", "swa-sinks", "mla", "lightning", "intra-lightning-full", "hybrid-7to1"]
)
def test_decode_step_rows_equal_the_last_rows_of_the_full_sequence_map(name):
    target = target_for(name)
    prompt = torch.randint(0, 64, (9,))
    decoded = greedy_decode(target, prompt, 3, maps=True)
    full = torch.cat([prompt, torch.tensor(decoded.tokens[:-1])])  # the 11 tokens the 3 steps saw
    maps = target.run(full[None], maps=True).maps
    for step, rows in enumerate(decoded.rows):
        query = len(prompt) - 1 + step
        for layer, row in enumerate(rows):
            torch.testing.assert_close(row, maps[layer][0, :, query, : query + 1], atol=1e-5, rtol=1e-4)


def test_lightning_maps_are_the_implied_map_of_each_layers_input():
    target = target_for("lightning")
    ids = torch.randint(0, 64, (2, 7))
    captured = []
    mixer = target.mixers[1]
    handle = mixer.register_forward_pre_hook(lambda m, args: captured.append(args[0]))
    maps = target.run(ids, maps=True).maps
    handle.remove()
    q, k, _ = mixer.project(captured[0])
    torch.testing.assert_close(maps[1], lightning_implied_map(q, k, mixer.slope(q.device)).float())
    assert (maps[1] < 0).any() or (maps[1].sum(-1) != 1).any()  # signed / unnormalised, not softmax


def test_softmax_maps_are_causal_distributions():
    target = target_for("full")
    maps = target.run(torch.randint(0, 64, (2, 7)), maps=True).maps
    for m in maps:
        torch.testing.assert_close(m.sum(-1), torch.ones(m.shape[:-1]))
        assert torch.all(m.triu(1) == 0)


def test_a_lightning_only_model_is_scored_by_every_probe_without_error():
    target = target_for("lightning")
    settings = ProbeSettings(
        batch=2,
        seq_len=8,
        prefix_len=4,
        niah_lengths=2,
        niah_depths=2,
        niah_needles=1,
        max_context=32,
        progress=False,
    )
    for name in probe_names():
        result = get_probe(name).score(target, settings)
        assert [len(row) for row in result.scores] == target.heads_per_layer
        assert all(math.isfinite(s) for row in result.scores for s in row), name
