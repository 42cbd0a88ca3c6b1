"""Probes on a model whose heads are known by construction (tests/handbuilt_models.py): each head
scores ≈ 1 on the probe that describes it and low on the others."""

import handbuilt_models as hb
import pytest
from probes_helpers import one_thread  # noqa: F401

from attnlab.probes import ProbeSettings, ProbeTarget, get_probe

SETTINGS = ProbeSettings(batch=3, niah_lengths=3, niah_depths=3, niah_needles=1, progress=False)
PATTERN_PROBES = ("previous_token", "duplicate", "induction", "prefix_matching")


@pytest.fixture(scope="module")
def target():
    return ProbeTarget.wrap(hb.build())


@pytest.fixture(scope="module")
def scores(target):
    return {name: get_probe(name).score(target, SETTINGS) for name in (*PATTERN_PROBES, "retrieval")}


def score_of(scores, probe, head):
    layer, h = head
    return scores[probe].scores[layer][h]


def test_the_previous_token_head_scores_one_and_only_there(scores):
    assert score_of(scores, "previous_token", hb.PREV_HEAD) == pytest.approx(1.0, abs=1e-3)
    for probe in ("duplicate", "induction", "prefix_matching"):
        assert score_of(scores, probe, hb.PREV_HEAD) < 0.05


def test_the_induction_head_scores_one_on_induction_and_prefix_matching(scores):
    for probe in ("induction", "prefix_matching"):
        assert score_of(scores, probe, hb.INDUCTION_HEAD) == pytest.approx(1.0, abs=1e-3)
    for probe in ("previous_token", "duplicate"):
        assert score_of(scores, probe, hb.INDUCTION_HEAD) < 0.1


def test_transformerlens_score_of_the_exact_induction_head_is_the_share_of_second_repeat_rows(scores):
    # 50 tokens × 2 after BOS: 50 of 101 rows have a target; TransformerLens divides by all rows.
    tl = scores["induction"].details["transformerlens_mul"]
    assert tl[1][0] == pytest.approx(50 / 101, abs=1e-3)


def test_current_token_heads_score_low_everywhere(scores):
    for head in (hb.SELF0_HEAD, hb.SELF1_HEAD):
        for probe in (*PATTERN_PROBES, "retrieval"):
            assert score_of(scores, probe, head) < 0.05, (probe, head)


def test_the_head_wired_to_copy_from_the_needle_is_the_only_retrieval_head(scores):
    result = scores["retrieval"]
    assert result.details["samples_counted"] == result.details["samples"] == 9
    assert score_of(scores, "retrieval", hb.INDUCTION_HEAD) == pytest.approx(1.0)
    assert [(l, h) for l, h, _ in result.found()] == [hb.INDUCTION_HEAD]


def test_masking_the_copy_head_breaks_retrieval_but_masking_the_other_layer_1_head_does_not(target):
    probe = get_probe("retrieval")
    assert probe.accuracy(target, SETTINGS) == 1.0
    assert probe.accuracy(target, SETTINGS, [hb.INDUCTION_HEAD], "uniform") < 0.2
    assert probe.accuracy(target, SETTINGS, [hb.SELF1_HEAD], "uniform") == 1.0
