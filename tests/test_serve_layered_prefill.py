"""Layered prefill (serve/layered_prefill.py) against independent references.

Outputs: with `schedule="layered"`, requests arriving while others decode (so that a cohort really
advances one group of layers per step, which a trace of the runner confirms) give the greedy
tokens of a no-cache loop and of `generate()`, and log-probabilities within 1e-4 of the loop's and
of the chunked schedule's, for every family, `intra`, the hybrids, and MoE models. Decodes advance
every step of a layered prefill; a group's cache entries are written in the step that runs it;
an aborted request's hidden rows and cache entries go, and the rest of its cohort is unharmed.
Expert loads: a hand count from a no-cache forward's routing (distinct experts per MoE call).
"""

from __future__ import annotations

import pytest
import torch
from test_serve_engine import FAMILIES, NEW, TOL, all_logprobs, greedy, prompts, reference
from test_serve_prefix_cache import HITS, HITS_RECURRENT, SYSTEM, USERS, check_holdings, check_released
from variants import tiny_config

from attnlab import AttnLabForCausalLM
from attnlab.serve import EngineConfig, LLMEngine, SamplingParams
from attnlab.serve.expert_traffic import ExpertTraffic
from attnlab.serve.layered_prefill import groups_for, split_layers

MODELS = {
    **FAMILIES,
    "moe-full": ("F", {}, 2),
    "moe-hybrid-3to1": ("LLLF", {"L": {"type": "lightning", "block_size": 4}}, 4),
}


def build(name: str, seed: int = 0) -> AttnLabForCausalLM:
    layers, mixers, n = MODELS[name]
    moe = dict(ffn="moe", num_experts=4, num_experts_per_tok=2) if name.startswith("moe") else {}
    torch.manual_seed(seed)
    cfg = tiny_config("full", layers=layers, mixers=mixers, num_hidden_layers=n, initializer_range=0.2, **moe)
    return AttnLabForCausalLM(cfg).eval()


def traced_engine(model, **options) -> LLMEngine:
    """A layered engine whose `trace` records, per step, (sequences running every layer, the
    layers the cohort ran or None)."""
    config = dict(cache_memory="64MiB", max_model_len=256, max_num_batched_tokens=8, schedule="layered")
    engine = LLMEngine(model, None, EngineConfig(**(config | options)))
    engine.trace = []
    run = engine.runner.run

    def traced(scheduled, captures=(), cohort=None, groups=1):
        engine.trace.append((len(scheduled), None if cohort is None else cohort.layers(groups)))
        return run(scheduled, captures, cohort, groups)

    engine.runner.run = traced
    return engine


def staggered(engine: LLMEngine, plist: list[list[int]], every: int = 3, params=None) -> list:
    """A new request every `every` steps, while the earlier ones decode -> outputs in order."""
    todo, done, step = list(enumerate(plist)), {}, 0
    while todo or engine.has_unfinished():
        if todo and step % every == 0:
            i, p = todo.pop(0)
            engine.add_request(p, params or greedy(), request_id=str(i))
        for out in engine.step():
            if out.finished:
                done[int(out.request_id)] = out
        check_holdings(engine)
        step += 1
    return [done[i] for i in range(len(plist))]


def split_while_decoding(engine: LLMEngine) -> bool:
    """Some step ran part of a cohort's layers next to sequences that ran all of them."""
    layers = engine.model.config.num_hidden_layers
    return any(n and active is not None and len(active) < layers for n, active in engine.trace)


STAGGERED = (9, 4, 17, 2, 23)


@pytest.mark.parametrize("name", list(MODELS))
def test_layered_outputs_equal_no_cache_reference_and_chunked(name):
    model = build(name)
    plist = prompts(STAGGERED)
    layered = staggered(traced_engine(model, layer_groups=model.config.num_hidden_layers), plist)
    chunked = LLMEngine(
        model, None, EngineConfig(cache_memory="64MiB", max_model_len=256, max_num_batched_tokens=8)
    )
    chunked_outs = staggered(chunked, plist)
    for p, out, other in zip(plist, layered, chunked_outs, strict=True):
        tokens, logprobs = reference(model, p, NEW)
        assert out.token_ids == tokens == other.token_ids
        assert (all_logprobs(out) - logprobs).abs().max().item() <= TOL
        assert (all_logprobs(out) - all_logprobs(other)).abs().max().item() <= TOL


@pytest.mark.parametrize(
    "name", ["full", "lightning", "hybrid-7to1", "mla", "intra-lightning-full", "moe-hybrid-3to1"]
)
def test_layered_greedy_equals_generate_with_groups_derived_from_the_budget(name):
    model = build(name)
    engine = traced_engine(model)  # G = prompt tokens / 8, at most the layers
    plist = prompts(STAGGERED)
    outs = staggered(engine, plist, every=2)
    assert split_while_decoding(engine)
    for p, out in zip(plist, outs, strict=True):
        expected = model.generate(torch.tensor([p]), max_new_tokens=NEW, min_new_tokens=NEW, do_sample=False)
        assert out.token_ids == expected[0, len(p) :].tolist()
    assert engine.cache.all_free() and engine.scheduler.cohort is None


def start_decoding(engine: LLMEngine, new: int = 40) -> str:
    """A request that is decoding (its prompt done) when this returns."""
    rid = engine.add_request(prompts((5,), seed=9)[0], SamplingParams(max_tokens=new, ignore_eos=True))
    while not engine.requests[rid].output_token_ids:
        engine.step()
    return rid


def test_decodes_advance_every_step_of_a_layered_prefill():
    model = build("hybrid-7to1")  # 8 layers, one per group: the prefill takes 8 steps
    engine = traced_engine(model, layer_groups=8)
    a = start_decoding(engine)
    b = engine.add_request(prompts((29,))[0], greedy())
    steps = 0
    while not engine.requests[b].output_token_ids:
        before = len(engine.requests[a].output_token_ids)
        outs = engine.step()
        assert len(engine.requests[a].output_token_ids) == before + 1
        assert a in [o.request_id for o in outs]
        steps += 1
    assert steps == 8
    assert [active for _, active in engine.trace[-8:]] == [range(i, i + 1) for i in range(8)]


def test_a_group_writes_its_cache_entries_in_the_step_that_runs_it():
    model = build("full")  # 2 layers, 2 groups
    engine = traced_engine(model, layer_groups=2, block_size=4)
    start_decoding(engine)
    b = engine.add_request(prompts((13,))[0], greedy())
    engine.step()  # admits b; its cohort runs layer 0
    k_pages = [engine.cache.storage[i][0] for i in range(2)]  # [P, Hkv, block, D] per layer
    blocks = engine.cache.holdings[b].tables["paged"]
    before = [k[blocks].clone() for k in k_pages]
    assert before[0].abs().sum() > 0 and before[1].abs().sum() == 0  # layer 1: not yet written
    engine.step()  # layer 1
    assert torch.equal(k_pages[0][blocks], before[0]) and k_pages[1][blocks].abs().sum() > 0
    assert engine.requests[b].output_token_ids


@pytest.mark.parametrize("name", ["full", "hybrid-3to1", "moe-hybrid-3to1"])
def test_abort_mid_prefill_frees_hidden_states_and_cache_and_spares_the_rest_of_the_cohort(name):
    model = build(name)
    engine = traced_engine(
        model,
        layer_groups=model.config.num_hidden_layers,
        enable_prefix_caching=True,
        block_size=4,
        max_num_batched_tokens=32,
    )  # fmt: skip (a cohort of <= G x 32 tokens)
    a = start_decoding(engine, new=NEW)
    plist = prompts((17, 11, 14), seed=5)
    ids = [engine.add_request(p, greedy()) for p in plist]
    engine.step()  # admits the three as one cohort; runs its first group
    cohort = engine.scheduler.cohort
    assert cohort is not None and cohort.next_group == 1 and cohort.hidden.shape[1] == 42
    engine.abort(ids[1])
    assert ids[1] not in engine.cache.holdings
    assert [r.request_id for r, _ in cohort.entries] == [ids[0], ids[2]] and cohort.hidden.shape[1] == 31
    check_holdings(engine)
    done = {}
    while engine.has_unfinished():
        for out in engine.step():
            if out.finished:
                done[out.request_id] = out
    for i in (0, 2):
        tokens, logprobs = reference(model, plist[i], NEW)
        assert done[ids[i]].token_ids == tokens
        assert (all_logprobs(done[ids[i]]) - logprobs).abs().max().item() <= TOL
    assert a in done and engine.scheduler.cohort is None
    check_released(engine)


def test_aborting_the_whole_cohort_drops_it():
    engine = traced_engine(build("lightning"), layer_groups=2)
    start_decoding(engine)
    b = engine.add_request(prompts((20,))[0], greedy())
    engine.step()
    assert engine.scheduler.cohort.hidden is not None
    engine.abort(b)
    assert engine.scheduler.cohort is None and b not in engine.cache.holdings


@pytest.mark.parametrize("name", ["full", "mla", "hybrid-7to1", "intra-lightning-full"])
def test_preemption_under_a_tiny_budget_gives_the_same_outputs(name):
    model = build(name)
    options = dict(max_num_batched_tokens=16, max_model_len=48, schedule="layered")
    budget = model.state_bytes(48)
    while True:  # the smallest budget (within 10%) that holds one sequence of max_model_len
        try:
            LLMEngine(model, None, EngineConfig(cache_memory=budget, **options))
            break
        except ValueError:
            budget = int(budget * 1.1)
    engine = LLMEngine(model, None, EngineConfig(cache_memory=int(1.5 * budget), **options))
    plist = prompts((20, 18, 22, 19, 21))
    params = SamplingParams(max_tokens=20, ignore_eos=True, logprobs=64)
    outs = staggered(engine, plist, every=2, params=params)
    for p, out in zip(plist, outs, strict=True):
        tokens, logprobs = reference(model, p, 20)
        assert out.token_ids == tokens
        assert (all_logprobs(out) - logprobs).abs().max().item() <= TOL
    assert engine.cache.all_free()
    if name in ("full", "mla"):
        assert sum(o.num_preemptions for o in outs) > 0, "the budget was meant to force preemption"


@pytest.mark.parametrize("name", ["full", "swa", "lightning", "hybrid-7to1", "intra-lightning-full"])
def test_prefix_caching_skips_the_cached_part(name):
    """The multi-turn conversations of the prefix-caching tests, while a long request decodes next
    to them (so every turn's prefill is layered): the same hits, the same outputs."""
    model = build(name)
    engine = traced_engine(model, layer_groups=model.config.num_hidden_layers, enable_prefix_caching=True,
                           block_size=4)  # fmt: skip
    background = start_decoding(engine, new=200)
    outs = []
    for conv in USERS:
        history = list(SYSTEM)
        for user in conv:
            prompt = history + user
            rid = engine.add_request(prompt, greedy())
            while rid in engine.requests:
                for out in engine.step():
                    if out.request_id == rid and out.finished:
                        outs.append(out)
                check_holdings(engine)
            history = prompt + outs[-1].token_ids
    engine.abort(background)
    assert split_while_decoding(engine)
    for out in outs:
        tokens, logprobs = reference(model, out.prompt_token_ids, NEW)
        assert out.token_ids == tokens
        assert (all_logprobs(out) - logprobs).abs().max().item() <= TOL
    want = HITS_RECURRENT if engine.cache.checkpoints is not None else HITS
    assert [o.num_cached_tokens for o in outs] == want
    check_released(engine)


def test_speculative_decodes_run_next_to_a_layered_prefill():
    model = build("hybrid-3to1")
    engine = traced_engine(model, layer_groups=4, speculative="ngram", num_speculative_tokens=2)
    plist = [p * 3 for p in prompts((5, 7, 4, 6, 9))]  # repeats: n-gram lookup finds drafts
    outs = staggered(engine, plist, every=2)
    assert split_while_decoding(engine)
    assert sum(o.num_draft_tokens for o in outs) > 0
    for p, out in zip(plist, outs, strict=True):
        tokens, logprobs = reference(model, p, NEW)
        assert out.token_ids == tokens
        assert (all_logprobs(out) - logprobs).abs().max().item() <= TOL


def test_split_layers_and_groups_for_by_hand():
    assert split_layers(8, 3) == [range(0, 3), range(3, 5), range(5, 8)]
    assert split_layers(4, 4) == [range(i, i + 1) for i in range(4)]
    assert split_layers(5, 1) == [range(0, 5)]
    assert groups_for(1000, 256, 8, None) == 4  # 2048 // 1000 = 2 layers per group
    assert groups_for(1500, 256, 8, None) == 8  # 1 layer: 2 would be 3000 > 2048 layer-tokens
    assert groups_for(600, 256, 8, None) == 3  # at most 3 layers per group: 3 + 2 + 3
    assert max(map(len, split_layers(8, 3))) * 600 <= 256 * 8
    assert groups_for(5000, 256, 8, None) == 8  # at most the layers
    assert groups_for(10, 256, 8, None) == 1
    assert groups_for(5000, 256, 8, 2) == 2
    with pytest.raises(ValueError, match="layer groups = 9: must be in 1..8"):
        split_layers(8, 9)


@pytest.mark.parametrize(
    "options, message",
    [
        (dict(schedule="pipelined"), "schedule = 'pipelined'; allowed: chunked, layered"),
        (dict(layer_groups=2), "layer_groups = 2: only used with schedule = 'layered'"),
        (dict(schedule="layered", layer_groups=0), "layer_groups"),
        (dict(schedule="layered", layer_groups=3), "layer_groups = 3: must be at most the model's 2 layers"),
    ],
)
def test_bad_schedule_options_are_clear_errors(options, message):
    with pytest.raises(ValueError, match=message):
        LLMEngine(build("full"), None, EngineConfig(cache_memory="16MiB", **options))


# --- expert traffic -------------------------------------------------------------------------------


@torch.no_grad()
def routed_experts(model, prompt: list[int]) -> list[torch.Tensor]:
    """Per MoE layer, the top-k experts of every prompt token [T, k] in a no-cache forward."""
    chosen = []
    hooks = [
        layer.ffn.router.register_forward_hook(
            lambda m, i, out: chosen.append(out.topk(model.config.num_experts_per_tok, -1).indices)
        )
        for layer in model.model.layers
    ]
    model(torch.tensor([prompt]), use_cache=False)
    for h in hooks:
        h.remove()
    return chosen


@pytest.mark.parametrize("schedule", ["chunked", "layered"])
def test_prefill_expert_loads_equal_a_hand_count(schedule):
    """One 32-token prompt, budget 8: chunked runs 4 chunks, each loading the distinct experts its
    8 tokens route to in every layer; layered runs the prompt once per layer."""
    model = build("moe-full")
    prompt = prompts((32,), seed=4)[0]
    routes = routed_experts(model, prompt)
    chunk = 8 if schedule == "chunked" else 32
    want = sum(r[a : a + chunk].unique().numel() for r in routes for a in range(0, 32, chunk))
    config = dict(cache_memory="16MiB", max_num_batched_tokens=8, schedule=schedule)
    engine = LLMEngine(model, None, EngineConfig(**config))
    with ExpertTraffic(engine) as traffic:
        engine.add_request(prompt, SamplingParams(max_tokens=1))
        while engine.has_unfinished():
            engine.step()
    expert = model.model.layers[0].ffn.experts[0]
    assert traffic.prefill_loads == want
    assert traffic.prefill_bytes == want * sum(p.numel() * p.element_size() for p in expert.parameters())
    assert traffic.prefill_tokens == 32
    if schedule == "layered":
        assert want <= 2 * 4  # each (layer, expert) once
