"""Head masking for ablation: uniform attention (Wu et al.) and zeroing, on every mixer family and
on HF models through the AttentionInterface function — checked against hand-computed maps, running
means of values, and weight surgery on the output projection."""

import math

import pytest
import torch
from probes_helpers import llama_dir, one_thread  # noqa: F401
from transformers import AutoModelForCausalLM
from variants import tiny_config

from attnlab import AttnLabForCausalLM
from attnlab.archs.lightning import minimax_slopes
from attnlab.probes.decode import greedy_decode
from attnlab.probes.target import ProbeTarget

T = 6


def causal_uniform(t, window=None):
    i = torch.arange(t)[:, None]
    j = torch.arange(t)[None, :]
    allowed = (j <= i) & ((i - j < window) if window else True)
    return allowed.float() / allowed.sum(-1, keepdim=True)


def first_mixer(name, **overrides):
    torch.manual_seed(0)
    model = AttnLabForCausalLM(tiny_config(name, **overrides)).eval()
    return model, model.mixers()[0]


@pytest.mark.parametrize("name, window", [("full", None), ("mla", None), ("swa", 4)])
def test_uniform_flag_flattens_one_softmax_head_over_its_allowed_keys(name, window):
    _, mixer = first_mixer(name)
    x = torch.randn(1, T, mixer.hidden_size)
    before = mixer.attention_map(x)
    mixer.head_uniform[1] = True
    after = mixer.attention_map(x)
    torch.testing.assert_close(after[0, 1], causal_uniform(T, window))
    others = [h for h in range(mixer.num_heads) if h != 1]
    torch.testing.assert_close(after[:, others], before[:, others])


def test_uniform_flag_gives_a_lightning_head_the_pure_decay_map():
    _, mixer = first_mixer("lightning")
    x = torch.randn(1, T, mixer.hidden_size)
    mixer.head_uniform[2] = True
    s = minimax_slopes(mixer.num_heads, mixer.layer_idx, mixer.num_layers)[2].item()
    expected = torch.tensor([[math.exp(-s * (i - j)) if j <= i else 0.0 for j in range(T)] for i in range(T)])
    torch.testing.assert_close(mixer.attention_map(x)[0, 2], expected)


def test_uniform_flag_on_an_intra_layer_reaches_the_right_part():
    _, mixer = first_mixer("intra-lightning-full")  # heads 0-1 lightning, 2-3 full
    x = torch.randn(1, T, mixer.hidden_size)
    mixer.head_uniform[3] = True
    torch.testing.assert_close(mixer.attention_map(x)[0, 3], causal_uniform(T))
    assert mixer.parts[1].head_uniform.tolist() == [False, True]


def test_a_uniform_full_head_outputs_the_running_mean_of_its_values():
    _, mixer = first_mixer("full")  # 4 query heads, 2 kv heads
    x = torch.randn(2, T, mixer.hidden_size)
    positions = torch.arange(T).expand(2, T)
    mixer.head_uniform[3] = True
    o = mixer.head_outputs(x, None, positions)  # [B, T, H, D]
    v = mixer.v_proj(x).view(2, T, mixer.num_kv_heads, mixer.head_dim)[:, :, 3 // 2]  # GQA: head 3 -> kv 1
    running_mean = v.cumsum(1) / torch.arange(1, T + 1)[None, :, None]
    torch.testing.assert_close(o[:, :, 3], running_mean)


@pytest.mark.parametrize("name", ["full", "mla", "swa-sinks", "lightning", "intra-swa-full"])
def test_flagged_models_still_decode_like_their_full_forward(name):
    torch.manual_seed(0)
    model = AttnLabForCausalLM(tiny_config(name)).eval()
    for mixer in model.mixers():
        mixer.head_uniform[0] = True
    ids = torch.randint(0, 64, (1, 7))
    with torch.no_grad():
        full = model(ids, use_cache=False).logits
        out = model(ids[:, :4], use_cache=True)
        steps = [out.logits]
        cache = out.cache
        for t in range(4, 7):
            out = model(ids[:, t : t + 1], cache=cache, use_cache=True)
            cache = out.cache
            steps.append(out.logits)
    torch.testing.assert_close(torch.cat(steps, 1), full, atol=1e-5, rtol=1e-5)


def test_head_uniform_starts_false_after_init_and_load(tmp_path):
    torch.manual_seed(0)
    AttnLabForCausalLM(tiny_config("full")).save_pretrained(tmp_path)
    loaded = AttnLabForCausalLM.from_pretrained(tmp_path)
    for mixer in loaded.mixers():
        assert mixer.head_uniform.dtype == torch.bool and not mixer.head_uniform.any()
    assert all("head_uniform" not in k for k in loaded.state_dict())


def zero_o_proj_columns(o_proj, head, head_dim):
    with torch.no_grad():
        o_proj.weight[:, head * head_dim : (head + 1) * head_dim] = 0


def test_attnlab_zero_flag_equals_zeroing_the_heads_output_projection_columns():
    torch.manual_seed(0)
    model = AttnLabForCausalLM(tiny_config("full")).eval()
    ids = torch.randint(0, 64, (1, 8))
    target = ProbeTarget.wrap(model)
    with target.flags([(1, 2)], "zero"):
        flagged = target.run(ids).logits
    assert bool((model.mixers()[1].head_mask == 1).all())  # flags are cleared on exit
    mixer = model.mixers()[1]
    zero_o_proj_columns(mixer.o_proj, 2, mixer.head_dim)
    torch.testing.assert_close(flagged, target.run(ids).logits)


def test_decode_masks_only_the_decode_steps_and_clears_them():
    torch.manual_seed(0)
    target = ProbeTarget.wrap(AttnLabForCausalLM(tiny_config("full")).eval())
    prompt = torch.randint(0, 64, (10,))
    greedy_decode(target, prompt, 3, heads=[(0, 0), (1, 3)], mode="uniform")
    assert not any(m.head_uniform.any() for m in target.mixers)


def test_hf_maps_equal_eager_output_attentions(llama_dir):
    target = ProbeTarget.wrap(AutoModelForCausalLM.from_pretrained(llama_dir))  # sdpa by default
    eager = AutoModelForCausalLM.from_pretrained(llama_dir, attn_implementation="eager").eval()
    ids = torch.randint(0, 64, (2, 9))
    ours = target.run(ids, maps=True)
    with torch.no_grad():
        ref = eager(ids, output_attentions=True)
    assert target.heads_per_layer == [4, 4]
    for a, b in zip(ours.maps, ref.attentions, strict=True):
        torch.testing.assert_close(a, b)
    torch.testing.assert_close(ours.logits, ref.logits)
    assert torch.allclose(ours.maps[0].triu(1), torch.zeros(()))  # causal


def test_hf_uniform_flag_gives_a_decode_step_a_flat_row(llama_dir):
    target = ProbeTarget.wrap(AutoModelForCausalLM.from_pretrained(llama_dir))
    prompt = torch.randint(0, 64, (12,))
    decoded = greedy_decode(target, prompt, 2, maps=True, heads=[(1, 2)], mode="uniform")
    row = decoded.rows[1][1][2]  # step 2, layer 1, head 2: 13 keys
    torch.testing.assert_close(row, torch.full((13,), 1 / 13))
    assert not torch.allclose(decoded.rows[1][1][1], row)


def test_hf_zero_flag_equals_zeroing_the_heads_output_projection_columns(llama_dir):
    model = AutoModelForCausalLM.from_pretrained(llama_dir)
    target = ProbeTarget.wrap(model)
    ids = torch.randint(0, 64, (1, 8))
    with target.flags([(0, 1)], "zero"):
        flagged = target.run(ids).logits
    zero_o_proj_columns(model.model.layers[0].self_attn.o_proj, 1, 8)
    torch.testing.assert_close(flagged, target.run(ids).logits)
