"""The HTTP server with prefix caching and speculative decoding (n-gram proposals) on a lightning /
full / sliding-window hybrid: a multi-turn chat through the real OpenAI client gives the same text
as the plain offline engine (no cache reuse, no speculation), reports the cached prompt tokens in
`usage.prompt_tokens_details.cached_tokens` and in /metrics; concurrent streams with different
acceptance equal their offline text; a client that leaves mid-stream leaves nothing held but the
cached prefixes."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import openai
import pytest
from test_serve_http import ENGINE, KEY, save_model, start_server

from attnlab.serve import LLM, EngineConfig, LLMEngine, SamplingParams
from attnlab.serve.chat_template import render_chat
from attnlab.serve.llm import load_for_serving

BLOCK = 8


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    folder = save_model(tmp_path_factory.mktemp("served") / "model")
    model, tokenizer = load_for_serving(folder, "cpu")
    config = EngineConfig(
        **ENGINE, block_size=BLOCK, enable_prefix_caching=True, speculative="ngram", num_speculative_tokens=3
    )
    engine = LLMEngine(model, tokenizer, config)
    url, stop = start_server(engine)
    uncached = LLM(model, tokenizer, **ENGINE, block_size=BLOCK)
    client = openai.OpenAI(base_url=f"{url}/v1", api_key=KEY, max_retries=0)
    yield client, engine, uncached, url
    stop()


def metric(url: str, name: str) -> float:
    for line in httpx.get(f"{url}/metrics").text.splitlines():
        if line.startswith(f"attnlab:{name}{{"):
            return float(line.split()[-1])
    raise KeyError(name)


def test_multi_turn_chat_hits_and_equals_uncached(served):
    client, engine, uncached, url = served
    messages = [{"role": "system", "content": "You are a terse assistant who answers in one line."}]
    cached = []
    for question in ("What is a cache?", "And a prefix?", "Why share it?"):
        messages.append({"role": "user", "content": question})
        got = client.chat.completions.create(model="tiny", messages=messages, max_tokens=12, temperature=0)
        prompt = render_chat(uncached.tokenizer, messages)
        want = uncached.generate([prompt], SamplingParams(max_tokens=12), use_tqdm=False)[0]
        assert got.choices[0].message.content == want.text
        cached.append(got.usage.prompt_tokens_details.cached_tokens)
        messages.append({"role": "assistant", "content": got.choices[0].message.content})
    assert cached[0] == 0 and cached[1] > 0 and cached[2] > cached[1]
    assert all(c % BLOCK == 0 for c in cached)  # this hybrid hits at block boundaries (checkpoints)
    assert metric(url, "prefix_cache_hits_total") == sum(cached)
    assert metric(url, "prefix_cache_held_bytes") > 0


def test_concurrent_streams_with_speculation_equal_offline_text(served):
    client, engine, uncached, _ = served
    prompts = ["abcabcabcabc", "the cat, the cat, the cat", "0123456789" * 3, "zq"]

    def ask(prompt):
        stream = client.completions.create(
            model="tiny", prompt=prompt, max_tokens=24, temperature=0, stream=True
        )
        return "".join(chunk.choices[0].text for chunk in stream)

    with ThreadPoolExecutor(len(prompts)) as pool:
        got = list(pool.map(ask, prompts))
    want = uncached.generate(prompts, SamplingParams(max_tokens=24), use_tqdm=False)
    assert got == [w.text for w in want]
    assert engine.speculation.stats()["accepted"] > 0
    assert metric(served[3], "spec_decode_num_accepted_tokens_total") == engine.speculation.num_accepted


def test_aborted_stream_frees_all_but_the_cached_prefixes(served):
    client, engine, _, url = served
    stream = client.completions.create(
        model="tiny", prompt="x" * 40, max_tokens=200, stream=True, temperature=0
    )
    next(iter(stream))
    stream.close()
    deadline = time.monotonic() + 10
    while engine.cache.holdings and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not engine.cache.holdings
    assert metric(url, "num_requests_running") == 0
