"""MQAR generator (evals/mqar.py) against a brute-force reader of the sequence: every labelled answer
follows from the context alone, the layout and vocab ranges are Zoology's, and seeds reproduce."""

from __future__ import annotations

import pytest
import torch

from attnlab.evals.mqar import mqar


def read_table(ids: list[int], kv: int, hops: int, separator: bool) -> dict[int, int]:
    """The context's links, read by a brute-force walk over its entries (`k v` or `0 k v`)."""
    width = 3 if separator else 2
    table = {}
    for i in range(0, width * kv * hops, width):
        if separator:
            assert ids[i] == 0
        key, value = ids[i + width - 2], ids[i + width - 1]
        assert key not in table, "a key appears twice in the context"
        table[key] = value
    return table


@pytest.mark.parametrize("separator", [False, True])
@pytest.mark.parametrize("hops", [1, 2, 3])
def test_every_answer_is_recovered_by_reading_the_context(hops, separator):
    n, seq_len, kv, vocab = 64, 128, 6, 128
    ids, labels = mqar(n, seq_len, kv, vocab, seed=3, hops=hops, separator=separator)
    assert ids.shape == labels.shape == (n, seq_len) and ids.dtype == labels.dtype == torch.int64
    for row_ids, row_labels in zip(ids.tolist(), labels.tolist(), strict=True):
        table = read_table(row_ids, kv, hops, separator)
        heads = set(table) - set(table.values())  # keys no pair points to: the chains' starts
        answers = [t for t, y in enumerate(row_labels) if y != -100]
        assert len(answers) == kv * hops  # each chain queried once, every link an answer
        for c in range(kv):
            slot = answers[c * hops : (c + 1) * hops]
            assert slot == list(range(slot[0], slot[0] + hops))  # the chain is written out in one run
            token = row_ids[slot[0] - 1]
            assert token in heads  # the query is the start of a chain
            for t in slot:
                token = table[token]  # one hop
                assert row_ids[t] == row_labels[t] == token  # labels are aligned with the inputs
            assert token >= vocab // 2  # the chain ends on a value after exactly `hops` links


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


def test_separator_marks_every_context_key():
    ids, _ = mqar(16, 64, 2, 64, seed=5, hops=3, separator=True)
    context = ids[:, : 3 * 2 * 3].view(16, -1, 3)  # [N, pairs, (0, k, v)]
    assert (context[..., 0] == 0).all() and (context[..., 1:] > 0).all()


def test_one_hop_without_separator_is_unchanged_zoology():
    """hops=1 keeps Zoology's layout (and the draws that the sweep's results came from)."""
    ids, labels = mqar(4, 64, 4, 64, seed=11)
    answers = (labels != -100).nonzero()[:, 1].view(4, 4)
    assert ((answers - 8) % 2 == 1).all()  # `k v` slots right after the 8-token context
    assert torch.equal(ids.gather(1, answers), labels.gather(1, answers))


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
        ({"separator": 1}, "separator"),
        ({"seq_len": 51, "hops": 3, "separator": True}, "seq_len"),  # 36 context + 4 chains x 4 = 52
    ],
)
def test_bad_arguments_name_the_field(kwargs, field):
    args = {"num_examples": 2, "seq_len": 32, "num_kv_pairs": 4, "vocab_size": 64, "seed": 0} | kwargs
    with pytest.raises(ValueError, match=f"mqar.{field}"):
        mqar(**args)
