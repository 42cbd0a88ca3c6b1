"""kv_retrieval: Wu et al.'s retrieval score on MQAR-format recall prompts. The prompts are checked
by construction, and on the hand-built model (tests/handbuilt_models.py) the one head wired to copy
the token after an earlier occurrence of the current token is the only retrieval head."""

import handbuilt_models as hb
import pytest
from probes_helpers import one_thread  # noqa: F401

from attnlab.probes import ProbeSettings, ProbeTarget, get_probe
from attnlab.probes.kv_retrieval import kv_grid, kv_sample


@pytest.mark.parametrize("separator", [False, True])
def test_a_prompt_holds_each_pair_once_and_ends_with_the_queried_key(separator):
    vocab, length, pairs = 64, 90, 8
    for depth in (0.0, 50.0, 100.0):
        s = kv_sample(vocab, length, depth, pairs, separator, seed=7)
        ids = s.prompt.tolist()
        width = 3 if separator else 2
        context = ids[: width * pairs]
        keys, values = context[width - 2 :: width], context[width - 1 :: width]
        if separator:
            assert context[::3] == [0] * pairs
        assert all(1 <= k < vocab // 2 for k in keys) and all(vocab // 2 <= v < vocab for v in values)
        assert len(set(keys)) == len(set(values)) == pairs
        assert len(ids) == length and ids[-1] in keys
        q = round(depth / 100 * (pairs - 1))
        assert ids[-1] == keys[q] and s.answer.tolist() == [values[q]]
        start, end = s.span
        assert ids[start:end] == [values[q]] and ids.count(values[q]) == 1  # the only copy source
        assert ids.count(keys[q]) == 2  # in its pair and as the query
        filler = ids[width * pairs : -1]
        assert not set(filler) & (set(keys) | set(values))


def test_the_grid_spans_lengths_and_depths_and_caps_pairs_by_the_vocabulary():
    settings = ProbeSettings(niah_lengths=3, niah_depths=2, niah_needles=2, kv_pairs=50, kv_separator=True)
    samples = kv_grid(32, 120, settings, seed=0)
    assert len(samples) == 3 * 2 * 2
    assert sorted({s.length for s in samples}) == [47, 84, 120]  # from the context + 2 to max_len
    assert {s.depth for s in samples} == {0.0, 100.0}
    assert all(len(s.prompt) == s.length for s in samples)
    assert len(kv_grid(4, 120, settings, seed=0)) == 12  # one key, one value, filler from the rest
    with pytest.raises(ValueError, match="at least 4 tokens"):
        kv_grid(3, 120, settings, seed=0)


SETTINGS = ProbeSettings(niah_lengths=3, niah_depths=3, niah_needles=1, progress=False, max_context=100)


@pytest.fixture(scope="module")
def target():
    return ProbeTarget.wrap(hb.build())


@pytest.mark.parametrize("separator", [False, True])
def test_the_copy_head_is_the_only_kv_retrieval_head(target, separator):
    settings = ProbeSettings(**{**SETTINGS.to_dict(), "kv_separator": separator})
    result = get_probe("kv_retrieval").score(target, settings)
    assert result.details["samples_counted"] == result.details["samples"] == 9
    assert result.details["separator"] is separator
    assert result.scores[1][0] == pytest.approx(1.0)
    assert [(l, h) for l, h, _ in result.found()] == [hb.INDUCTION_HEAD]


def test_masking_the_copy_head_breaks_recall_and_masking_another_head_does_not(target):
    probe = get_probe("kv_retrieval")
    assert probe.accuracy(target, SETTINGS) == 1.0
    assert probe.accuracy(target, SETTINGS, [hb.INDUCTION_HEAD], "uniform") < 0.2
    assert probe.accuracy(target, SETTINGS, [hb.SELF1_HEAD], "uniform") == 1.0
