"""The OpenAI-compatible server, against a real uvicorn on a free loopback port.

References: the offline `LLM.generate` on the same weights (an independent path: no HTTP, no
threads, no streaming detokenizer), the official `openai` client, and the server's own /metrics
for what the cache holds after a client walks away.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import openai
import pytest
import torch
import uvicorn

from attnlab import AttnLabConfig, AttnLabForCausalLM
from attnlab.evals.tokenizer import byte_tokenizer
from attnlab.serve import LLM, EngineConfig, LLMEngine, SamplingParams
from attnlab.serve.api_server import ServerOptions, build_app
from attnlab.serve.async_engine import AsyncEngine
from attnlab.serve.chat_template import render_chat
from attnlab.serve.llm import load_for_serving
from attnlab.serve.server_metrics import ServerMetrics

KEY = "sk-test-key"
CONTEXT = 256
ENGINE = dict(cache_memory="64MiB", max_model_len=CONTEXT, max_num_seqs=64, max_num_batched_tokens=512)


def save_model(folder: Path) -> Path:
    """A byte-level hybrid (lightning, full, sliding window of 8) with weights large enough that a
    wrong cache entry changes the text."""
    torch.manual_seed(0)
    cfg = AttnLabConfig(
        vocab_size=256, hidden_size=32, num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2,
        layers="LFS", mixers={"L": {"type": "lightning", "block_size": 4}, "S": {"type": "swa", "window": 8}},
        intermediate_size=64, max_position_embeddings=CONTEXT, initializer_range=0.2,
    )  # fmt: skip
    AttnLabForCausalLM(cfg).save_pretrained(folder)
    byte_tokenizer().save_pretrained(folder)
    return folder


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Served:
    url: str
    engine: LLMEngine
    offline: LLM
    folder: Path

    def client(self, key: str = KEY) -> openai.OpenAI:
        return openai.OpenAI(base_url=f"{self.url}/v1", api_key=key, max_retries=0)

    def metrics(self) -> dict[str, float]:
        text = httpx.get(f"{self.url}/metrics").text
        return {
            m.group(1): float(m.group(2)) for m in re.finditer(r"^(attnlab:[^\s]+) ([0-9.e+-]+)$", text, re.M)
        }

    def expect(self, prompt, max_tokens: int, **params) -> str:
        return self.offline.generate(
            [prompt], SamplingParams(max_tokens=max_tokens, **params), use_tqdm=False
        )[0]


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    folder = save_model(tmp_path_factory.mktemp("served") / "model")
    model, tokenizer = load_for_serving(folder, "cpu")
    engine = LLMEngine(model, tokenizer, EngineConfig(**ENGINE))
    url, stop = start_server(engine)
    offline = LLM(model, tokenizer, **ENGINE)
    yield Served(url, engine, offline, folder)
    stop()


def start_server(engine: LLMEngine):
    """The API on a uvicorn thread -> (base URL, a function that stops it)."""
    app = build_app(engine, ServerOptions("tiny", api_key=KEY, max_body_bytes=64 * 1024))
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline, "the server did not start"
        time.sleep(0.05)

    def stop():
        server.should_exit = True
        thread.join(30)

    return f"http://127.0.0.1:{port}", stop


PROMPTS = ["The cat sat on", "Attention is all", "q", "0123456789" * 5]


def test_completions_equal_offline_generate(served):
    client = served.client()
    for prompt in PROMPTS:
        got = client.completions.create(model="tiny", prompt=prompt, max_tokens=24, temperature=0)
        want = served.expect(prompt, 24)
        assert got.choices[0].text == want.text
        assert got.choices[0].finish_reason == want.finish_reason
        assert got.usage.prompt_tokens == len(want.prompt_token_ids)
        assert got.usage.completion_tokens == len(want.token_ids)
    ids = [5, 77, 200, 13]  # a token-id prompt
    got = client.completions.create(
        model="tiny", prompt=ids, max_tokens=16, temperature=0, extra_body={"ignore_eos": True}
    )
    assert got.choices[0].text == served.expect(ids, 16, ignore_eos=True).text


def test_batched_prompts_and_seeded_choices(served):
    """A list of prompts with n=2 sampled choices each: choice k of a seeded request uses seed+k."""
    got = served.client().completions.create(
        model="tiny", prompt=PROMPTS[:2], n=2, max_tokens=12, temperature=0.9, top_p=0.8, seed=7
    )
    assert [c.index for c in got.choices] == [0, 1, 2, 3]
    for c in got.choices:
        prompt, k = PROMPTS[c.index // 2], c.index % 2
        assert c.text == served.expect(prompt, 12, temperature=0.9, top_p=0.8, seed=7 + k).text
    assert got.choices[0].text != got.choices[1].text  # the two seeds differ


def test_streaming_completion_concatenates_to_the_offline_text(served):
    for prompt in PROMPTS:
        stream = served.client().completions.create(
            model="tiny", prompt=prompt, max_tokens=40, temperature=0, stream=True,
            stream_options={"include_usage": True},
        )  # fmt: skip
        chunks = list(stream)
        want = served.expect(prompt, 40)
        assert "".join(c.choices[0].text for c in chunks if c.choices) == want.text
        assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == want.finish_reason
        assert chunks[-1].usage.completion_tokens == len(want.token_ids)


def test_stop_strings_cut_the_text_in_both_modes(served):
    prompt = PROMPTS[0]
    full = served.expect(prompt, 40, ignore_eos=True).text
    stop = full[10:12]
    want = served.expect(prompt, 40, ignore_eos=True, stop=[stop])
    assert want.finish_reason == "stop" and stop not in want.text
    client = served.client()
    args = dict(
        model="tiny", prompt=prompt, max_tokens=40, temperature=0, stop=stop, extra_body={"ignore_eos": True}
    )
    assert client.completions.create(**args).choices[0].text == want.text
    streamed = "".join(c.choices[0].text for c in client.completions.create(stream=True, **args))
    assert streamed == want.text


def test_chat_with_the_plain_template(served):
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi there"}]
    prompt = render_chat(served.offline.tokenizer, messages)
    assert prompt == "system: Be brief.\nuser: Hi there\nassistant:"
    want = served.expect(prompt, 20)
    client = served.client()
    got = client.chat.completions.create(model="tiny", messages=messages, max_tokens=20, temperature=0)
    assert got.choices[0].message.content == want.text
    assert got.choices[0].message.role == "assistant"
    assert got.usage.prompt_tokens == len(want.prompt_token_ids)
    chunks = list(
        client.chat.completions.create(
            model="tiny", messages=messages, max_tokens=20, temperature=0, stream=True
        )
    )
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == want.text


def test_logprobs_equal_the_engines(served):
    want = served.expect(PROMPTS[1], 6, logprobs=3)
    got = served.client().completions.create(
        model="tiny", prompt=PROMPTS[1], max_tokens=6, temperature=0, logprobs=3
    )
    lp = got.choices[0].logprobs
    chosen = [entry[t] for t, entry in zip(want.token_ids, want.logprobs, strict=True)]
    assert lp.token_logprobs == pytest.approx(chosen, abs=1e-4)
    assert all(len(top) <= 3 for top in lp.top_logprobs)
    # Greedy: the chosen token is the most likely one (alternatives are keyed by text, and several
    # byte tokens share the text U+FFFD, so compare values, not keys).
    assert all(max(top.values()) <= c + 1e-4 for top, c in zip(lp.top_logprobs, chosen, strict=True))
    chat = served.client().chat.completions.create(
        model="tiny", messages=[{"role": "user", "content": "x"}], max_tokens=3, temperature=0,
        logprobs=True, top_logprobs=2,
    )  # fmt: skip
    content = chat.choices[0].logprobs.content
    assert len(content) == 3 and all(len(c.top_logprobs) == 2 for c in content)


def test_64_concurrent_streaming_clients_get_their_own_outputs(served):
    prompts = [f"client {i}: " + "abcdefghij"[: i % 10] for i in range(64)]
    wants = served.offline.generate(prompts, SamplingParams(max_tokens=24), use_tqdm=False)

    async def one(client, prompt):
        stream = await client.completions.create(
            model="tiny", prompt=prompt, max_tokens=24, temperature=0, stream=True
        )
        return "".join([c.choices[0].text async for c in stream])

    async def run():
        client = openai.AsyncOpenAI(base_url=f"{served.url}/v1", api_key=KEY, max_retries=0)
        return await asyncio.gather(*(one(client, p) for p in prompts))

    texts = asyncio.run(run())
    assert texts == [w.text for w in wants]
    assert served.engine.cache.all_free()


BAD_REQUESTS = [
    # (route, body, status, param)
    ("completions", b"{not json", 400, None),
    ("completions", b"[1, 2]", 400, None),
    ("completions", {"model": "tiny", "prompt": "x", "max_tokens": "5"}, 400, "max_tokens"),
    ("completions", {"model": "tiny", "prompt": 3}, 400, "prompt"),
    ("completions", {"model": "gpt-9", "prompt": "x"}, 404, "model"),
    ("completions", {"prompt": "x"}, 400, "model"),
    ("completions", {"model": "tiny", "prompt": ""}, 400, "prompt"),
    ("completions", {"model": "tiny", "prompt": []}, 400, "prompt"),
    ("completions", {"model": "tiny", "prompt": "a" * (CONTEXT + 5)}, 400, "prompt"),
    ("completions", {"model": "tiny", "prompt": "x", "max_tokens": 0}, 400, "max_tokens"),
    ("completions", {"model": "tiny", "prompt": "x", "max_tokens": -3}, 400, "max_tokens"),
    ("completions", {"model": "tiny", "prompt": "x", "max_tokens": 10**12}, 400, "max_tokens"),
    ("completions", {"model": "tiny", "prompt": "x", "temperature": -0.1}, 400, "temperature"),
    ("completions", {"model": "tiny", "prompt": "x", "top_p": 0}, 400, "top_p"),
    ("completions", {"model": "tiny", "prompt": "x", "top_p": 1.5}, 400, "top_p"),
    ("completions", {"model": "tiny", "prompt": "x", "n": 0}, 400, "n"),
    ("completions", {"model": "tiny", "prompt": "x", "bogus": 1}, 400, "bogus"),
    ("completions", {"model": "tiny", "prompt": [1, 256]}, 400, "prompt"),
    ("completions", {"model": "tiny", "prompt": [[-1]]}, 400, "prompt"),
    ("completions", {"model": "tiny", "prompt": "x", "stop": [""]}, 400, "stop"),
    ("completions", {"model": "tiny", "prompt": "x", "logit_bias": {"1": 5}}, 400, "logit_bias"),
    ("completions", {"model": "tiny", "prompt": "x", "stream": "yes"}, 400, "stream"),
    ("completions", {"model": "tiny", "prompt": "x" * 70_000}, 413, None),
    ("completions", {"model": "tiny", "prompt": "x", "stop_token_ids": [-2]}, 400, "stop_token_ids"),
    ("completions", {"model": "tiny", "prompt": "x", "max_tokens": 2, "min_tokens": 5}, 400, "min_tokens"),
    ("chat/completions", {"model": "tiny", "messages": []}, 400, "messages"),
    (
        "chat/completions",
        {"model": "tiny", "messages": [{"role": "wizard", "content": "x"}]},
        400,
        "messages",
    ),
    (
        "chat/completions",
        {"model": "tiny", "messages": [{"role": "user", "content": "x"}], "tools": [{}]},
        400,
        "tools",
    ),
]


@pytest.mark.parametrize("route,body,status,param", BAD_REQUESTS)
def test_bad_requests_get_an_openai_error_and_the_server_keeps_serving(served, route, body, status, param):
    headers = {"Authorization": f"Bearer {KEY}"}
    if isinstance(body, dict):
        r = httpx.post(f"{served.url}/v1/{route}", json=body, headers=headers)
    else:
        r = httpx.post(
            f"{served.url}/v1/{route}", content=body, headers={**headers, "Content-Type": "application/json"}
        )
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    assert error["param"] == param
    good = served.client().completions.create(model="tiny", prompt="ok", max_tokens=2, temperature=0)
    assert good.usage.completion_tokens >= 1


def test_unknown_paths_and_methods_get_error_bodies(served):
    r = httpx.get(f"{served.url}/v1/nothing", headers={"Authorization": f"Bearer {KEY}"})
    assert r.status_code == 404 and r.json()["error"]["message"]
    r = httpx.get(f"{served.url}/v1/completions", headers={"Authorization": f"Bearer {KEY}"})
    assert r.status_code == 405 and r.json()["error"]["message"]


def test_api_key(served):
    for key in ("wrong", KEY[:-1], KEY + "x"):
        with pytest.raises(openai.AuthenticationError):
            served.client(key).models.list()
    r = httpx.post(f"{served.url}/v1/completions", json={"model": "tiny", "prompt": "x"})
    assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
    r = httpx.get(f"{served.url}/v1/models", headers={"Authorization": KEY})  # no "Bearer"
    assert r.status_code == 401
    assert [m.id for m in served.client().models.list().data] == ["tiny"]
    assert httpx.get(f"{served.url}/health").json() == {"status": "ok"}  # open, for load balancers


def wait_until_idle(served, timeout: float = 20.0) -> dict[str, float]:
    deadline = time.monotonic() + timeout
    while True:
        m = served.metrics()
        used = sum(v for k, v in m.items() if k.startswith("attnlab:cache_blocks_used"))
        if used == 0 and m['attnlab:num_requests_running{model_name="tiny"}'] == 0:
            return m
        assert time.monotonic() < deadline, f"cache still in use: {m}"
        time.sleep(0.1)


def test_a_client_that_disconnects_frees_its_cache(served):
    key = 'attnlab:generation_tokens_total{model_name="tiny"}'
    before = wait_until_idle(served)[key]
    body = {"model": "tiny", "prompt": "long one", "max_tokens": 240, "temperature": 0, "ignore_eos": True}
    headers = {"Authorization": f"Bearer {KEY}"}
    with httpx.stream(
        "POST", f"{served.url}/v1/completions", json={**body, "stream": True}, headers=headers
    ) as r:
        lines = r.iter_lines()
        assert next(lines).startswith("data: ")
        busy = served.metrics()
        assert busy['attnlab:cache_blocks_used{model_name="tiny",pool="slots"}'] == 1
    after = wait_until_idle(served)[key]
    assert after - before < 240, "the request ran to the end instead of being aborted"
    # Non-streaming: the client gives up waiting.
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{served.url}/v1/completions", json=body, headers=headers, timeout=0.3)
    final = wait_until_idle(served)[key]
    assert final - after < 240


def test_metrics_count_tokens_and_latencies(served):
    wait_until_idle(served)
    m0 = served.metrics()
    got = served.client().completions.create(
        model="tiny", prompt="count me", max_tokens=5, temperature=0, extra_body={"ignore_eos": True}
    )
    m1 = wait_until_idle(served)
    label = '{model_name="tiny"}'
    assert (
        m1[f"attnlab:prompt_tokens_total{label}"] - m0[f"attnlab:prompt_tokens_total{label}"]
        == got.usage.prompt_tokens
    )
    assert m1[f"attnlab:generation_tokens_total{label}"] - m0[f"attnlab:generation_tokens_total{label}"] == 5
    for name in ("time_to_first_token_seconds", "e2e_request_latency_seconds"):
        assert m1[f"attnlab:{name}_count{label}"] - m0[f"attnlab:{name}_count{label}"] == 1
    assert (
        m1[f"attnlab:time_per_output_token_seconds_count{label}"]
        - m0[f"attnlab:time_per_output_token_seconds_count{label}"]
        == 4
    )
    assert m1['attnlab:cache_blocks_free{model_name="tiny",pool="slots"}'] == served.engine.cache.max_seqs


def test_preemptions_are_counted():
    """A budget that forces preemption (as in the engine's tests): the counter follows the scheduler."""
    torch.manual_seed(0)
    model = AttnLabForCausalLM(
        AttnLabConfig(vocab_size=64, hidden_size=32, num_attention_heads=4, intermediate_size=64)
    ).eval()
    budget = int(1.5 * model.state_bytes(48))
    engine = LLMEngine(
        model, None, EngineConfig(cache_memory=budget, max_num_batched_tokens=16, max_model_len=48)
    )
    metrics = ServerMetrics("m")
    runner = AsyncEngine(engine, on_step=metrics.observe)
    runner.start()

    async def run():
        jobs = [([1 + i] * 20, SamplingParams(max_tokens=20, ignore_eos=True), f"r{i}") for i in range(5)]
        async for _ in await runner.submit(jobs):
            pass

    asyncio.run(run())
    runner.shutdown()
    text = metrics.render().decode()
    count = float(re.search(r'^attnlab:num_preemptions_total\{model_name="m"\} (\S+)$', text, re.M).group(1))
    assert engine.scheduler.num_preemptions > 0 and count == engine.scheduler.num_preemptions
    assert engine.cache.all_free()


def test_async_engine_rejects_a_bad_request_before_streaming_and_keeps_serving():
    torch.manual_seed(0)
    model = AttnLabForCausalLM(
        AttnLabConfig(vocab_size=64, hidden_size=32, num_attention_heads=4, intermediate_size=64)
    ).eval()
    runner = AsyncEngine(LLMEngine(model, None, EngineConfig(cache_memory="8MiB", max_model_len=32)))
    runner.start()

    async def run():
        with pytest.raises(ValueError, match="exceeds max_model_len"):
            await runner.submit(
                [
                    ([1, 2], SamplingParams(max_tokens=4), "ok"),
                    ([1] * 30, SamplingParams(max_tokens=8), "long"),
                ]
            )
        outs = [out async for _, out in await runner.submit([([1, 2], SamplingParams(max_tokens=3), "next")])]
        return outs

    outs = asyncio.run(run())
    runner.shutdown()
    assert len(outs) == 3 and outs[-1].finished
    assert runner.engine.cache.all_free()


def test_serve_cli_drains_on_sigterm_and_exits_cleanly(served, tmp_path):
    port = free_port()
    env = {**os.environ, "ATTNLAB_API_KEY": ""}
    proc = subprocess.Popen(
        [sys.executable, "-m", "attnlab.cli", "serve", str(served.folder), "--port", str(port),
         "--served-model-name", "tiny", "--cache-memory", "32MiB", "--drain-timeout", "30", "--log-level", "warning"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
    )  # fmt: skip
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, proc.stdout.read()
            try:
                if httpx.get(f"{url}/health").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "attnlab serve did not come up"
            time.sleep(0.2)
        body = {
            "model": "tiny",
            "prompt": "drain me",
            "max_tokens": 150,
            "temperature": 0,
            "ignore_eos": True,
            "stream": True,
        }
        with httpx.stream("POST", f"{url}/v1/completions", json=body, timeout=60) as r:
            lines = r.iter_lines()
            assert next(lines).startswith("data: ")
            proc.send_signal(signal.SIGTERM)  # the open stream is allowed to finish
            rest = [line for line in lines if line]
        assert rest[-1] == "data: [DONE]"
        assert '"finish_reason": "length"' in rest[-2]
        assert proc.wait(60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()


def test_serve_cli_rejects_bad_options_before_loading(tmp_path, capsys):
    from attnlab.cli import main

    assert main(["serve", str(tmp_path / "missing"), "--port", "1"]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["serve", str(tmp_path), "--cache-memory", "lots"]) == 2
    assert "cache_memory" in capsys.readouterr().err
    assert main(["serve", str(tmp_path), "--port", "70000"]) == 2
    assert main(["serve", str(tmp_path), "--layer-groups", "2"]) == 2
    assert "layer_groups = 2: only used with schedule = 'layered'" in capsys.readouterr().err
    from attnlab.cli import build_parser

    assert build_parser().parse_args(["serve", "x"]).host == "127.0.0.1"  # loopback unless told


def test_http_bench_against_the_server_and_the_offline_engine(served, tmp_path):
    """`bench serve --url` streams the workloads at a live server; `--offline` runs them through the
    engine in-process; both land in one table with ratios."""
    from attnlab.cli import main

    out = tmp_path / "bench"
    common = ["bench", "serve", "--out", str(out), "--batches", "1,3", "--prompt-len", "8", "--new-tokens", "5",
              "--rounds", "2", "--poisson-requests", "3", "--poisson-rate", "40"]  # fmt: skip
    assert main([*common, "--url", served.url, "--api-key", KEY, "--label", "server"]) == 0
    assert main([*common, "--offline", str(served.folder), "--label", "offline"]) == 0
    results = __import__("json").loads((out / "http_results.json").read_text())
    for label in ("server", "offline"):
        rows = results["servers"][label]["rows"]
        assert [r["workload"] for r in rows] == ["1 clients", "3 clients", "Poisson 40/s"]
        assert [r["requests"] for r in rows] == [2, 6, 3]
        for r in rows:
            assert r["failed"] == 0
            assert r["output_tokens_per_s"] == pytest.approx(5 * r["requests"] / r["wall_s"])
            assert 0 < r["ttft_p50_s"] <= r["ttft_p99_s"]
    table = (out / "bench_http.md").read_text()
    assert "| server | 3 clients |" in table and "| offline | 3 clients |" in table
    assert "server / offline" in table
    # A server that is not there: a clear error, not a traceback.
    assert main([*common, "--url", f"http://127.0.0.1:{free_port()}", "--label", "gone"]) == 1


def test_chat_uses_the_tokenizers_template_when_it_has_one():
    tok = byte_tokenizer()
    tok.chat_template = (
        "{% for m in messages %}<{{ m.role }}>{{ m.content }}{% endfor %}"
        "{% if add_generation_prompt %}<assistant>{% endif %}"
    )
    assert render_chat(tok, [{"role": "user", "content": "hi"}]) == "<user>hi<assistant>"
    assert render_chat(byte_tokenizer(), [{"role": "user", "content": "hi"}]) == "user: hi\nassistant:"
