"""The server with its engine in a process of its own (serve/engine_process.py, `attnlab serve`'s
default), against a real uvicorn on a free loopback port.

References: the offline `LLM.generate` on the same weights in this process (no HTTP, no pipe),
the official `openai` client, and the engine process's own /metrics for what its cache holds.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json

import httpx
import pytest
from test_serve_http import ENGINE, KEY, Served, save_model, start_server, wait_until_idle

from attnlab.serve import LLM, SamplingParams
from attnlab.serve.async_engine import EngineError
from attnlab.serve.chat_template import render_chat
from attnlab.serve.engine_process import EngineLaunch, ProcessEngine


def launch(folder, **options) -> ProcessEngine:
    engine = ProcessEngine(EngineLaunch(folder, "cpu", 1, "tiny", {**ENGINE, **options}), start_timeout=300)
    engine.launch()
    return engine


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    folder = save_model(tmp_path_factory.mktemp("served-process") / "model")
    engine = launch(folder)
    url, stop = start_server(engine)
    yield Served(url, engine, LLM(folder, device="cpu", **ENGINE), folder)
    stop()
    assert not engine.running  # the server's shutdown stopped the engine process


def test_the_engine_process_reports_its_model(served):
    assert served.engine.facts["max_model_len"] == ENGINE["max_model_len"]
    assert served.engine.vocab_size == 256
    assert served.engine.tokenizer.decode([104, 105]) == "hi"  # the byte tokenizer, sent over the pipe


def test_completions_chat_and_streams_equal_offline_generate(served):
    client = served.client()
    for prompt in ["The cat sat on", "q", [5, 77, 200, 13]]:
        want = served.expect(prompt, 24, ignore_eos=True)
        got = client.completions.create(model="tiny", prompt=prompt, max_tokens=24, temperature=0,
                                        extra_body={"ignore_eos": True})  # fmt: skip
        assert got.choices[0].text == want.text
        assert got.usage.completion_tokens == len(want.token_ids) == 24
        stream = client.completions.create(model="tiny", prompt=prompt, max_tokens=24, temperature=0, stream=True,
                                           extra_body={"ignore_eos": True})  # fmt: skip
        assert "".join(c.choices[0].text for c in stream) == want.text
    got = client.completions.create(
        model="tiny", prompt="Attention is", max_tokens=6, temperature=0, logprobs=2
    )
    want = served.expect("Attention is", 6, logprobs=2)
    assert got.choices[0].text == want.text
    for i, (logprob, token) in enumerate(
        zip(got.choices[0].logprobs.token_logprobs, want.token_ids, strict=True)
    ):
        assert logprob == pytest.approx(want.logprobs[i][token], abs=1e-5)
    messages = [{"role": "user", "content": "hello"}]
    chat = client.chat.completions.create(model="tiny", messages=messages, max_tokens=12, temperature=0)
    assert (
        chat.choices[0].message.content
        == served.expect(render_chat(served.engine.tokenizer, messages), 12).text
    )


def test_64_concurrent_streaming_clients_get_their_own_outputs(served):
    prompts = [f"client {i}: " + "abcdefghij"[: i % 10] for i in range(64)]

    def stream(prompt: str) -> str:
        chunks = served.client().completions.create(model="tiny", prompt=prompt, max_tokens=20, temperature=0,
                                                    stream=True, extra_body={"ignore_eos": True})  # fmt: skip
        return "".join(c.choices[0].text for c in chunks)

    with concurrent.futures.ThreadPoolExecutor(64) as pool:
        got = list(pool.map(stream, prompts))
    want = served.offline.generate(prompts, SamplingParams(max_tokens=20, ignore_eos=True), use_tqdm=False)
    assert got == [w.text for w in want]
    wait_until_idle(served)


def test_a_request_the_engine_rejects_gets_a_400_and_the_next_is_served(served):
    headers = {"Authorization": f"Bearer {KEY}"}
    bad = {"model": "tiny", "prompt": "x", "max_tokens": 4, "stop_token_ids": [999]}  # outside the vocabulary
    r = httpx.post(f"{served.url}/v1/completions", json=bad, headers=headers)
    assert r.status_code == 400
    assert "stop_token_ids [999] are outside the vocabulary" in r.json()["error"]["message"]
    good = served.client().completions.create(model="tiny", prompt="x", max_tokens=4, temperature=0)
    assert good.choices[0].text == served.expect("x", 4).text


def test_a_client_that_disconnects_frees_its_cache_in_the_engine_process(served):
    key = 'attnlab:generation_tokens_total{model_name="tiny"}'
    before = wait_until_idle(served)[key]
    body = {"model": "tiny", "prompt": "long one", "max_tokens": 240, "temperature": 0, "ignore_eos": True,
            "stream": True}  # fmt: skip
    with httpx.stream("POST", f"{served.url}/v1/completions", json=body,
                      headers={"Authorization": f"Bearer {KEY}"}) as r:  # fmt: skip
        lines = r.iter_lines()
        assert json.loads(next(lines).removeprefix("data: "))["choices"][0]["index"] == 0
        assert served.metrics()['attnlab:cache_blocks_used{model_name="tiny",pool="slots"}'] == 1
    after = wait_until_idle(served)[key]
    assert after - before < 240, "the request ran to the end instead of being aborted"


def test_an_engine_process_that_dies_fails_its_requests_and_stops_running(tmp_path):
    engine = launch(save_model(tmp_path / "model"))

    async def run():
        engine.start()
        group = await engine.submit([([1, 2, 3], SamplingParams(max_tokens=200, ignore_eos=True), "r")])
        seen = 0
        with pytest.raises(EngineError, match="the engine process exited"):
            async for _, out in group:
                seen = len(out.token_ids)
                if seen == 3:
                    engine._process.kill()
        assert seen < 200
        with pytest.raises(EngineError, match="not running"):
            await engine.submit([([1], SamplingParams(max_tokens=2), "next")])
        assert await engine.metrics() == b""

    asyncio.run(run())
    assert not engine.running
    engine.shutdown()  # a dead engine shuts down without waiting


def test_an_engine_that_cannot_start_says_why(tmp_path):
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text("{not json")
    with pytest.raises(RuntimeError, match="the engine could not start: .*config"):
        launch(folder)
