"""Speculative decoding (serve/speculative.py) against independent references.

Greedy: speculative output == a no-cache greedy loop, tokens and log-probabilities within 1e-4,
for every family, `intra` and the hybrids, k in {1, 3, 5}, with both proposers, in batches where
each request accepts a different number of drafts (the draft model is the target with its weights
perturbed, so it agrees only sometimes), with and without prefix caching. Sampling: the rejection
sampler's output follows the target distribution (chi-square, fixed seeds), alone and through the
engine. Memory: nothing is held afterwards, by the target's cache or the draft model's.
"""

from __future__ import annotations

import copy

import pytest
import torch
from scipy.stats import chisquare
from test_serve_engine import FAMILIES, TOL, all_logprobs, build, reference

from attnlab.serve import LLM, EngineConfig, LLMEngine, SamplingParams
from attnlab.serve.proposers import NgramProposer
from attnlab.serve.spec_verify import accept_greedy, accept_sampled

NEW = 10


def prompts() -> list[list[int]]:
    gen = torch.Generator().manual_seed(1)
    motif = torch.randint(1, 64, (5,), generator=gen).tolist()
    rand = [torch.randint(1, 64, (n,), generator=gen).tolist() for n in (13, 7)]
    return [motif * 3 + rand[1][:2], rand[0], motif * 2, rand[1]]  # repeats give n-grams to find


def noisy_copy(model, noise: float = 0.01, seed: int = 9):
    """A draft model that agrees with the target often but not always."""
    draft = copy.deepcopy(model)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in draft.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * noise)
    return draft


def spec_llm(model, proposer: str, k: int, draft=None, **options) -> LLM:
    extra = {"draft_model": draft or noisy_copy(model)} if proposer == "draft" else {}
    return LLM(model, cache_memory="64MiB", max_model_len=256, block_size=4, speculative=proposer,
               num_speculative_tokens=k, **extra, **options)  # fmt: skip


def check_free(llm: LLM) -> None:
    engine = llm.engine
    if engine.cache.prefix is not None:
        engine.cache.prefix.clear()
    assert engine.cache.all_free()
    proposer = engine.speculation.proposer
    if hasattr(proposer, "cache"):
        assert not proposer.mirrors and proposer.cache.all_free()


def greedy_params() -> SamplingParams:
    return SamplingParams(max_tokens=NEW, ignore_eos=True, logprobs=64)


@pytest.fixture(scope="module")
def references():
    cache = {}

    def get(name):
        if name not in cache:
            model = build(name)
            cache[name] = (model, [reference(model, p, NEW) for p in prompts()])
        return cache[name]

    return get


@pytest.mark.parametrize("proposer", ["ngram", "draft"])
@pytest.mark.parametrize("k", [1, 3, 5])
@pytest.mark.parametrize("name", list(FAMILIES))
def test_greedy_speculation_equals_no_cache_reference(references, name, k, proposer):
    model, want = references(name)
    llm = spec_llm(model, proposer, k)
    outs = llm.generate(prompts(), greedy_params(), use_tqdm=False)
    for out, (tokens, logprobs) in zip(outs, want, strict=True):
        assert out.token_ids == tokens
        assert (all_logprobs(out) - logprobs).abs().max().item() <= TOL
    assert sum(o.num_draft_tokens for o in outs) > 0
    check_free(llm)


@pytest.mark.parametrize("name", ["full", "lightning", "hybrid-7to1", "hybrid-3to1", "swa"])
def test_acceptance_differs_within_a_batch(references, name):
    """Continuous batching with mixed acceptance: requests of one batch accept different numbers
    of drafts, and all equal the reference."""
    model, want = references(name)
    llm = spec_llm(model, "draft", 3)
    outs = llm.generate(prompts(), greedy_params(), use_tqdm=False)
    assert [o.token_ids for o in outs] == [w[0] for w in want]
    rates = {round(o.num_accepted_tokens / o.num_draft_tokens, 3) for o in outs if o.num_draft_tokens}
    assert len(rates) > 1 and 0 < sum(o.num_accepted_tokens for o in outs) < sum(
        o.num_draft_tokens for o in outs
    )
    check_free(llm)


@pytest.mark.parametrize(
    "name", ["full", "lightning", "hybrid-7to1", "hybrid-3to1", "swa", "intra-lightning-full"]
)
@pytest.mark.parametrize("proposer", ["ngram", "draft"])
def test_with_prefix_caching_a_second_request_hits_what_a_speculative_one_wrote(name, proposer):
    """A speculative request's blocks and checkpoints are those of its accepted tokens only: a
    second request continuing its text hits them and still equals the reference."""
    model = build(name)
    llm = spec_llm(model, proposer, 3, enable_prefix_caching=True)
    first = llm.generate([prompts()[0]], greedy_params(), use_tqdm=False)[0]
    follow = first.prompt_token_ids + first.token_ids + [7, 8, 9]
    second = llm.generate([follow], greedy_params(), use_tqdm=False)[0]
    assert first.num_draft_tokens > 0 and second.num_cached_tokens > len(first.prompt_token_ids)
    for out in (first, second):
        tokens, logprobs = reference(model, out.prompt_token_ids, NEW)
        assert out.token_ids == tokens
        assert (all_logprobs(out) - logprobs).abs().max().item() <= TOL
    check_free(llm)


def test_stop_token_inside_accepted_drafts_ends_the_request_there():
    model = build("full")
    want, _ = reference(model, prompts()[0], NEW)
    stop = want[4]
    llm = spec_llm(model, "draft", 5)
    out = llm.generate([prompts()[0]], SamplingParams(max_tokens=NEW, stop_token_ids=[stop]), use_tqdm=False)[
        0
    ]
    assert out.token_ids == want[: want.index(stop) + 1] and out.finish_reason == "stop"
    check_free(llm)


def test_abort_frees_the_draft_models_cache():
    model = build("hybrid-7to1")
    engine = LLMEngine(
        model, None, EngineConfig(cache_memory="64MiB", max_model_len=256, speculative="draft"),
        draft_model=noisy_copy(model),
    )  # fmt: skip
    engine.add_request(prompts()[1], SamplingParams(max_tokens=30, ignore_eos=True), request_id="a")
    for _ in range(3):
        engine.step()
    assert engine.speculation.proposer.mirrors
    engine.abort("a")
    assert not engine.speculation.proposer.mirrors and engine.speculation.proposer.cache.all_free()
    assert engine.cache.all_free()


# --- acceptance rules -----------------------------------------------------------------------------
def test_ngram_proposer_takes_the_latest_longest_match():
    p = NgramProposer(ngram_max=3, ngram_min=1)
    assert p.propose([1, 2, 3, 9, 1, 2, 3, 5, 6, 1, 2, 3], 2) == [5, 6]  # latest match of [1, 2, 3]
    assert p.propose([4, 5, 7, 7, 4, 5], 3) == [7, 7, 4]
    assert p.propose([1, 2, 3], 2) == []
    assert p.propose([5] * 10, 3) == [5, 5, 5]  # a loop shorter than k repeats itself
    assert p.propose([1, 2, 9, 1, 2], 4) == [9, 1, 2, 9]


def test_greedy_acceptance_by_hand():
    logits = torch.tensor(
        [[0, 5, 0], [0, 0, 5], [5, 0, 0], [0, 5, 0]], dtype=torch.float32
    )  # argmax 1, 2, 0, 1
    assert accept_greedy(logits, [1, 2, 0]) == [1, 2, 0, 1]  # all accepted + bonus
    assert accept_greedy(logits, [1, 0, 0]) == [1, 2]  # second rejected: the target's own token
    assert accept_greedy(logits, [2, 2, 0]) == [1]


def _dist(gen, v):
    return torch.softmax(torch.randn(v, generator=gen) * 1.5, -1)


@pytest.mark.parametrize("proposal", ["model", "ngram"])
def test_rejection_sampling_preserves_the_target_distribution(proposal):
    """Tiny vocabulary, fixed seed: drafts drawn from q (or fixed, for n-gram); the first two
    emitted tokens are distributed as the target's p_0 and, after an accepted first draft,
    p_1 (chi-square, p-value > 1e-3); a rule that always accepted would fail (checked below)."""
    v, k, trials = 5, 2, 20000
    gen = torch.Generator().manual_seed(0)
    p = torch.stack([_dist(gen, v) for _ in range(k + 1)])
    q = torch.stack([_dist(gen, v) for _ in range(k)])
    first, second_after = torch.zeros(v), torch.zeros(v)
    fixed = [3, 1]
    for _ in range(trials):
        if proposal == "model":
            drafts = [int(torch.multinomial(q[i], 1, generator=gen)) for i in range(k)]
            out = accept_sampled(p, drafts, q, gen)
        else:
            drafts = fixed
            out = accept_sampled(p, drafts, None, gen)
        first[out[0]] += 1
        if len(out) > 1:  # the first draft was accepted: the second token follows p_1
            second_after[out[1]] += 1
    assert chisquare(first, p[0] * trials).pvalue > 1e-3
    n = second_after.sum()
    assert chisquare(second_after, p[1] * n).pvalue > 1e-3
    if proposal == "model":  # negative control: the proposal's own distribution is far from p_0
        assert chisquare(first, q[0] * trials).pvalue < 1e-6


def test_sampled_speculation_through_the_engine_matches_the_target_marginal():
    """Tiny model, 2000 seeded requests of 3 tokens with k = 1 and an unrelated draft model (its
    proposals follow a distribution far from the target's): the second token (the first one
    verified) follows the target's exact marginal, computed by enumerating every first token."""
    torch.manual_seed(0)
    model = build("hybrid-3to1")
    prompt = [5, 9, 2]
    params = dict(temperature=1.0, max_tokens=3, ignore_eos=True)
    with torch.no_grad():
        p1 = torch.softmax(model(torch.tensor([prompt])).logits[0, -1].float(), -1)  # [V]
        nxt = torch.softmax(
            model(torch.tensor([prompt + [t] for t in range(64)])).logits[:, -1].float(), -1
        )  # [V, V]: p(t2 | t1)
    marginal = p1 @ nxt
    llm = spec_llm(model, "draft", 1, draft=build("full", seed=5), max_num_seqs=256)
    outs = llm.generate(
        [prompt] * 2000, [SamplingParams(seed=s, **params) for s in range(2000)], use_tqdm=False
    )
    assert sum(o.num_draft_tokens for o in outs) > 0
    counts = torch.bincount(torch.tensor([o.token_ids[1] for o in outs]), minlength=64).float()
    keep = marginal * 2000 >= 5  # chi-square needs expected counts of at least 5: pool the rest
    observed, expected = counts[keep], marginal[keep] * 2000
    if not keep.all():
        observed = torch.cat([observed, counts[~keep].sum()[None]])
        expected = torch.cat([expected, marginal[~keep].sum()[None] * 2000])
    assert chisquare(observed, expected * observed.sum() / expected.sum()).pvalue > 1e-3
    check_free(llm)


def test_config_errors_name_the_field():
    with pytest.raises(ValueError, match="speculative"):
        EngineConfig(speculative="medusa")
    with pytest.raises(ValueError, match="num_speculative_tokens"):
        EngineConfig(speculative="ngram", num_speculative_tokens=0)
    with pytest.raises(ValueError, match="ngram_min = 3 > ngram_max = 2"):
        EngineConfig(ngram_min=3, ngram_max=2)
    with pytest.raises(ValueError, match="needs a draft model"):
        LLM(build("full"), speculative="draft")
    with pytest.raises(ValueError, match="vocabulary"):
        other = build("full")
        other.resize_token_embeddings(80)
        LLM(build("full"), speculative="draft", draft_model=other)
