"""FFN blocks against hand-written references."""

from __future__ import annotations

import torch

from attnlab.archs.ffn import MoEFFN


def naive_moe(moe: MoEFFN, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Token by token: softmax router, top-k, renormalised weights, plus shared expert."""
    flat = x.reshape(-1, x.shape[-1])
    outs, counts, probs_sum = [], torch.zeros(moe.num_experts), torch.zeros(moe.num_experts)
    for tok in flat:
        probs = torch.softmax(moe.router(tok), -1)
        w, idx = probs.topk(moe.top_k)
        w = w / w.sum()
        y = sum(wi * moe.experts[int(i)](tok) for wi, i in zip(w, idx, strict=True))
        if moe.shared_expert is not None:
            y = y + moe.shared_expert(tok)
        outs.append(y)
        counts[idx] += 1
        probs_sum += probs
    n = flat.shape[0]
    aux = moe.num_experts * ((counts / (n * moe.top_k)) * (probs_sum / n)).sum()
    return torch.stack(outs).view_as(x), aux


def test_moe_matches_token_by_token_routing():
    torch.manual_seed(0)
    moe = MoEFFN(16, 24, num_experts=5, top_k=2, shared=True)
    x = torch.randn(2, 7, 16)
    y, aux = moe(x)
    y_ref, aux_ref = naive_moe(moe, x)
    torch.testing.assert_close(y, y_ref, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(aux, aux_ref)


def test_aux_loss_is_one_when_balanced_and_num_experts_when_collapsed():
    moe = MoEFFN(8, 8, num_experts=4, top_k=1, shared=False)
    x = torch.rand(1, 6, 8) + 0.1  # positive inputs
    with torch.no_grad():
        moe.router.weight.zero_()  # uniform router probabilities: P_e = 1/4
    assert torch.isclose(moe(x)[1], torch.tensor(1.0))
    with torch.no_grad():
        moe.router.weight[0].fill_(100.0)  # every token routed to expert 0 with p ~ 1
    assert torch.isclose(moe(x)[1], torch.tensor(4.0), atol=1e-4)
