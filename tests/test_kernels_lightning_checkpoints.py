"""`lightning_prefill(..., state_checkpoints=...)`: the recurrent state after chosen tokens, for prefix
caching and speculative rollback. Every CPU backend (the reference, torch_chunk's native path and
its chained path, fla's naive code through the shared segment chaining) against a token-by-token
loop written here in float64; the Triton kernel is checked under the interpreter
(tests/triton_interpret_cases.py)."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from attnlab.kernels import lightning_prefill, registry
from attnlab.kernels.lightning.checkpoints import chain_segments
from attnlab.kernels.lightning.torch_chunk import _plain_prefill
from attnlab.kernels.tensors import relative_rmse

SLOPE = torch.tensor([0.9, 0.1, 0.0])  # fast, slow, and no decay at all
H, D = 3, 8
CPU = torch.device("cpu")
BACKENDS = [
    name
    for name, sol in registry.solutions("lightning_prefill").items()
    if sol.available(CPU) is None and sol.unusable_reason(CPU, torch.float32, False) is None
]  # torch, torch_chunk, and fla_naive where fla is installed


def rand(*shape, seed=0, scale=0.4):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)) * scale


def loop(q, k, v, slope, h0, bounds):
    """Independent float64 recurrence over the flattened tokens -> o [L, H, V], final [N, H, K, V],
    {flattened token index: state after it [H, K, V]}."""
    q, k, v = (x.reshape(-1, H, x.shape[-1]).double() for x in (q, k, v))
    decay = torch.exp(-slope.double())[:, None, None]
    o, finals, after = torch.zeros_like(v), [], {}
    for n, (start, end) in enumerate(bounds):
        s = torch.zeros(H, q.shape[-1], v.shape[-1], dtype=torch.float64) if h0 is None else h0[n].double()
        for i in range(start, end):
            s = decay * s + k[i][:, :, None] * v[i][:, None, :]
            o[i] = torch.einsum("hk,hkv->hv", q[i], s)
            after[i] = s
        finals.append(s)
    return o, torch.stack(finals), after


def close(a, b, tol=1e-5):
    torch.testing.assert_close(a.double(), b.double(), atol=tol, rtol=tol)


# Unpacked B=2 x T=50 (chunk 16: boundaries at 15/16, 31/32, 47/48; row 1 starts at 50) and a pack
# with an empty and a one-token sequence. Checkpoints: first tokens, last tokens, chunk boundaries,
# inside chunks, duplicates, unsorted.
CASES = {
    "unpacked": (2, 50, None, [0, 49, 15, 16, 31, 7, 50, 99, 65, 66, 7, 82]),
    "packed": (1, 100, [0, 7, 7, 8, 60, 100], [0, 6, 7, 8, 59, 60, 99, 23, 24, 23, 75, 40]),
}


def case_inputs(name, with_h0, seed=1):
    b, t, cu, points = CASES[name]
    n = b if cu is None else len(cu) - 1
    q, k, v = rand(b, t, H, D, seed=seed), rand(b, t, H, D, seed=seed + 1), rand(b, t, H, D, seed=seed + 2)
    h0 = rand(n, H, D, D, seed=seed + 3, scale=0.3) if with_h0 else None
    cu_t = None if cu is None else torch.tensor(cu)
    bounds = (
        [(i * t, (i + 1) * t) for i in range(b)] if cu is None else list(zip(cu[:-1], cu[1:], strict=True))
    )
    return (q, k, v, h0, cu_t, torch.tensor(points)), bounds


def _usable(backend, cu, points):
    call = {"cu_seqlens": cu, "state_checkpoints": points}
    return registry.solutions("lightning_prefill")[backend].supports(call) is None


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", list(CASES))
@pytest.mark.parametrize("with_h0", [True, False])
@pytest.mark.parametrize("chunk", [None, 16])
def test_states_match_a_token_loop(backend, name, with_h0, chunk):
    (q, k, v, h0, cu, points), bounds = case_inputs(name, with_h0)
    if not _usable(backend, cu, points):
        pytest.skip(f"{backend} takes no packs")
    o, final, states = lightning_prefill(
        q, k, v, SLOPE, h0, True, cu, chunk, state_checkpoints=points, backend=backend
    )
    o_ref, final_ref, after = loop(q, k, v, SLOPE, h0, bounds)
    assert states.shape == (len(points), H, D, D) and states.dtype == torch.float32
    close(states, torch.stack([after[i] for i in points.tolist()]))
    close(o.reshape(-1, H, D), o_ref)
    close(final, final_ref)
    for n, (start, end) in enumerate(bounds):  # the state at a sequence's last token is its final state
        for p, i in enumerate(points.tolist()):
            if i == end - 1 and end > start:
                close(states[p], final[n], tol=1e-6)
    # fla's naive code takes a pack only with checkpoints (by chaining): compare with the reference
    plain_backend = backend if _usable(backend, cu, None) else "torch"
    plain = lightning_prefill(q, k, v, SLOPE, h0, True, cu, chunk, backend=plain_backend)
    assert len(plain) == 2  # no checkpoints: exactly what the op returned before
    close(o, plain[0], tol=1e-6)  # the output does not change with checkpoints
    close(final, plain[1], tol=1e-6)


def test_torch_chunk_native_output_is_bitwise_the_plain_one():
    (q, k, v, h0, cu, points), _ = case_inputs("packed", True)
    o, final, _ = lightning_prefill(
        q, k, v, SLOPE, h0, True, cu, 16, state_checkpoints=points, backend="torch_chunk"
    )
    o_plain, final_plain = lightning_prefill(q, k, v, SLOPE, h0, True, cu, 16, backend="torch_chunk")
    assert torch.equal(o, o_plain) and torch.equal(final, final_plain)


@pytest.mark.parametrize("packs", [True, False])
@pytest.mark.parametrize("name", list(CASES))
def test_shared_chaining_helper(packs, name):
    """The helper every other backend uses, here around torch_chunk's plain call: packed rounds, and
    rounds as batches of equal-length segments for a backend without cu_seqlens."""
    (q, k, v, h0, cu, points), bounds = case_inputs(name, True, seed=5)
    o, final, states = chain_segments(_plain_prefill, q, k, v, SLOPE, h0, cu, 8, points, packs)
    o_ref, final_ref, after = loop(q, k, v, SLOPE, h0, bounds)
    close(states, torch.stack([after[i] for i in points.tolist()]))
    close(o.reshape(-1, H, D), o_ref)
    close(final, final_ref)


@pytest.mark.parametrize("backend", ["torch", "torch_chunk"])
def test_gradients_flow_through_the_states(backend):
    """torch_chunk chains its autograd Function when a call needs gradients through the states."""
    (q, k, v, h0, cu, points), bounds = case_inputs("packed", True, seed=9)
    w_o, w_s = rand(1, 100, H, D, seed=20), rand(len(points), H, D, D, seed=21)

    def grads(fn):
        leaves = [x.detach().clone().double().requires_grad_() for x in (q, k, v, h0)]
        o, states = fn(*leaves)
        return torch.autograd.grad((o * w_o.double()).sum() + (states * w_s.double()).sum(), leaves)

    def op(q_, k_, v_, h_):
        leaves = [x.float() for x in (q_, k_, v_, h_)]
        o, _, states = lightning_prefill(*leaves[:3], SLOPE, leaves[3], False, cu, 16, state_checkpoints=points,
                                         backend=backend)  # fmt: skip
        return o, states

    def ref(q_, k_, v_, h_):
        o, _, after = loop_autograd(q_, k_, v_, h_, bounds)
        return o, torch.stack([after[i] for i in points.tolist()])

    for g, g_ref in zip(grads(op), grads(ref), strict=True):
        close(g, g_ref, tol=1e-4)


def loop_autograd(q, k, v, h0, bounds):
    """`loop` with autograd (no in-place writes), float64."""
    decay = torch.exp(-SLOPE.double())[:, None, None]
    outs, finals, after = [], [], {}
    q, k, v = (x.reshape(-1, H, D) for x in (q, k, v))
    for n, (start, end) in enumerate(bounds):
        s = h0[n]
        for i in range(start, end):
            s = decay * s + k[i][:, :, None] * v[i][:, None, :]
            outs.append(torch.einsum("hk,hkv->hv", q[i], s))
            after[i] = s
        finals.append(s)
    return torch.stack(outs)[None], torch.stack(finals), after


def test_dispatch_and_empty_checkpoints():
    (q, k, v, h0, cu, _), _ = case_inputs("unpacked", True)
    out = lightning_prefill(q, k, v, SLOPE, h0, state_checkpoints=torch.tensor([], dtype=torch.int64))
    assert len(out) == 3 and out[1] is None and out[2].shape == (0, H, D, D)
    o, final, states = lightning_prefill(q, k, v, SLOPE, h0, state_checkpoints=torch.tensor([3]))
    assert final is None and states.shape == (1, H, D, D)


@pytest.mark.parametrize(
    "points, message",
    [
        (torch.tensor([0.0, 3.0]), r"1-D integer tensor .* \[0, 100\)"),
        (torch.tensor([[0, 3]]), r"state_checkpoints must be a 1-D integer tensor"),
        (torch.tensor([True]), r"state_checkpoints must be a 1-D integer tensor"),
        (torch.tensor([0, 100]), r"\[0, B\*T\) = \[0, 100\).*got values from 0 to 100"),
        (torch.tensor([-1, 5]), r"state_checkpoints .*got values from -1 to 5"),
        ([0, 3], r"state_checkpoints must be"),
        (torch.tensor([0, 3], device="meta"), r"state_checkpoints .* it is on meta"),
    ],
)
def test_bad_checkpoints_are_named(points, message):
    (q, k, v, h0, _, _), _ = case_inputs("unpacked", True)
    with pytest.raises(ValueError, match=message):
        lightning_prefill(q, k, v, SLOPE, h0, state_checkpoints=points)


@settings(max_examples=25, deadline=None)
@given(
    lengths=st.lists(st.integers(0, 40), min_size=1, max_size=4),
    chunk=st.sampled_from([1, 4, 16, 64]),
    picks=st.lists(st.floats(0, 1, exclude_max=True), min_size=1, max_size=8),
    with_h0=st.booleans(),
    seed=st.integers(0, 1000),
)
def test_torch_chunk_matches_the_reference_on_random_packs(lengths, chunk, picks, with_h0, seed):
    total = sum(lengths)
    if total == 0:
        return
    cu = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()])
    points = torch.tensor([int(p * total) for p in picks])
    q, k, v = (rand(1, total, H, D, seed=seed + i) for i in range(3))
    h0 = rand(len(lengths), H, D, D, seed=seed + 3, scale=0.3) if with_h0 else None
    args = (q, k, v, SLOPE, h0, True, cu, chunk)
    o, final, states = lightning_prefill(*args, state_checkpoints=points, backend="torch_chunk")
    o_ref, final_ref, states_ref = lightning_prefill(*args, state_checkpoints=points, backend="torch")
    close(states, states_ref)
    close(o, o_ref)
    close(final, final_ref)


GPU_BACKENDS = ["fla", "triton"]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="fla's and Triton's kernels need a GPU")
@pytest.mark.parametrize("backend", GPU_BACKENDS)
@pytest.mark.parametrize("name", list(CASES))
def test_gpu_backends_chain_their_own_kernel(backend, name):
    """On a GPU: fla and triton (segment chaining) against the float64 loop; fp32 runs its dots in
    TF32 there, hence the harness's fp32 tolerance."""
    sol = registry.solutions("lightning_prefill")[backend]
    cuda = torch.device("cuda")
    if sol.available(cuda) is not None:
        pytest.skip(sol.available(cuda))
    (q, k, v, h0, cu, points), bounds = case_inputs(name, True)
    args = [x if x is None else x.to(cuda) for x in (q, k, v, SLOPE, h0, cu)]
    o, final, states = lightning_prefill(*args[:5], True, args[5], 16, state_checkpoints=points.cuda(),
                                         backend=backend)  # fmt: skip
    o_ref, final_ref, after = loop(q, k, v, SLOPE, h0, bounds)
    states_ref = torch.stack([after[i] for i in points.tolist()])
    for x, ref in ((states, states_ref), (o.reshape(-1, H, D), o_ref), (final, final_ref)):
        assert relative_rmse(ref, x.cpu()) < 2e-3
