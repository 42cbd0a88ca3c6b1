"""The serving engine against independent references.

References: a greedy loop that re-runs the whole sequence without a cache each step (tokens and
log-probabilities of every output position), and HF `generate()` on the dense cache. Weights are
drawn with std 0.2 so that a cache off by one position moves the log-probabilities by far more
than the 1e-4 tolerance (a test below breaks the positions on purpose and sees it).
"""

from __future__ import annotations

import pytest
import torch
from variants import VARIANTS, tiny_config

from attnlab import AttnLabForCausalLM
from attnlab.serve import LLM, EngineConfig, LLMEngine, SamplingParams
from attnlab.serve.cache_manager import StateSlots
from attnlab.serve.model_runner import ModelRunner

FAMILIES = {
    **VARIANTS,
    "hybrid-3to1": ("LLLF", {"L": {"type": "lightning", "block_size": 4}}, 4),
    "mla-direct-q": ("M", {"M": {"type": "mla", "q_lora_rank": 0}}, 2),
}
PROMPT_LENS = (5, 13, 29, 1)
NEW = 6
TOL = 1e-4


def build(name: str, seed: int = 0) -> AttnLabForCausalLM:
    layers, mixers, n = FAMILIES[name]
    torch.manual_seed(seed)
    cfg = tiny_config("full", layers=layers, mixers=mixers, num_hidden_layers=n, initializer_range=0.2)
    return AttnLabForCausalLM(cfg).eval()


def prompts(lens=PROMPT_LENS, seed: int = 3) -> list[list[int]]:
    gen = torch.Generator().manual_seed(seed)
    return [torch.randint(1, 64, (n,), generator=gen).tolist() for n in lens]


@torch.no_grad()
def reference(model, prompt: list[int], new: int) -> tuple[list[int], torch.Tensor]:
    """Greedy without a cache -> (tokens, log-probabilities [new, V] at each output step)."""
    ids, rows = list(prompt), []
    for _ in range(new):
        logits = model(torch.tensor([ids]), use_cache=False).logits[0, -1].float()
        rows.append(torch.log_softmax(logits, -1))
        ids.append(int(logits.argmax()))
    return ids[len(prompt) :], torch.stack(rows)


def all_logprobs(out) -> torch.Tensor:
    """The engine's log-probabilities of every vocabulary entry, [steps, V] (logprobs=V)."""
    return torch.stack([torch.tensor([row[i] for i in range(len(row))]) for row in out.logprobs])


def greedy(new=NEW, vocab=64) -> SamplingParams:
    return SamplingParams(max_tokens=new, ignore_eos=True, logprobs=vocab)


def run_engine(model, prompt_list, budget=2048, **options):
    llm = LLM(model, max_num_batched_tokens=budget, cache_memory="64MiB", max_model_len=256, **options)
    outs = llm.generate(prompt_list, greedy(), use_tqdm=False)
    assert llm.engine.cache.all_free()
    return outs, llm


@pytest.mark.parametrize("name", list(FAMILIES))
def test_greedy_tokens_and_logprobs_equal_no_cache_reference(name):
    model = build(name)
    outs, _ = run_engine(model, prompts(), budget=8)  # prompts longer than 8 are prefilled in chunks
    for prompt, out in zip(prompts(), outs, strict=True):
        tokens, logprobs = reference(model, prompt, NEW)
        assert out.token_ids == tokens
        assert (all_logprobs(out) - logprobs).abs().max().item() <= TOL


@pytest.mark.parametrize("name", ["full", "lightning", "hybrid-7to1", "mla", "intra-lightning-full"])
def test_greedy_equals_hf_generate(name):
    model = build(name)
    outs, _ = run_engine(model, prompts())
    for prompt, out in zip(prompts(), outs, strict=True):
        ids = torch.tensor([prompt])
        expected = model.generate(ids, max_new_tokens=NEW, min_new_tokens=NEW, do_sample=False)[
            0, len(prompt) :
        ]
        assert out.token_ids == expected.tolist()


@pytest.mark.parametrize("budget", [1, 3, 7, 64])
@pytest.mark.parametrize("name", ["swa-sinks", "hybrid-3to1", "intra-swa-full"])
def test_token_budgets_give_the_same_outputs(name, budget):
    model = build(name)
    outs, _ = run_engine(model, prompts(), budget=budget)
    for prompt, out in zip(prompts(), outs, strict=True):
        tokens, logprobs = reference(model, prompt, NEW)
        assert out.token_ids == tokens
        assert (all_logprobs(out) - logprobs).abs().max().item() <= TOL


@pytest.mark.parametrize("name", ["full", "lightning", "hybrid-1to1"])
def test_arrivals_mid_run(name):
    model = build(name)
    engine = LLMEngine(
        model, None, EngineConfig(cache_memory="64MiB", max_num_batched_tokens=6, max_model_len=256)
    )
    todo = list(enumerate(prompts((9, 4, 17, 2, 11))))
    done, step = {}, 0
    while todo or engine.has_unfinished():
        if todo and step % 3 == 0:  # a new request every third step, while others decode
            i, p = todo.pop(0)
            engine.add_request(p, greedy(), request_id=str(i))
        for out in engine.step():
            if out.finished:
                done[int(out.request_id)] = out
        step += 1
    for i, p in enumerate(prompts((9, 4, 17, 2, 11))):
        tokens, logprobs = reference(model, p, NEW)
        assert done[i].token_ids == tokens
        assert (all_logprobs(done[i]) - logprobs).abs().max().item() <= TOL
    assert engine.cache.all_free()


def test_a_position_error_is_visible_in_the_logprobs(monkeypatch):
    """Negative control: the same comparison fails when decode steps' positions are off by one
    (the cached prefix keeps its positions, so the relative offset is wrong)."""
    model = build("full")
    real = ModelRunner._batch

    def shifted(self, scheduled, captures=()):
        ids, positions, batch, last = real(self, scheduled, captures)
        return ids, positions + int(batch.num_decode == batch.num_tokens), batch, last

    monkeypatch.setattr(ModelRunner, "_batch", shifted)
    outs, _ = run_engine(model, prompts((13,)))
    _, logprobs = reference(model, prompts((13,))[0], NEW)
    assert (all_logprobs(outs[0]) - logprobs).abs().max().item() > 100 * TOL


@pytest.mark.parametrize("name", ["full", "swa-sinks", "mla", "hybrid-7to1", "intra-lightning-full"])
def test_preemption_under_a_tiny_budget_completes_with_the_same_outputs(name):
    model = build(name)
    budget = model.state_bytes(48)
    while True:  # the smallest budget (within 10%) that holds one sequence of max_model_len
        try:
            LLMEngine(
                model, None, EngineConfig(cache_memory=budget, max_num_batched_tokens=16, max_model_len=48)
            )
            break
        except ValueError:
            budget = int(budget * 1.1)
    # 1.5x that: two of the five 40-token sequences cannot hold their blocks at once.
    engine = LLMEngine(
        model, None, EngineConfig(cache_memory=int(1.5 * budget), max_num_batched_tokens=16, max_model_len=48)
    )
    plist = prompts((20, 18, 22, 19, 21))
    for i, p in enumerate(plist):
        engine.add_request(p, SamplingParams(max_tokens=20, ignore_eos=True, logprobs=64), request_id=str(i))
    done = {}
    while engine.has_unfinished():
        for out in engine.step():
            if out.finished:
                done[int(out.request_id)] = out
    preempted = sum(o.num_preemptions for o in done.values())
    for i, p in enumerate(plist):
        tokens, logprobs = reference(model, p, 20)
        assert done[i].token_ids == tokens
        assert (all_logprobs(done[i]) - logprobs).abs().max().item() <= TOL
    assert engine.cache.all_free()
    if name in ("full", "mla"):  # elsewhere slots or window blocks may bound admission first
        assert preempted > 0, "the budget was meant to force preemption"


@pytest.mark.parametrize("name", ["full", "swa", "mla", "lightning", "intra-swa-full", "hybrid-7to1"])
def test_request_bytes_equal_state_bytes(name):
    """A running request holds model.state_bytes(T), up to the rounding of paged blocks."""
    model = build(name)
    engine = LLMEngine(model, None, EngineConfig(cache_memory="16MiB", block_size=4, max_model_len=128))
    rid = engine.add_request(prompts((23,))[0], SamplingParams(max_tokens=30, ignore_eos=True))
    bs = engine.cache.block_size
    for _ in range(12):
        engine.step()
        req = engine.scheduler.running[0]
        t = req.num_computed
        held = engine.cache.request_bytes(rid)
        # Paged layers hold whole blocks; window layers keep the W-1 newest tokens in whole blocks
        # (at most one partly dead block at each end); slots are exact.
        upper = model.state_bytes(t) + 2 * bs * sum(engine.cache.token_bytes.values())
        assert model.state_bytes(t) <= held <= upper
        if name == "lightning":
            assert held == model.state_bytes(t)
        if name in ("full", "mla"):
            assert held == model.state_bytes(-(-t // bs) * bs)


@pytest.mark.parametrize("name", ["full", "swa-sinks", "mla", "hybrid-7to1", "intra-swa-full"])
def test_storage_stays_inside_the_budget_and_paged_blocks_take_the_rest(name):
    budget = 3 << 20
    engine = LLMEngine(build(name), None, EngineConfig(cache_memory=budget, max_model_len=128))
    held = engine.cache.allocated_bytes()
    assert held <= budget
    if "paged" in engine.cache.pools:  # growing caches get every byte the bounded ones leave
        assert held >= 0.95 * budget
    else:  # window blocks and slots only: enough for max_num_seqs sequences, no more
        assert engine.cache.max_seqs == engine.config.max_num_seqs


def test_abort_frees_blocks_and_slots():
    model = build("hybrid-3to1")
    engine = LLMEngine(model, None, EngineConfig(cache_memory="16MiB", max_num_batched_tokens=8))
    a = engine.add_request(prompts((30,))[0], SamplingParams(max_tokens=50, ignore_eos=True))
    b = engine.add_request(prompts((5,))[0], SamplingParams(max_tokens=50, ignore_eos=True))
    for _ in range(5):
        engine.step()
    assert not engine.cache.all_free()
    engine.abort(a)
    engine.abort(b)
    assert engine.cache.all_free() and not engine.has_unfinished()


def test_prompt_longer_than_the_context_is_a_clear_error():
    engine = LLMEngine(build("full"), None, EngineConfig(cache_memory="16MiB", max_model_len=32))
    with pytest.raises(ValueError, match="exceeds max_model_len = 32"):
        engine.add_request(list(range(1, 30)), SamplingParams(max_tokens=8))
    with pytest.raises(ValueError, match=r"token ids must be integers in \[0, 64\)"):
        engine.add_request([1, 99], SamplingParams(max_tokens=2))
    with pytest.raises(ValueError, match="prompt is empty"):
        engine.add_request([], SamplingParams(max_tokens=2))
    with pytest.raises(ValueError, match=r"stop_token_ids \[64\] are outside the vocabulary"):
        engine.add_request([1, 2], SamplingParams(max_tokens=2, stop_token_ids=[64]))


def test_budget_too_small_for_one_sequence_is_a_clear_error():
    model = build("full")
    with pytest.raises(ValueError, match="cannot hold one sequence of max_model_len = 256"):
        LLMEngine(model, None, EngineConfig(cache_memory=model.state_bytes(100), max_model_len=256))


def test_seeded_sampling_does_not_depend_on_the_batch():
    model = build("lightning")
    p = SamplingParams(max_tokens=12, temperature=1.0, top_p=0.9, top_k=20, seed=7, ignore_eos=True)
    alone, _ = run_engine(model, prompts((9,)), **{})
    llm = LLM(model, cache_memory="64MiB", max_model_len=256)
    single = llm.generate(prompts((9,)), p, use_tqdm=False)[0].token_ids
    batched = llm.generate(prompts((9, 4, 17)), [p, greedy(), greedy()], use_tqdm=False)[0].token_ids
    assert single == batched
    assert single != alone[0].token_ids  # sampling did sample


def test_top_k_one_is_greedy():
    model = build("full")
    llm = LLM(model, cache_memory="64MiB", max_model_len=256)
    p = SamplingParams(max_tokens=8, temperature=0.8, top_k=1, seed=0, ignore_eos=True)
    assert (
        llm.generate(prompts((7,)), p, use_tqdm=False)[0].token_ids
        == reference(model, prompts((7,))[0], 8)[0]
    )


def test_sampling_params_errors_name_the_field():
    for kwargs, field in [
        ({"max_tokens": 0}, "max_tokens"),
        ({"temperature": -1}, "temperature"),
        ({"top_p": 0}, "top_p"),
        ({"top_p": 1.5}, "top_p"),
        ({"top_k": -2}, "top_k"),
        ({"min_tokens": 5, "max_tokens": 2}, "min_tokens"),
        ({"stop": [""]}, "stop"),
    ]:
        with pytest.raises(ValueError, match=field):
            SamplingParams(**kwargs)
    with pytest.raises(ValueError, match="cache_memory"):
        LLMEngine(build("full"), None, EngineConfig(cache_memory="lots"))


@pytest.mark.parametrize("name", ["full", "swa-sinks", "mla", "lightning", "intra-lightning-full"])
def test_bf16_models_serve_with_pages_in_bf16_and_fp32_slots(name):
    model = build(name).to(torch.bfloat16)
    llm = LLM(model, cache_memory="16MiB", max_model_len=64)
    outs = llm.generate(prompts((5, 17)), SamplingParams(max_tokens=4, ignore_eos=True), use_tqdm=False)
    assert [len(o.token_ids) for o in outs] == [4, 4]
    cache = llm.engine.cache
    assert all(s.values.dtype == torch.float32 for s in cache.recurrent_storage())

    def tensors(x):
        if isinstance(x, StateSlots):
            return []
        return [x] if isinstance(x, torch.Tensor) else [t for y in x for t in tensors(y)]

    pages = [t for t in tensors(cache.storage) if t.dim() != 4 or t.dtype != torch.float32]
    assert all(t.dtype == torch.bfloat16 for t in pages) and (bool(pages) or name == "lightning")
    assert cache.all_free()


def test_state_dtype_sets_the_slot_storage_and_its_accounting():
    model = build("hybrid-3to1")
    engines = {
        d: LLMEngine(model, None, EngineConfig(cache_memory="16MiB", max_model_len=64, state_dtype=d))
        for d in ("fp32", "bf16")
    }
    assert engines["bf16"].cache.slot_bytes * 2 == engines["fp32"].cache.slot_bytes
    assert all(s.values.dtype == torch.bfloat16 for s in engines["bf16"].cache.recurrent_storage())
    for engine in engines.values():
        engine.add_request(prompts((9,))[0], SamplingParams(max_tokens=4, ignore_eos=True))
        while engine.has_unfinished():
            engine.step()
        assert engine.cache.all_free()
    with pytest.raises(ValueError, match="state_dtype = 'int4'; allowed: fp32, bf16, fp16, int8"):
        EngineConfig(state_dtype="int4")
