"""Engine behaviour around requests: stop conditions, text, loading from a folder, and that random
arrivals and aborts always give every block and slot back (property test)."""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_serve_engine import build, prompts, reference
from variants import tiny_config

from attnlab import AttnLabForCausalLM
from attnlab.evals.tokenizer import byte_tokenizer
from attnlab.serve import LLM, EngineConfig, LLMEngine, SamplingParams


@pytest.fixture(scope="module")
def byte_model():
    torch.manual_seed(0)
    cfg = tiny_config("full", vocab_size=256, layers="LF", num_hidden_layers=2, initializer_range=0.2)
    return AttnLabForCausalLM(cfg).eval()


def free_run(model, prompt, new):
    """Greedy tokens with nothing stopping them early (the reference for where stops land)."""
    return reference(model, prompt, new)[0]


def test_stop_token_ids_end_the_output_and_are_not_text(byte_model):
    tok = byte_tokenizer()
    prompt = tok("Hello there", add_special_tokens=False)["input_ids"]
    free = free_run(byte_model, prompt, 12)
    stop_at = free[5]
    llm = LLM(byte_model, tok, cache_memory="16MiB", max_model_len=128)
    out = llm.generate(
        "Hello there", SamplingParams(max_tokens=12, stop_token_ids=[stop_at]), use_tqdm=False
    )[0]
    first = free.index(stop_at)
    assert out.token_ids == free[: first + 1]
    assert out.finish_reason == "stop"
    assert out.text == tok.decode(free[:first])


def test_min_tokens_masks_end_tokens_until_reached(byte_model):
    tok = byte_tokenizer()
    prompt = tok("abc", add_special_tokens=False)["input_ids"]
    first = free_run(byte_model, prompt, 1)[0]
    llm = LLM(byte_model, tok, cache_memory="16MiB", max_model_len=128)
    p = SamplingParams(max_tokens=6, stop_token_ids=[first], min_tokens=3)
    out = llm.generate("abc", p, use_tqdm=False)[0]
    assert out.token_ids[0] != first and len(out.token_ids) >= 3


def test_stop_strings_cut_the_text_before_the_match(byte_model):
    tok = byte_tokenizer()
    prompt = tok("xyz", add_special_tokens=False)["input_ids"]
    free_text = tok.decode(free_run(byte_model, prompt, 16))
    stop = free_text[4:6]
    llm = LLM(byte_model, tok, cache_memory="16MiB", max_model_len=128)
    out = llm.generate("xyz", SamplingParams(max_tokens=16, stop=[stop]), use_tqdm=False)[0]
    assert out.finish_reason == "stop"
    assert out.text == free_text[: free_text.find(stop)]


def test_eos_stops_unless_ignored(byte_model):
    tok = byte_tokenizer()
    prompt = tok("q", add_special_tokens=False)["input_ids"]
    free = free_run(byte_model, prompt, 8)
    llm = LLM(byte_model, tok, cache_memory="16MiB", max_model_len=128)
    llm.engine.eos_token_id = free[2]  # pretend the third token is the model's EOS
    stopped = llm.generate("q", SamplingParams(max_tokens=8), use_tqdm=False)[0]
    ignored = llm.generate("q", SamplingParams(max_tokens=8, ignore_eos=True), use_tqdm=False)[0]
    assert stopped.token_ids == free[: free.index(free[2]) + 1] and stopped.finish_reason == "stop"
    assert ignored.token_ids == free and ignored.finish_reason == "length"


def test_llm_loads_a_saved_model_folder_with_its_tokenizer(tmp_path, byte_model):
    byte_model.save_pretrained(tmp_path)
    byte_tokenizer().save_pretrained(tmp_path)
    llm = LLM(str(tmp_path), cache_memory="16MiB", max_model_len=128)
    out = llm.generate(["hi", "there"], SamplingParams(max_tokens=5, ignore_eos=True), use_tqdm=False)
    tok = byte_tokenizer()
    for text, o in zip(["hi", "there"], out, strict=True):
        ids = tok(text, add_special_tokens=False)["input_ids"]
        assert o.token_ids == free_run(byte_model, ids, 5)
        assert o.prompt == text and o.metrics.ttft is not None and o.metrics.ttft >= 0


def test_string_prompt_without_tokenizer_is_a_clear_error():
    engine = LLMEngine(build("full"), None, EngineConfig(cache_memory="16MiB"))
    with pytest.raises(ValueError, match="no tokenizer"):
        engine.add_request("hello", SamplingParams())


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    events=st.lists(
        st.tuples(st.sampled_from(["add", "abort", "step", "step"]), st.integers(1, 30), st.integers(1, 12)),
        min_size=1,
        max_size=40,
    ),
    budget=st.sampled_from([3, 8, 64]),
)
def test_random_arrivals_and_aborts_free_everything(events, budget):
    """Whatever arrives, is aborted or finishes, and however tight memory is, every block and slot
    comes back, and no request is lost."""
    model = MODELS["hybrid"]
    engine = LLMEngine(
        model, None, EngineConfig(cache_memory=MEMORY, max_num_batched_tokens=budget, max_model_len=48)
    )
    start = {g: p.num_free for g, p in engine.cache.pools.items()}, engine.cache.slots.num_free
    live, finished, aborted = [], set(), set()
    for i, (kind, n, new) in enumerate(events):
        if kind == "add":
            live.append(
                engine.add_request(prompts((n,), seed=i)[0], SamplingParams(max_tokens=new, ignore_eos=True))
            )
        elif kind == "abort" and live:
            rid = live.pop(n % len(live))
            engine.abort(rid)
            aborted.add(rid)
        else:
            finished |= {o.request_id for o in engine.step() if o.finished}
    while engine.has_unfinished():
        finished |= {o.request_id for o in engine.step() if o.finished}
    assert engine.cache.all_free()
    assert ({g: p.num_free for g, p in engine.cache.pools.items()}, engine.cache.slots.num_free) == start
    assert set(live) - aborted <= finished


MODELS = {"hybrid": build("intra-lightning-full")}
MEMORY = 3 * MODELS["hybrid"].state_bytes(48)
