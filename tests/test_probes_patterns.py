"""Detection patterns, scores, NIAH prompts and the retrieval copy rule, against hand computations."""

import pytest
import torch

from attnlab.probes.ablation import parse_ablate, random_head_sets
from attnlab.probes.niah_tokens import needle_grid, needle_sample, rouge1_recall
from attnlab.probes.patterns import (
    duplicate_token_pattern,
    induction_pattern,
    mul_score,
    prefix_matching_score,
    previous_token_pattern,
    tl_mul_score,
)
from attnlab.probes.retrieval import copy_hits
from attnlab.probes.sequences import copy_accuracy, repeated_random_tokens

TOKENS = torch.tensor([[5, 7, 5, 7, 5]])


def as_sets(pattern):
    return {(i, j) for i, j in pattern[0].nonzero().tolist()}


def test_previous_token_pattern_is_the_subdiagonal():
    assert as_sets(previous_token_pattern(TOKENS)) == {(1, 0), (2, 1), (3, 2), (4, 3)}


def test_duplicate_pattern_marks_earlier_copies_only():
    # 5 7 5 7 5: position 2 copies 0; 3 copies 1; 4 copies 0 and 2
    assert as_sets(duplicate_token_pattern(TOKENS)) == {(2, 0), (3, 1), (4, 0), (4, 2)}


def test_induction_pattern_is_the_token_after_each_earlier_copy():
    # query 2 (token 5): copies at 0 -> target 1; query 3 (7): copy at 1 -> 2;
    # query 4 (5): copies at 0, 2 -> 1, 3
    assert as_sets(induction_pattern(TOKENS)) == {(2, 1), (3, 2), (4, 1), (4, 3)}


def perfect_map(pattern):
    """Each row spreads 1 over its targets; rows without one attend to themselves."""
    p = pattern[0].float()
    rows = p.sum(-1, keepdim=True)
    m = torch.where(rows > 0, p / rows.clamp(min=1), torch.eye(p.shape[0]))
    return m[None, None]  # [1, 1, T, T]


def test_perfect_induction_head_scores_one_and_tl_half_on_two_repeats():
    n = 6
    tokens = torch.arange(n).repeat(2)[None]
    pattern = induction_pattern(tokens)
    maps = perfect_map(pattern)
    assert mul_score(maps, pattern).item() == pytest.approx(1.0)
    # TransformerLens divides by the whole map: n rows of 2n have a target
    assert tl_mul_score(maps, pattern).item() == pytest.approx(n / (2 * n))


def test_mul_score_of_a_uniform_head_on_the_previous_token_pattern():
    t = 8
    tokens = torch.arange(t)[None]
    uniform = torch.tril(torch.ones(t, t)) / torch.arange(1, t + 1)[:, None]
    # rows 1..t-1 have a target holding 1/(i+1) of the row's mass; each row sums to 1
    expected = sum(1 / (i + 1) for i in range(1, t)) / (t - 1)
    assert mul_score(uniform[None, None], previous_token_pattern(tokens)).item() == pytest.approx(expected)


def test_prefix_matching_is_mass_on_targets_not_a_ratio():
    tokens = torch.arange(4).repeat(2)[None]
    pattern = induction_pattern(tokens)
    half = perfect_map(pattern) * 0.5  # rows sum to 0.5 (e.g. a sink took the rest)
    assert prefix_matching_score(half, pattern).item() == pytest.approx(0.5)
    assert mul_score(half, pattern).item() == pytest.approx(1.0)


def test_repeated_random_tokens_repeat_distinct_tokens_after_bos():
    pool = torch.arange(10, 40)
    seq = repeated_random_tokens(pool, batch=3, length=5, repeats=4, seed=1, bos=0)
    assert seq.shape == (3, 1 + 20)
    assert (seq[:, 0] == 0).all()
    body = seq[:, 1:].view(3, 4, 5)
    assert (body == body[:, :1]).all()
    assert all(len(set(row.tolist())) == 5 for row in body[:, 0])
    assert torch.isin(body, pool).all()


def test_copy_accuracy_counts_only_the_repeats():
    tokens = torch.tensor([[1, 2, 3, 1, 2, 3]])
    logits = torch.full((1, 6, 5), -1.0)
    logits[0, torch.arange(6), tokens[0].roll(-1)] = 1.0  # predicts every next token right
    logits[0, 4, :] = 0.0
    logits[0, 4, 0] = 1.0  # ... except position 5 (predicted from 4)
    assert copy_accuracy(logits, tokens, first_copy=3) == pytest.approx(2 / 3)


def test_rouge1_recall_clips_repeated_tokens():
    assert rouge1_recall([4, 4, 4], [4, 5]) == pytest.approx(0.5)
    assert rouge1_recall([5, 4, 9], [4, 5]) == pytest.approx(1.0)
    assert rouge1_recall([], [4, 5]) == 0.0


@pytest.mark.parametrize("depth", [0.0, 50.0, 100.0])
def test_needle_sample_layout(depth):
    pool = torch.arange(1, 40)
    s = needle_sample(pool, length=30, depth=depth, key_len=2, value_len=3, seed=7, bos=0)
    p = s.prompt.tolist()
    assert len(p) == 30 and p[0] == 0
    key = p[-2:]
    start, end = s.span
    assert p[start - 2 : start] == key and p[start:end] == s.answer.tolist()
    needle = set(key) | set(s.answer.tolist())
    assert len(needle) == 5
    haystack = p[1 : start - 2] + p[end:-2]
    assert not needle & set(haystack) and len(haystack) == 30 - 1 - 7
    expected_start = 1 + round(len(haystack) * depth / 100) + 2
    assert start == expected_start


def test_needle_grid_spans_lengths_up_to_the_cap():
    samples = needle_grid(
        torch.arange(50), max_len=64, lengths=3, depths=2, needles=2, key_len=1, value_len=4, seed=0
    )
    assert len(samples) == 12
    assert sorted({s.length for s in samples}) == [16, 40, 64]
    assert all(len(s.prompt) == s.length for s in samples)


def test_copy_hit_needs_the_argmax_on_the_generated_needle_token():
    prompt = torch.tensor([0, 9, 3, 4, 8, 9])  # span [2, 4) holds 3, 4
    row = torch.tensor([[0.1, 0.1, 0.6, 0.1, 0.05, 0.05], [0.1, 0.1, 0.1, 0.6, 0.05, 0.05]])
    assert copy_hits(row, (2, 4), prompt, token=3).tolist() == [1.0, 0.0]


def test_a_sink_tied_with_the_needle_does_not_hide_the_copy():
    prompt = torch.tensor([0, 9, 3, 4, 8, 9])
    row = torch.tensor([[0.4, 0.1, 0.4, 0.05, 0.025, 0.025]])  # topk(1) would pick the sink at 0
    assert copy_hits(row, (2, 4), prompt, token=3).tolist() == [1.0]


def test_a_uniform_head_scores_its_share_of_ties():
    prompt = torch.tensor([0, 9, 3, 4, 8, 9])
    row = torch.full((1, 6), 1 / 6)
    # sink dropped: 5 tied candidates, one of them (position 2) holds the generated 3
    assert copy_hits(row, (2, 4), prompt, token=3).tolist() == [pytest.approx(1 / 5)]


def test_parse_ablate_accepts_only_top_k():
    assert parse_ablate("top:8") == 8
    for bad in ("8", "top:", "top:0", "random:3", "top:x"):
        with pytest.raises(ValueError, match="--ablate"):
            parse_ablate(bad)


def test_random_head_sets_enumerate_when_few_combinations():
    pool = [(0, 0), (0, 1), (1, 0)]
    assert random_head_sets(pool, 2, draws=5, seed=0) == [
        [(0, 0), (0, 1)],
        [(0, 0), (1, 0)],
        [(0, 1), (1, 0)],
    ]
    sets = random_head_sets([(0, h) for h in range(10)], 3, draws=4, seed=0)
    assert len(sets) == 4 and all(len(set(s)) == 3 for s in sets)
