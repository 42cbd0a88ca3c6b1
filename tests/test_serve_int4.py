"""An INT4 (pack-quantized) model in the serving engine and the HTTP server: the openai client gets
the offline engine's text for the same INT4 folder; the engine and /metrics report the weights as
stored (packed bytes, checked against quant.weight_bytes and a float model); the FLOP count of
prefix caching's cost model is the float model's (an Int4Linear does the same matmul)."""

from __future__ import annotations

import copy

import httpx
import openai
from test_serve_http import ENGINE, KEY, save_model, start_server

from attnlab.quant import Int4Linear, QuantScheme, quantize_model, save_int4, weight_bytes
from attnlab.serve import LLM, LLMEngine, SamplingParams
from attnlab.serve.flops import PrefillCost
from attnlab.serve.llm import load_for_serving


def int4_folder(tmp_path):
    model, tokenizer = load_for_serving(save_model(tmp_path / "float"), "cpu")
    float_model = copy.deepcopy(model)
    quantize_model(model, QuantScheme(group_size=16))  # the tiny model is 32 wide: two groups per row
    return float_model, save_int4(model, tokenizer, tmp_path / "int4")


def test_int4_folder_serves_over_http_with_the_offline_text_and_packed_weight_bytes(tmp_path):
    float_model, folder = int4_folder(tmp_path)
    model, tokenizer = load_for_serving(folder, "cpu")
    assert any(isinstance(m, Int4Linear) for m in model.modules())
    engine = LLMEngine(model, tokenizer, LLM(model, tokenizer, **ENGINE).engine.config)
    assert engine.weight_bytes == weight_bytes(model) < weight_bytes(float_model)
    url, stop = start_server(engine)
    client = openai.OpenAI(base_url=f"{url}/v1", api_key=KEY, max_retries=0)
    prompts = ["The cat", "attention is", "0123"]
    try:
        got = [
            client.completions.create(model="tiny", prompt=p, max_tokens=12, temperature=0).choices[0].text
            for p in prompts
        ]
        metrics = httpx.get(f"{url}/metrics").text
    finally:
        stop()
    offline = LLM(folder, **ENGINE).generate(prompts, SamplingParams(max_tokens=12), use_tqdm=False)
    assert got == [o.text for o in offline]
    assert f'attnlab:model_weight_bytes{{model_name="tiny"}} {float(engine.weight_bytes)}' in metrics


def test_prefill_flops_of_an_int4_model_equal_the_float_model(tmp_path):
    float_model, folder = int4_folder(tmp_path)
    model, _ = load_for_serving(folder, "cpu")
    assert PrefillCost(model).per_token == PrefillCost(float_model).per_token
    assert PrefillCost(model)(100, 30) == PrefillCost(float_model)(100, 30)
