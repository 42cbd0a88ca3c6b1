"""Recurrent states at chosen tokens of a lightning prefill (`state_checkpoints`), for any backend.

Prefix caching needs the state exactly at a block boundary inside a prompt, and speculative
decoding with rollback needs the state after each verified draft token; both ask the prefill for
the state AFTER token i of its sequence, for a list of indices i into the flattened token order
(row b, token t of an unpacked [B, T] batch is b*T + t; a pack is its one row of T tokens).

A backend that keeps its own per-chunk states answers natively (`torch_chunk`). Any other backend
gets the answer from its own kernel by **segment chaining** (`chain_segments`): each sequence is cut
after its checkpoints, and round r runs the r-th segment of every sequence that has one, as one
packed call (`cu_seqlens`) whose initial states are the states the previous round left; the final
state of a segment that ends at a checkpoint is that checkpoint's state. A round is one call of the
backend, so the cost is one launch per segment depth (k rounds of one token each for a k-token
speculative verify). The chain is made of the backend's own differentiable calls and of
cat / index ops, so gradients flow through the checkpoint states wherever the backend has a backward.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch

from ..tensors import compute_dtype


def check_state_checkpoints(state_checkpoints, b: int, t: int, device: torch.device) -> None:
    """A 1-D integer tensor of flattened token indices in [0, B*T), on the inputs' device."""
    allowed = f"a 1-D integer tensor of token indices in [0, B*T) = [0, {b * t}) on {device}"
    if not isinstance(state_checkpoints, torch.Tensor):
        raise ValueError(
            f"lightning_prefill: state_checkpoints must be {allowed}; got {type(state_checkpoints)}"
        )
    x = state_checkpoints
    if x.dim() != 1 or x.dtype.is_floating_point or x.dtype.is_complex or x.dtype == torch.bool:
        raise ValueError(
            f"lightning_prefill: state_checkpoints must be {allowed}; got {tuple(x.shape)} {x.dtype}"
        )
    if x.device != device:
        raise ValueError(f"lightning_prefill: state_checkpoints must be {allowed}; it is on {x.device}")
    if x.numel() and (int(x.min()) < 0 or int(x.max()) >= b * t):
        raise ValueError(
            f"lightning_prefill: state_checkpoints must be {allowed}; "
            f"got values from {int(x.min())} to {int(x.max())}"
        )


def sequence_bounds(b: int, t: int, cu_seqlens: torch.Tensor | None) -> list[tuple[int, int]]:
    """(start, end) of each of the N sequences in the flattened token order."""
    if cu_seqlens is None:
        return [(i * t, (i + 1) * t) for i in range(b)]
    cu = cu_seqlens.tolist()
    return list(zip(cu[:-1], cu[1:], strict=True))


def locate(state_checkpoints: torch.Tensor, t: int, cu_seqlens: torch.Tensor | None):
    """Flattened indices [P] -> (sequence [P], position inside it [P]), both int64 on their device."""
    idx = state_checkpoints.to(torch.int64)
    if cu_seqlens is None:
        return idx // t, idx % t
    cu = cu_seqlens.to(device=idx.device, dtype=torch.int64)
    # right=True: an index equal to a start belongs to the sequence starting there (skips empty ones).
    seq = torch.searchsorted(cu, idx, right=True) - 1
    return seq, idx - cu[seq]


def _segments(bounds: list[tuple[int, int]], cuts: list[int]) -> list[list[tuple[int, int]]]:
    """Per sequence, its segments (lo, hi): the tokens are cut after every checkpoint inside it."""
    out = []
    for start, end in bounds:
        edges = [start, *(c + 1 for c in cuts if start <= c < end), end]
        out.append([(lo, hi) for lo, hi in zip(edges[:-1], edges[1:], strict=True) if hi > lo])
    return out


def _span_index(spans: list[tuple[int, int]], device) -> tuple[torch.Tensor, torch.Tensor]:
    """-> the token indices of `spans`, concatenated [L], and their cu_seqlens [M + 1]: built on the
    CPU in a few vector ops (not one arange per span) and moved to `device` once."""
    lo = torch.tensor([a for a, _ in spans])
    lens = torch.tensor([b - a for a, b in spans])
    cu = torch.cat([lens.new_zeros(1), lens.cumsum(0)])
    idx = torch.arange(int(cu[-1])) + torch.repeat_interleave(lo - cu[:-1], lens)
    return idx.to(device), cu.to(device)


def _run_group(prefill, q, k, v, slope, h0, spans, chunk_size, packs: bool):
    """One call of the backend over `spans` (lo, hi) of the flattened [1, B*T] tokens.

    -> o [1, L, H, V] in token order of the spans, final [M, H, K, V], the token indices [L]. A
    backend that cannot take packs (`packs=False`) gets the spans as rows of one [M, L/M, ...]
    batch; they share a length."""
    idx, cu = _span_index(spans, q.device)
    if packs:
        o, final = prefill(q[:, idx], k[:, idx], v[:, idx], slope, h0, True, cu, chunk_size)
        return o, final, idx
    m = len(spans)
    rows = [x[0, idx].view(m, -1, *x.shape[2:]) for x in (q, k, v)]  # [M, L/M, H, D]
    o, final = prefill(*rows, slope, h0, True, None, chunk_size)
    return o.reshape(1, -1, *o.shape[2:]), final, idx


def _rounds(segments: list[list[tuple[int, int]]], packs: bool):
    """-> per call: [(sequence, (lo, hi)), ...]. Round r holds the r-th segment of every sequence;
    without packs a round splits into groups of equal length."""
    depth = max((len(s) for s in segments), default=0)
    for r in range(depth):
        members = [(n, s[r]) for n, s in enumerate(segments) if len(s) > r]
        if packs:
            yield members
            continue
        by_len: dict[int, list] = {}
        for n, (lo, hi) in members:
            by_len.setdefault(hi - lo, []).append((n, (lo, hi)))
        yield from by_len.values()


def chain_segments(
    prefill: Callable,
    q, k, v, slope, initial_state, cu_seqlens, chunk_size, state_checkpoints: torch.Tensor,
    packs: bool = True,
):  # fmt: skip
    """Segment chaining with `prefill` (a backend's plain prefill) -> o, final [N, H, K, V], states [P, H, K, V].

    Each round is one call of `prefill` with output_final_state=True; the state each sequence
    carries between rounds is the previous segment's final state."""
    b, t, h, dk = q.shape
    dv = v.shape[-1]
    flat = [x.reshape(1, b * t, h, x.shape[-1]) for x in (q, k, v)]  # views: [1, B*T, H, D]
    wanted = state_checkpoints.tolist()
    cuts = sorted(set(wanted))
    bounds = sequence_bounds(b, t, cu_seqlens)
    dtype = compute_dtype(q, k, v)
    if initial_state is None:
        current = [torch.zeros(h, dk, dv, dtype=dtype, device=q.device) for _ in bounds]
    else:
        current = list(initial_state.to(torch.promote_types(dtype, initial_state.dtype)).unbind(0))
    at_cut: dict[int, torch.Tensor] = {}
    outs, order = [], []
    cut_set = set(cuts)
    for members in _rounds(_segments(bounds, cuts), packs):
        spans = [span for _, span in members]
        h0 = torch.stack([current[n] for n, _ in members])  # [M, H, K, V]
        o, final, idx = _run_group(prefill, *flat, slope, h0, spans, chunk_size, packs)
        outs.append(o)
        order.append(idx)
        for j, (n, (_, hi)) in enumerate(members):
            current[n] = final[j]
            if hi - 1 in cut_set:
                at_cut[hi - 1] = final[j]
    state_dtype = current[0].dtype if current else dtype
    if outs:
        o = torch.cat(outs, dim=1)[:, torch.argsort(torch.cat(order))]  # back to token order
    else:
        o = v.new_zeros(1, 0, h, dv)
    o = o.reshape(*v.shape[:3], dv)
    final = torch.stack(current) if current else q.new_zeros(0, h, dk, dv, dtype=state_dtype)
    states = torch.stack([at_cut[i] for i in wanted]) if wanted else final.new_zeros(0, h, dk, dv)
    return o, final, states  # [B, T, H, V], [N, H, K, V], [P, H, K, V]


def with_checkpoints(prefill: Callable, packs: bool = True) -> Callable:
    """A backend's plain prefill -> one that also takes `state_checkpoints`, by segment chaining.

    Without checkpoints it is the plain call, unchanged. `packs=False` for a backend that has no
    cu_seqlens (each round then runs as batches of equal-length segments)."""

    @functools.wraps(prefill)
    def run(
        q, k, v, slope, initial_state=None, output_final_state=False, cu_seqlens=None, chunk_size=None,
        state_checkpoints=None,
    ):  # fmt: skip
        if state_checkpoints is None:
            return prefill(q, k, v, slope, initial_state, output_final_state, cu_seqlens, chunk_size)
        o, final, states = chain_segments(
            prefill, q, k, v, slope, initial_state, cu_seqlens, chunk_size, state_checkpoints, packs
        )
        return o, (final if output_final_state else None), states

    return run
