"""Text-task generators: exact token length for byte-level and locally trained BPE tokenizers,
answers recoverable by a brute-force reader of the prompt, seeded reproducibility, depth grid."""

from __future__ import annotations

import pytest
from evals_solvers import solve, solve_facts

from attnlab.evals.fit import PromptTooLong
from attnlab.evals.text_tasks import make_sample, text_tasks
from attnlab.evals.tokenizer import byte_tokenizer, train_bpe
from attnlab.evals.words import ADJECTIVES, NOISE, NOUNS, PEOPLE, PLACES

TASKS = sorted(text_tasks())
MULTI_HOP = [t for t in TASKS if text_tasks()[t].max_hops is None]


@pytest.fixture(scope="module")
def byte_tok():
    return byte_tokenizer()


@pytest.fixture(scope="module")
def bpe_tok(byte_tok):
    # Train on text shaped like the prompts so merges span template words, digits and names.
    samples = [
        make_sample(t, byte_tok, 2048, 2 if t in MULTI_HOP else 1, seed=99, index=i).prompt
        for t in TASKS
        for i in range(2)
    ]
    corpus = samples + [NOISE * 4, " ".join(NOUNS + ADJECTIVES), " ".join(PEOPLE + PLACES)]
    return train_bpe(corpus, vocab_size=700)


def hops_for(task: str) -> list[int]:
    return [1, 2, 4] if task in MULTI_HOP else [1]


def test_byte_tokenizer_maps_each_utf8_byte_to_its_value(byte_tok):
    text = "VAR ABCDE = 12345.\n héllo wörld ~"
    ids = byte_tok(text, add_special_tokens=False)["input_ids"]
    assert ids == list(text.encode("utf-8"))
    assert byte_tok.decode(ids) == text and len(byte_tok) == 256


def test_trained_bpe_merges_tokens(bpe_tok):
    text = "The grass is green. The sky is blue."
    assert len(bpe_tok(text, add_special_tokens=False)["input_ids"]) < len(text.encode()) / 2


@pytest.mark.parametrize("task", TASKS)
@pytest.mark.parametrize("length", [700, 1500])
def test_prompt_is_exactly_length_bytes_for_the_byte_tokenizer(byte_tok, task, length):
    for hops in hops_for(task):
        for index in range(3):
            sample = make_sample(task, byte_tok, length, hops, seed=0, index=index)
            assert len(sample.prompt.encode("utf-8")) == length  # independent of the tokenizer object
            assert (sample.length, sample.hops, sample.task) == (length, hops, task)


@pytest.mark.parametrize("task", TASKS)
@pytest.mark.parametrize("length", [301, 1024])
def test_prompt_is_exactly_length_tokens_for_a_bpe_tokenizer(bpe_tok, task, length):
    for hops in hops_for(task):
        for index in range(3):
            try:
                sample = make_sample(task, bpe_tok, length, hops, seed=1, index=index)
            except PromptTooLong:
                assert length == 301  # a short length may not hold the needles; never a long one
                continue
            assert len(bpe_tok.encode(sample.prompt, add_special_tokens=False)) == length


@pytest.mark.parametrize("task", TASKS)
def test_brute_force_reader_recovers_every_answer(byte_tok, bpe_tok, task):
    for tok in (byte_tok, bpe_tok):
        for hops in hops_for(task):
            for index in range(8):
                sample = make_sample(task, tok, 1200, hops, seed=5, index=index)
                assert sorted(solve(task, sample.prompt)) == sorted(sample.answers), (task, hops, index)


@pytest.mark.parametrize("hops", [1, 2, 3, 5])
def test_facts_need_exactly_hops_facts(byte_tok, hops):
    for index in range(5):
        sample = make_sample("facts", byte_tok, 1500, hops, seed=2, index=index)
        answer, used = solve_facts(sample.prompt)
        assert answer == list(sample.answers) and used == hops


@pytest.mark.parametrize("hops", [1, 3, 6])
def test_variable_tracking_chain_has_hops_plus_one_names_and_icl_keeps_answer(byte_tok, hops):
    sample = make_sample("variable_tracking", byte_tok, 2000, hops, seed=3, chains=3, icl=True)
    assert len(sample.answers) == hops + 1
    assert sample.prompt.count("Track the variable assignments") == 2  # worked example + task
    assert sorted(solve("variable_tracking", sample.prompt)) == sorted(sample.answers)


@pytest.mark.parametrize("task", TASKS)
def test_same_seed_same_sample_other_seed_or_index_other_sample(byte_tok, task):
    a = make_sample(task, byte_tok, 900, 1, seed=7, index=2)
    assert a == make_sample(task, byte_tok, 900, 1, seed=7, index=2)
    assert a.prompt != make_sample(task, byte_tok, 900, 1, seed=8, index=2).prompt
    assert a.prompt != make_sample(task, byte_tok, 900, 1, seed=7, index=3).prompt


def test_niah_needle_depth_walks_the_grid(byte_tok):
    for index in range(11):
        sample = make_sample("niah_single", byte_tok, 3000, seed=0, index=index)
        assert sample.meta["depth"] == 10 * index
        body = sample.prompt.split("\n")[1]
        position = body.index("One of the special magic") / len(body)
        assert abs(position - index / 10) < 0.05


@pytest.mark.parametrize(
    "task, options, n_answers",
    [
        ("niah_multivalue", {"values": 3}, 3),
        ("niah_multiquery", {"queries": 2}, 2),
        ("niah_multikey", {"distractors": 5}, 1),
    ],
)
def test_niah_variants_answer_counts(byte_tok, task, options, n_answers):
    sample = make_sample(task, byte_tok, 2000, seed=4, **options)
    assert len(sample.answers) == n_answers
    assert sorted(solve(task, sample.prompt)) == sorted(sample.answers)


def test_niah_kv_haystack_is_made_of_distractor_needles(byte_tok):
    sample = make_sample(
        "niah_single", byte_tok, 2000, seed=0, haystack="kv", value_kind="uuids", key_kind="numbers"
    )
    assert sample.prompt.count("One of the special magic uuids") > 10
    assert solve("niah_single", sample.prompt) == list(sample.answers)


def test_too_short_length_names_task_and_length(byte_tok):
    with pytest.raises(PromptTooLong, match=r"facts \(length=100, hops=4\).*more than length=100"):
        make_sample("facts", byte_tok, 100, 4)


def test_unknown_task_and_unsupported_hops_are_clear_errors(byte_tok):
    with pytest.raises(ValueError, match="unknown text task 'nope'; allowed: copy, facts"):
        make_sample("nope", byte_tok, 500)
    with pytest.raises(ValueError, match="supports hops 1..1, got hops=2"):
        make_sample("niah_single", byte_tok, 500, hops=2)
