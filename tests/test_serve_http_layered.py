"""The HTTP server with layered prefill: concurrent streaming clients, arriving while others
decode, get the text of the offline engine with the default (chunked) schedule, and the layered
cohorts really ran next to decodes."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import openai
from test_serve_http import ENGINE, KEY, save_model, start_server

from attnlab.serve import LLM, EngineConfig, LLMEngine, SamplingParams
from attnlab.serve.llm import load_for_serving


def test_concurrent_streams_with_layered_prefill_equal_chunked_offline_text(tmp_path):
    model, tokenizer = load_for_serving(save_model(tmp_path / "model"), "cpu")
    options = ENGINE | dict(max_num_batched_tokens=16)
    engine = LLMEngine(model, tokenizer, EngineConfig(**options, schedule="layered", layer_groups=3))
    split = []
    run = engine.runner.run

    def traced(scheduled, captures=(), cohort=None, groups=1):
        split.append(bool(scheduled) and cohort is not None and len(cohort.layers(groups)) < 3)
        return run(scheduled, captures, cohort, groups)

    engine.runner.run = traced
    url, stop = start_server(engine)
    client = openai.OpenAI(base_url=f"{url}/v1", api_key=KEY, max_retries=0)
    prompts = [f"request {i}: " + "abcdefgh"[: i % 8] * (1 + i % 5) for i in range(12)]

    def ask(i):
        time.sleep(0.05 * i)  # arrivals spread over the others' decoding
        stream = client.completions.create(
            model="tiny", prompt=prompts[i], max_tokens=20, temperature=0, stream=True
        )
        return "".join(chunk.choices[0].text for chunk in stream)

    try:
        with ThreadPoolExecutor(len(prompts)) as pool:
            got = list(pool.map(ask, range(len(prompts))))
        metrics = httpx.get(f"{url}/metrics").text
    finally:
        stop()
    assert 'attnlab:layered_prefill_requests{model_name="tiny"} 0.0' in metrics
    assert 'attnlab:layered_prefill_hidden_bytes{model_name="tiny"} 0.0' in metrics
    want = LLM(model, tokenizer, **options).generate(prompts, SamplingParams(max_tokens=20), use_tqdm=False)
    assert got == [w.text for w in want]
    assert any(split), "no cohort ran part of its layers next to decodes"
    assert engine.cache.all_free()
