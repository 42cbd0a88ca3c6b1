"""Model-level invariants for every mixer family and the hybrids.

References are independent of the cached path: the plain full-sequence forward without a cache,
and a greedy decoding loop that re-runs the whole prefix each step (tests/cache_checks.py, which
also plants a cache bug to show the comparison catches it).
"""

from __future__ import annotations

import pytest
import torch
from cache_checks import LOGIT_ATOL, generate_against_no_cache, peaked_model, plant_rope_off_by_one
from transformers import AutoModelForCausalLM
from variants import VARIANTS, tiny_config

from attnlab import AttnLabForCausalLM

NAMES = list(VARIANTS)


def build(name: str, dtype=torch.float32, seed: int = 0, **overrides) -> AttnLabForCausalLM:
    torch.manual_seed(seed)
    return AttnLabForCausalLM(tiny_config(name, **overrides)).to(dtype).eval()


def random_splits(total: int, gen: torch.Generator) -> list[int]:
    cuts = sorted(torch.randperm(total - 1, generator=gen)[:3].add(1).tolist())
    bounds = [0, *cuts, total]
    return [b - a for a, b in zip(bounds, bounds[1:], strict=False) if b > a]


@pytest.mark.parametrize("name", NAMES)
def test_causal(name):
    model = build(name)
    x = torch.randint(0, 64, (2, 13))
    y = x.clone()
    y[:, 7:] = torch.randint(0, 64, (2, 6))
    with torch.no_grad():
        a = model(x, use_cache=False).logits
        b = model(y, use_cache=False).logits
    torch.testing.assert_close(a[:, :7], b[:, :7], rtol=0, atol=1e-6)
    assert (a[:, 7:] - b[:, 7:]).abs().max() > 1e-4  # the future does reach later positions


@pytest.mark.parametrize("name", NAMES)
def test_prefill_chunks_and_decode_equal_full_forward(name):
    model = build(name)
    gen = torch.Generator().manual_seed(1)
    x = torch.randint(0, 64, (2, 17), generator=gen)
    with torch.no_grad():
        full = model(x, use_cache=False).logits
        for _ in range(3):
            cache, outs, at = model.new_cache(2), [], 0
            for n in random_splits(x.shape[1], gen):
                outs.append(model(x[:, at : at + n], cache=cache).logits)
                at += n
            assert (torch.cat(outs, 1) - full).abs().max().item() <= 1e-5
        cache = model.new_cache(2)
        steps = [model(x[:, i : i + 1], cache=cache).logits for i in range(x.shape[1])]
    assert (torch.cat(steps, 1) - full).abs().max().item() <= 1e-5
    assert cache.get_seq_length() == x.shape[1]


@pytest.mark.parametrize("name", NAMES)
def test_gradients_are_finite_and_reach_every_parameter(name):
    model = build(name).train()
    x = torch.randint(0, 64, (2, 11))
    model(x, labels=x).loss.backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None, pname
        assert torch.isfinite(p.grad).all(), pname
    assert any(p.grad.abs().sum() > 0 for p in model.parameters())


@pytest.mark.parametrize("name", NAMES)
def test_gradcheck_float64(name):
    model = build(
        name,
        dtype=torch.float64,
        hidden_size=8,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=4,
        intermediate_size=8,
    )
    emb = torch.randn(1, 5, 8, dtype=torch.float64, requires_grad=True)

    def f(e):
        return model(inputs_embeds=e, use_cache=False).logits

    assert torch.autograd.gradcheck(f, (emb,), eps=1e-6, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("name", NAMES)
def test_state_bytes_equal_cache_bytes_after_prefill(name):
    model = build(name)
    for seq_len in (1, 5, 19):
        x = torch.randint(0, 64, (3, seq_len))
        cache = model.new_cache(3)
        with torch.no_grad():
            model(x, cache=cache)
        assert cache.nbytes() == 3 * model.state_bytes(seq_len, torch.float32), seq_len


@pytest.mark.parametrize("name", NAMES)
def test_save_load_round_trip_gives_identical_logits(name, tmp_path):
    model = build(name)
    x = torch.randint(0, 64, (2, 9))
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").exists()
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path).eval()  # through the Auto registration
    assert isinstance(loaded, AttnLabForCausalLM)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x).logits, model(x).logits, rtol=0, atol=0)


@pytest.mark.parametrize("name", NAMES)
def test_cached_generate_equals_greedy_loop_without_cache(name):
    """Tokens and every step's logits, on weights peaked enough that a position error shows."""
    model = peaked_model(name)
    x = torch.randint(0, 64, (2, 6))
    comparison = generate_against_no_cache(model, x, 10)
    assert comparison.tokens_equal
    assert comparison.max_abs_logit_diff <= LOGIT_ATOL


@pytest.mark.parametrize("name", [n for n in NAMES if n != "lightning"])  # lightning has no positions
def test_a_rope_off_by_one_on_cached_chunks_fails_the_generate_comparison(name, monkeypatch):
    """Negative control for the test above: with every cached chunk's positions one too far, the
    comparison fails; the argmax-only comparison on default-init weights that it replaced still
    passes, which is why it compares logits on peaked weights."""
    plant_rope_off_by_one(monkeypatch)
    old_model = build(name)
    x = torch.randint(0, 64, (2, 6))  # the old test's model and prompts, drawn as it drew them
    assert generate_against_no_cache(old_model, x, 10).tokens_equal  # the old check: fooled
    assert not generate_against_no_cache(peaked_model(name), x, 10).passes


def test_cache_is_accepted_as_cache_or_past_key_values():
    model = build("hybrid-1to1")
    x = torch.randint(0, 64, (1, 8))
    with torch.no_grad():
        full = model(x, use_cache=False).logits
        a, b = model.new_cache(1), model.new_cache(1)
        model(x[:, :5], cache=a)
        model(x[:, :5], past_key_values=b)
        out_a = model(x[:, 5:], cache=a)
        out_b = model(x[:, 5:], past_key_values=b)
    torch.testing.assert_close(out_a.logits, full[:, 5:], rtol=0, atol=1e-5)
    torch.testing.assert_close(out_b.logits, full[:, 5:], rtol=0, atol=1e-5)
    assert a.get_seq_length() == b.get_seq_length() == 8


def test_one_cache_object_holds_each_layers_kind_of_state():
    model = build("intra-lightning-full", num_hidden_layers=2)
    cache = model.new_cache(1)
    assert [s.kind for s in cache.states] == ["composite", "composite"]
    assert [p.kind for p in cache.states[0].parts] == ["recurrent", "kv"]
    model7 = build("hybrid-7to1")
    assert [s.kind for s in model7.new_cache(1).states] == ["recurrent"] * 7 + ["kv"]


def test_left_padding_is_refused_with_a_clear_error():
    model = build("full")
    x = torch.randint(0, 64, (2, 5))
    mask = torch.tensor([[0, 1, 1, 1, 1], [1, 1, 1, 1, 1]])
    with pytest.raises(ValueError, match="left padding"):
        model(x, attention_mask=mask)
    model(x, attention_mask=torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]]))  # right padding is fine


def test_moe_returns_a_load_balancing_loss_added_to_the_task_loss():
    model = build("full", ffn="moe", num_experts=4, num_experts_per_tok=2, shared_expert=True).train()
    x = torch.randint(0, 64, (2, 9))
    out = model(x, labels=x)
    plain = torch.nn.functional.cross_entropy(out.logits[:, :-1].flatten(0, 1), x[:, 1:].flatten())
    assert out.aux_loss > 0
    torch.testing.assert_close(out.loss, plain + model.config.router_aux_loss_coef * out.aux_loss)
