"""state_store / state_load (kernels/state/ops.py): error bounds per storage dtype, hand-computed
int8 codes, saturation, unbiased stochastic rounding, and the C backend bit-for-bit against the
torch reference (the Triton one: tests/triton_interpret_cases.py)."""

from __future__ import annotations

import pytest
import torch

from attnlab.kernels import state_group, state_load, state_store, stored_state_bytes
from attnlab.kernels.state.c import library
from attnlab.kernels.state.ops import hash_uniform

FORMATS = [
    ("bf16", "nearest", None),
    ("bf16", "stochastic", None),
    ("fp16", "nearest", None),
    ("fp16", "stochastic", None),
    ("int8", "nearest", (1, 64)),
    ("int8", "stochastic", (1, 64)),
    ("int8", "nearest", (32, 32)),
    ("int8", "stochastic", (16, 32)),
]


def state(seed=0, n=3):
    """[n, 2, 32, 64] with rows spread over ~4 orders of magnitude (as a decayed running sum's are)."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 2, 32, 64, generator=g) * torch.exp(torch.randn(n, 2, 32, 1, generator=g) * 2)


@pytest.mark.parametrize("dtype, rounding, group", FORMATS)
def test_round_trip_error_within_the_stated_bound(dtype, rounding, group):
    x = state()
    values, scales = state_store(x, dtype, rounding, group, seed=5, backend="torch")
    back = state_load(values, scales, group, backend="torch")
    err = (back - x).abs()
    one = 2.0 if rounding == "stochastic" else 1.0  # a whole grid step, or half of one
    if dtype == "int8":
        gk, gv = group
        step = scales.repeat_interleave(gk, 2).repeat_interleave(gv, 3)  # [N, H, K, V]
        assert (err <= step * one / 2 * (1 + 1e-6)).all()
        assert values.dtype == torch.int8 and values.abs().max() <= 127
    else:
        # Half a step is 2^-(significand bits) relative, and at least half the smallest step
        # (fp16's subnormal 2^-24, bf16's 2^-126) near zero.
        bits, smallest = {"bf16": (8, 2.0**-126), "fp16": (11, 2.0**-24)}[dtype]
        assert (err <= one * torch.maximum(x.abs() * 2.0**-bits, torch.tensor(smallest / 2))).all()
    assert err.max() > 0  # the test can fail: storage does lose something


def test_fp32_storage_is_exact_and_bytes_follow_the_dtype():
    x = state()
    values, scales = state_store(x, "fp32")
    assert scales is None and torch.equal(state_load(values), x)
    assert stored_state_bytes(2, 32, 64, "fp32") == 2 * 32 * 64 * 4
    assert stored_state_bytes(2, 32, 64, "bf16") == 2 * 32 * 64 * 2
    assert stored_state_bytes(2, 32, 64, "int8", "row") == 2 * 32 * 64 + 2 * 32 * 4  # + a scale per row
    assert stored_state_bytes(2, 32, 64, "int8", "block") == 2 * 32 * 64 + 2 * 1 * 2 * 4  # + one per 32x32
    assert state_group(32, 64, "row") == (1, 64) and state_group(32, 48, "block") == (32, 48)


def test_int8_codes_by_hand():
    # One row, amax 1: scale 1/127; nearest = floor(127 x + 1/2).
    x = torch.tensor([1.0, -0.5, 0.25, 0.0, -1.0, 0.3]).view(1, 1, 1, 6)
    values, scales = state_store(x, "int8", group=(1, 6), backend="torch")
    assert scales.item() == pytest.approx(1 / 127)
    assert values.flatten().tolist() == [127, -63, 32, 0, -127, 38]  # -63.5 -> -63, 31.75 -> 32, 38.1 -> 38
    zero, zscale = state_store(torch.zeros(1, 1, 2, 2), "int8", group=(1, 2))
    assert zscale.eq(0).all() and state_load(zero, zscale, (1, 2)).eq(0).all()


def test_16_bit_storage_saturates_instead_of_overflowing():
    x = torch.tensor([1e5, -7e4, 3e38, 1.0]).view(1, 1, 1, 4)
    for rounding in ("nearest", "stochastic"):
        fp16, _ = state_store(x, "fp16", rounding)
        assert torch.isfinite(fp16).all() and fp16[0, 0, 0, :2].tolist() == [65504.0, -65504.0]
        bf16, _ = state_store(x, "bf16", rounding)
        assert torch.isfinite(bf16).all()


@pytest.mark.parametrize("dtype, group", [("bf16", None), ("fp16", None), ("int8", (1, 4))])
def test_stochastic_rounding_is_unbiased_and_nearest_is_not(dtype, group):
    # Values a quarter of a grid step above a grid point: nearest always rounds them down (bias
    # -1/4 step); stochastic rounding's mean over seeds converges to the value.
    if dtype == "int8":
        x = torch.tensor([127.0, 10.25, -20.25, 3.25]).view(1, 1, 1, 4)  # scale 1: grid = integers
    else:
        step = 2.0**-7 if dtype == "bf16" else 2.0**-10
        x = torch.tensor([1 + step / 4, 1.5 + step / 4, -(1 + step / 4), 1.25 + step / 4]).view(1, 1, 1, 4)
    draws = 4000
    stochastic = torch.stack(
        [state_load(*state_store(x, dtype, "stochastic", group, seed), group) for seed in range(draws)]
    )
    nearest = state_load(*state_store(x, dtype, "nearest", group), group)
    unit = 1.0 if dtype == "int8" else (2.0**-7 if dtype == "bf16" else 2.0**-10)
    # Per element a Bernoulli(1/4) step: the mean's standard error is sqrt(3/16 / draws) steps.
    sigma = (3 / 16 / draws) ** 0.5 * unit
    bias = (stochastic.mean(0) - x).abs()[..., 1:]
    assert (bias < 5 * sigma).all(), bias / sigma
    assert ((nearest - x).abs()[..., 1:] > 0.2 * unit).all()  # nearest: off by 1/4 step every time


def test_hash_noise_is_uniform_and_changes_with_the_seed():
    u = hash_uniform(3, 200_000, "cpu")
    assert 0 <= u.min() and u.max() < 1
    assert abs(u.mean().item() - 0.5) < 0.005 and abs(u.var().item() - 1 / 12) < 0.002
    assert not torch.equal(u[:100], hash_uniform(4, 100, "cpu"))


@pytest.mark.skipif(library()[0] is None, reason="no C compiler here")
@pytest.mark.parametrize("dtype, rounding, group", FORMATS)
def test_c_backend_equals_the_reference_bit_for_bit(dtype, rounding, group):
    x = state(seed=1)
    x[0, 0, 0, :3] = torch.tensor([7e4, -1e5, 1e-40])  # saturation and an fp32 subnormal
    ref = state_store(x, dtype, rounding, group, seed=11, backend="torch")
    out = state_store(x, dtype, rounding, group, seed=11, backend="c")
    assert torch.equal(out[0].view(torch.uint8), ref[0].view(torch.uint8))
    assert (ref[1] is None and out[1] is None) or torch.equal(out[1], ref[1])
    assert torch.equal(state_load(*out, group, backend="c"), state_load(*ref, group, backend="torch"))


def test_bad_arguments_name_what_is_allowed():
    x = state()
    with pytest.raises(ValueError, match="dtype = 'int4'; allowed: fp32, bf16, fp16, int8"):
        state_store(x, "int4")
    with pytest.raises(ValueError, match="rounding = 'up'; allowed: nearest, stochastic"):
        state_store(x, "bf16", "up")
    with pytest.raises(ValueError, match=r"group = \(5, 64\): must be \(gk, gv\) dividing"):
        state_store(x, "int8", group=(5, 64))
    with pytest.raises(ValueError, match="int8 values need their scales"):
        state_load(torch.zeros(1, 1, 2, 2, dtype=torch.int8))
