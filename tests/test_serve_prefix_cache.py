"""Prefix caching (serve/prefix_cache.py) against independent references.

Outputs: with prefix caching on, every request's greedy tokens equal a no-cache greedy loop and its
log-probabilities equal the loop's within 1e-4, for every family, `intra` and the hybrids, on
multi-turn conversations that share a system prompt (weights with std 0.2: a state or block off by
one position moves them far more). Hits: `num_cached_tokens` equals the hand-derived hit point of
each request. Memory: every block's reference count equals the holders one can count (requests'
tables, tree nodes, checkpoints) after every step of random arrivals, aborts, evictions and
preemptions, and nothing is left once the tree is cleared. Eviction: the order on a hand-made case
follows the cost model (and differs from LRU's).
"""

from __future__ import annotations

import random
from collections import Counter

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_serve_engine import FAMILIES, TOL, all_logprobs, build, greedy, reference

from attnlab.serve import EngineConfig, LLMEngine, SamplingParams

BS = 4  # tokens per block: small, so that prompts cross many block boundaries
NEW = 6


def tokens(n: int, seed: int) -> list[int]:
    return torch.randint(1, 64, (n,), generator=torch.Generator().manual_seed(seed)).tolist()


def engine_for(model, **options) -> LLMEngine:
    """An engine whose every step first checks that the blocks it writes are held by the writing
    request alone (a shared block is copied before it is written)."""
    config = dict(cache_memory="64MiB", max_model_len=256, block_size=BS, enable_prefix_caching=True)
    engine = LLMEngine(model, None, EngineConfig(**(config | options)))
    run_step = engine.runner.run

    def checked(scheduled, captures=(), *layered):
        cache = engine.cache
        for req, n in scheduled:
            first, last = req.num_computed // BS, (req.num_computed + n - 1) // BS
            for g, table in cache.holdings[req.request_id].tables.items():
                assert all(cache.pools[g].refs[b] == 1 for b in table[first : last + 1]), (g, req.request_id)
        return run_step(scheduled, captures, *layered)

    engine.runner.run = checked
    return engine


def run(engine: LLMEngine, prompts: list[list[int]], params=None) -> list:
    """Submit the prompts together, run to the end -> outputs in order."""
    ids = [engine.add_request(p, params or greedy(NEW)) for p in prompts]
    done = {}
    while engine.has_unfinished():
        for out in engine.step():
            if out.finished:
                done[out.request_id] = out
        check_holdings(engine)
    return [done[i] for i in ids]


def conversations(engine, system: list[int], users: list[list[list[int]]]) -> list:
    """Each conversation's turns in order (a turn's prompt = the previous prompt + its output + the
    next user message); conversations one after the other -> outputs of every turn."""
    outs = []
    for conv in users:
        history = list(system)
        for user in conv:
            prompt = history + user
            (out,) = run(engine, [prompt])
            outs.append(out)
            history = prompt + out.token_ids
    return outs


def check_against_reference(model, outs) -> None:
    for out in outs:
        want_tokens, want_logprobs = reference(model, out.prompt_token_ids, len(out.token_ids))
        assert out.token_ids == want_tokens
        assert (all_logprobs(out) - want_logprobs).abs().max().item() <= TOL


def check_holdings(engine: LLMEngine) -> None:
    """Every id's reference count == the holders one can count; free lists hold exactly the rest."""
    cache, prefix = engine.cache, engine.cache.prefix
    if prefix is None:
        return
    for name in cache.all_pool_names():
        pool, want = cache.pool(name), Counter()
        if name in cache.pools:
            for holding in cache.holdings.values():
                want.update(b for b in holding.tables[name] if b >= 0)
            for node in prefix.nodes:
                want.update(b for g, b in node.blocks.items() if g == name and b >= 0)
        if cache.checkpoints is not None and name == cache.checkpoint_pool_name:
            for node in prefix.nodes:
                want.update(node.checkpoint or [])
            cohort = engine.scheduler.cohort  # layered prefill: checkpoints still being written
            for _, _, pages in cohort.captures if cohort is not None else ():
                want.update(pages)
        assert pool.refs == [want[i] for i in range(pool.capacity)], name
        assert sorted(pool.free_ids) == [i for i in range(pool.capacity) if want[i] == 0], name
    slots = [h.slot for h in cache.holdings.values() if h.slot is not None]
    assert len(slots) == len(set(slots)) == cache.slots.capacity - cache.slots.num_free
    users = Counter(h.node for h in cache.holdings.values() if h.node is not None)
    assert all(node.users == users[node] for node in prefix.nodes)
    assert all(node.parent is prefix.root or node.parent in prefix.nodes for node in prefix.nodes)


def check_released(engine: LLMEngine) -> None:
    assert not engine.cache.holdings
    check_holdings(engine)
    engine.cache.prefix.clear()
    assert not engine.cache.prefix.nodes
    assert engine.cache.all_free()


# --- outputs equal the no-cache reference, hits where expected --------------------------------------
SYSTEM, USERS = tokens(21, 1), [[tokens(7, 2), tokens(5, 3), tokens(9, 4)], [tokens(3, 5), tokens(6, 6)]]
# Hits by hand, block size 4, NEW = 6 (a turn computes its prompt and 5 of its 6 output tokens):
# conversation 1: turn 1 (28 tokens) misses; turn 2 (39) finds turn 1's 33 computed tokens -> 32;
# turn 3 (54) finds turn 2's 44 -> 44. Conversation 2: turn 1 (24) shares the 21-token system
# prompt, a branch inside block 5 -> 20, but a recurrent model has no state there yet (it stores
# one now, at the branch point) -> 0; turn 2 (36) finds turn 1's 29 -> 28.
HITS = [0, 32, 44, 20, 28]
HITS_RECURRENT = [0, 32, 44, 0, 28]


def has_recurrent(name: str) -> bool:
    return engine_for(build(name)).cache.checkpoints is not None


@pytest.mark.parametrize("name", list(FAMILIES))
def test_multi_turn_outputs_equal_no_cache_reference_and_hits_are_where_expected(name):
    model = build(name)
    engine = engine_for(model)
    outs = conversations(engine, SYSTEM, USERS)
    check_against_reference(model, outs)
    want = HITS_RECURRENT if engine.cache.checkpoints is not None else HITS
    assert [o.num_cached_tokens for o in outs] == want
    stats = engine.cache.prefix.stats()
    assert stats["hit_tokens"] == sum(want)
    assert stats["queried_tokens"] == sum(len(o.prompt_token_ids) for o in outs)
    check_released(engine)


@pytest.mark.parametrize("name", ["full", "lightning", "hybrid-7to1", "hybrid-3to1", "intra-lightning-full"])
@pytest.mark.parametrize("system_len", [20, 21])  # a branch on a block boundary, and inside a block
def test_shared_system_prompt_branch_point(name, system_len):
    """Three conversations share a system prompt: the second hits at the branch point if the model
    is attention-only; a recurrent model stores its state there while the second runs, and the
    third hits it."""
    model = build(name)
    engine = engine_for(model)
    system = tokens(system_len, 7)
    outs = [run(engine, [system + tokens(6, 10 + i)])[0] for i in range(3)]
    check_against_reference(model, outs)
    branch = system_len // BS * BS
    first_two = [0, 0] if has_recurrent(name) else [0, branch]
    assert [o.num_cached_tokens for o in outs] == [*first_two, branch]
    check_released(engine)


@pytest.mark.parametrize("name", ["lightning", "hybrid-7to1", "intra-lightning-full"])
def test_requests_prefilled_together_store_their_branch_point(name):
    """Two requests that share a 21-token prefix arrive together (one step prefills both): neither
    finds anything cached, but they branch inside block 5, so the state at 20 is stored; a third
    request with the same prefix hits it."""
    model = build(name)
    engine = engine_for(model)
    system = tokens(21, 22)
    pair = run(engine, [system + tokens(5, 23), system + tokens(7, 24)])
    (third,) = run(engine, [system + tokens(6, 25)])
    assert [o.num_cached_tokens for o in [*pair, third]] == [0, 0, 20]
    check_against_reference(model, [*pair, third])
    check_released(engine)


@pytest.mark.parametrize("name", ["full", "mla", "swa", "lightning", "hybrid-7to1"])
def test_repeated_prompt(name):
    """The same 16-token prompt twice. Attention-only models cache all 16 tokens: the last block is
    copied (on write) and only its last token is recomputed, for the logits. Recurrent models need a
    state at a block boundary before the last token: the prompt's prefill stored one at 12."""
    model = build(name)
    engine = engine_for(model)
    prompt = tokens(16, 11)
    first, second = run(engine, [prompt]), run(engine, [prompt])
    check_against_reference(model, first + second)
    assert second[0].num_cached_tokens == (12 if has_recurrent(name) else 15)
    check_released(engine)


def test_concurrent_requests_share_blocks_by_reference():
    """Two requests admitted while a third's prefix is cached point at the same physical blocks."""
    model = build("hybrid-7to1")
    engine = engine_for(model)
    system = tokens(17, 12)
    run(engine, [system + tokens(3, 13)])  # caches 16 tokens: blocks and a state at 16 (prompt end)
    engine.add_request(system + tokens(5, 14), greedy(NEW), request_id="a")
    engine.add_request(system + tokens(6, 15), greedy(NEW), request_id="b")
    engine.step()
    a, b = (engine.cache.holdings[r].tables["paged"][:4] for r in "ab")
    assert a == b
    assert all(engine.cache.pools["paged"].refs[i] == 3 for i in a)  # tree + two requests
    check_holdings(engine)
    while engine.has_unfinished():
        engine.step()
    check_released(engine)


def test_window_layers_share_only_blocks_inside_the_window():
    """SWA (window 4): a hit at token 32 references only the block the next query's window reaches."""
    model = build("swa")
    engine = engine_for(model)
    prompt = tokens(33, 16)
    run(engine, [prompt], SamplingParams(max_tokens=1, ignore_eos=True))  # 33 tokens computed
    cached = engine.cache.admit("probe", prompt + tokens(4, 17))
    table = engine.cache.holdings["probe"].tables["window:4"]
    assert cached == 32
    assert table == [-1] * 7 + [table[7]] and table[7] >= 0  # (32 - 4 + 1) // 4 = 7 blocks unseen
    engine.cache.free("probe")
    check_released(engine)


def test_fixed_checkpoint_interval():
    model = build("lightning")
    engine = engine_for(model, state_checkpoint_interval=8)
    prompt = tokens(30, 18)
    run(engine, [prompt], SamplingParams(max_tokens=1, ignore_eos=True))
    depths = sorted(n.depth * BS for n in engine.cache.prefix.nodes if n.checkpoint is not None)
    assert depths == [8, 16, 24]
    (out,) = run(engine, [prompt[:29] + tokens(3, 19)])
    assert out.num_cached_tokens == 24
    check_against_reference(model, [out])
    check_released(engine)


@pytest.mark.parametrize("state_dtype", ["bf16", "int8"])
def test_low_precision_state_checkpoints_restore_what_the_slot_held(state_dtype):
    """A checkpoint stored in the slot's storage dtype and restored gives the same tokens as the
    uncached engine with that storage (the checkpoint at the prompt end is the slot's own bytes)."""
    model = build("lightning")
    prompt = tokens(24, 20)
    config = EngineConfig(cache_memory="64MiB", max_model_len=256, block_size=BS, state_dtype=state_dtype)
    plain = LLMEngine(model, None, config)
    cached = engine_for(model, state_dtype=state_dtype)
    run(cached, [prompt])
    follow = prompt + tokens(5, 21)
    (want,), (got,) = run(plain, [follow]), run(cached, [follow])
    assert got.num_cached_tokens > 0
    assert got.token_ids == want.token_ids
    check_released(cached)


# --- memory: one budget, cached prefixes go before running requests ---------------------------------
def test_cached_prefixes_are_evicted_before_a_running_request_is_preempted():
    model = build("hybrid-7to1")
    need = engine_for(model).cache.block_bytes("paged")
    engine = engine_for(model, cache_memory=need * 40 + 2**16, max_num_seqs=2)  # ~40 blocks of 4 tokens
    for i in range(6):  # 6 x 24 tokens cached: more than the budget holds
        run(engine, [tokens(24, 30 + i)], SamplingParams(max_tokens=2, ignore_eos=True))
    assert engine.cache.prefix.evictions > 0
    assert engine.scheduler.num_preemptions == 0
    check_released(engine)


def test_config_errors_name_the_field():
    with pytest.raises(ValueError, match="state_checkpoint_interval = 6: must be a multiple of block_size"):
        EngineConfig(block_size=4, state_checkpoint_interval=6)
    with pytest.raises(ValueError, match="prefix_eviction"):
        EngineConfig(prefix_eviction="fifo")
    with pytest.raises(ValueError, match="prefix_eviction_alpha"):
        EngineConfig(prefix_eviction_alpha=-1)
    with pytest.raises(ValueError, match="enable_prefix_caching"):
        EngineConfig(enable_prefix_caching="yes")


# --- eviction order: the cost model on a hand-made case ----------------------------------------------
def eviction_order(policy: str, alpha: float = 2.0) -> list[int]:
    """Lightning, three prompts of 9, 33 and 17 tokens in that order, one token each: each stores
    one checkpoint (at 8, 32, 16), all of the same size. -> the checkpoints' positions in the order
    the policy evicts them."""
    engine = engine_for(build("lightning"), prefix_eviction=policy, prefix_eviction_alpha=alpha)
    for n, seed in ((9, 40), (33, 41), (17, 42)):
        run(engine, [tokens(n, seed)], SamplingParams(max_tokens=1, ignore_eos=True))
    prefix, order = engine.cache.prefix, []
    while units := prefix.units():
        unit = prefix.pick(units)
        order.append(unit.node.depth * BS)
        prefix.drop(unit)
    return order


def test_eviction_order_follows_the_cost_model():
    """By hand: a lightning checkpoint at t saves prefill FLOPs proportional to t (no attention over
    keys), and all have equal bytes, so efficiency is 8 : 32 : 16, normalised 0, 1, 1/3; recency
    (insertion order) normalised 0, 1/2, 1. Score = recency + 2 x efficiency: 0, 2.5, 1.67 -> the
    checkpoint at 8 goes first; then between 32 (recency 0, efficiency 1: score 2) and 16 (1, 0:
    score 1), 16 goes. LRU evicts in insertion order."""
    assert eviction_order("cost") == [8, 16, 32]
    assert eviction_order("lru") == [8, 32, 16]


# --- property: no leaks under random arrivals, aborts, evictions, preemptions -----------------------
@settings(max_examples=12, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(
    name=st.sampled_from(["full", "swa", "lightning", "hybrid-7to1", "intra-lightning-full"]),
    seed=st.integers(0, 10_000),
)
def test_no_leaks_under_random_arrivals_aborts_and_evictions(name, seed):
    rng = random.Random(seed)
    model = build(name)
    block = engine_for(model).cache
    per_token = sum(block.token_bytes.values())
    # 13 blocks (the least for one 48-token sequence is 12), 3 slots, 4 checkpoints' worth of pages:
    # cached prefixes are evicted, and attention-heavy models preempt running requests too.
    budget = 13 * BS * per_token + 7 * block.slot_bytes
    engine = engine_for(
        model, cache_memory=budget, max_num_seqs=3, max_num_batched_tokens=16, max_model_len=48
    )
    stems = [tokens(rng.randint(5, 20), seed + i) for i in range(3)]  # shared prefixes
    want: dict[str, list[int]] = {}
    finished = {}
    for _ in range(60):
        if rng.random() < 0.6:
            prompt = rng.choice(stems) + tokens(rng.randint(1, 12), rng.randint(0, 10**6))
            rid = engine.add_request(prompt, SamplingParams(max_tokens=rng.randint(1, 8), ignore_eos=True))
            want[rid] = prompt
        live = [r for r in want if r not in finished and r in engine.requests]
        if live and rng.random() < 0.1:
            rid = rng.choice(live)
            engine.abort(rid)
            finished[rid] = None
        for out in engine.step():
            if out.finished:
                finished[out.request_id] = out
        check_holdings(engine)
    while engine.has_unfinished():
        for out in engine.step():
            if out.finished:
                finished[out.request_id] = out
        check_holdings(engine)
    for rid, out in finished.items():
        if out is not None and rng.random() < 0.3:  # spot-check outputs against the reference
            assert out.token_ids == reference(model, want[rid], len(out.token_ids))[0]
    assert engine.cache.prefix.evictions > 0
    check_released(engine)
