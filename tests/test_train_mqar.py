"""MQAR generator (evals/mqar.py) against a brute-force reader of the sequence: every labelled answer
follows from the context alone, the layout and vocab ranges are Zoology's, and seeds reproduce."""

from __future__ import annotations

import pytest
import torch

from attnlab.evals.mqar import mqar


def solve_by_reading(ids: list[int], context_len: int, query_pos: int, vocab_size: int) -> tuple[int, int]:
    """Follow links from the query key through the context pairs until a value-range token: -> (answer, hops)."""
    table = {}
    for i in range(0, context_len, 2):
        assert ids[i] not in table, "a key appears twice in the context"
        table[ids[i]] = ids[i + 1]
    token, hops = ids[query_pos], 0
    while token < vocab_size // 2:
        token, hops = table[token], hops + 1
    return token, hops


@pytest.mark.parametrize("hops", [1, 2, 3])
def test_every_answer_is_recovered_by_reading_the_context(hops):
    n, seq_len, kv, vocab = 64, 96, 6, 128
    ids, labels = mqar(n, seq_len, kv, vocab, seed=3, hops=hops)
    assert ids.shape == labels.shape == (n, seq_len) and ids.dtype == labels.dtype == torch.int64
    context = 2 * kv * hops
    for row_ids, row_labels in zip(ids.tolist(), labels.tolist(), strict=True):
        answers = [t for t, y in enumerate(row_labels) if y != -100]
        assert len(answers) == kv  # each chain is queried exactly once
        assert all(t >= context + 1 and (t - context) % 2 == 1 for t in answers)
        for t in answers:
            assert row_ids[t] == row_labels[t]  # labels are aligned with the inputs
            answer, steps = solve_by_reading(row_ids, context, t - 1, vocab)
            assert (answer, steps) == (row_labels[t], hops)


def test_keys_and_values_use_the_zoology_halves_of_the_vocab():
    ids, labels = mqar(32, 64, 4, 100, seed=0)
    context = ids[:, :8]
    assert ((context[:, 0::2] >= 1) & (context[:, 0::2] < 50)).all()
    assert ((context[:, 1::2] >= 50) & (context[:, 1::2] < 100)).all()
    answers = labels[labels != -100]
    assert ((answers >= 50) & (answers < 100)).all()
    assert ((ids >= 0) & (ids < 100)).all()


def test_queries_follow_the_power_law_and_cluster_after_the_context():
    seq_len, kv = 256, 4
    _, labels = mqar(400, seq_len, kv, 512, seed=1)
    slots = (labels != -100).nonzero()[:, 1] - 2 * kv - 1  # [N*kv] even offsets into the query region
    slot = (slots // 2).double()
    # p(i) ∝ i^-0.99 over 124 slots puts about half the mass in the first ~10 slots; uniform would
    # put the median near 62.
    assert slot.median() < 20
    assert slot.max() > 60  # the tail still reaches far


def test_seed_reproduces_and_different_seeds_differ():
    a = mqar(8, 64, 4, 64, seed=7, hops=2)
    b = mqar(8, 64, 4, 64, seed=7, hops=2)
    c = mqar(8, 64, 4, 64, seed=8, hops=2)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"seq_len": 15}, "seq_len"),
        ({"vocab_size": 8}, "vocab_size"),
        ({"hops": 0}, "hops"),
        ({"power_a": 0.0}, "power_a"),
    ],
)
def test_bad_arguments_name_the_field(kwargs, field):
    args = {"num_examples": 2, "seq_len": 32, "num_kv_pairs": 4, "vocab_size": 64, "seed": 0} | kwargs
    with pytest.raises(ValueError, match=f"mqar.{field}"):
        mqar(**args)
