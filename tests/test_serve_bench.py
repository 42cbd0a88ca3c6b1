"""`attnlab bench serve` on a tiny shape: it writes its JSON and markdown, the engine's greedy tokens
equal both generate() peers', and the Llama peer holds the same function as the attnlab model."""

from __future__ import annotations

import json

import pytest
import torch

from attnlab import AttnLabConfig, AttnLabForCausalLM
from attnlab.archs.llama import to_llama
from attnlab.cli import main
from attnlab.serve.bench import BenchOptions, run


def tiny_options(tmp_path, **kw) -> BenchOptions:
    return BenchOptions(out=tmp_path / "bench", families=["full", "lightning"], batches=[1, 3], prompt_len=12,
                        new_tokens=4, hidden=32, layers=2, heads=2, cache_memory="64MiB", poisson_rate=200.0,
                        poisson_requests=3, decode_contexts=(16, 48), repeats=2, **kw)  # fmt: skip


def test_tiny_run_writes_json_and_markdown_with_equal_tokens(tmp_path):
    opts = tiny_options(tmp_path)
    results = run(opts, progress=lambda line: None)
    saved = json.loads((opts.out / "results.json").read_text())
    assert saved["rows"] == json.loads(json.dumps(results["rows"]))
    assert [(r["family"], r["batch"]) for r in saved["rows"]] == [
        ("full", 1),
        ("full", 3),
        ("lightning", 1),
        ("lightning", 3),
    ]
    for row in saved["rows"]:
        assert row["engine"]["output_tokens_per_s"] > 0 and row["engine"]["ttft_mean_s"] > 0
        assert len(row["engine"]["repeats_tokens_per_s"]) == 2
        assert row["engine"]["output_tokens_per_s"] in row["engine"]["repeats_tokens_per_s"]
        assert all(row["tokens_equal"].values()), row["tokens_equal"]
        assert ("hf_llama_generate" in row) == (row["family"] == "full")
    assert saved["poisson"]["full"]["requests"] == 3
    assert set(saved["decode_cost_s"]["lightning"]) == {"16", "48"} and set(
        saved["decode_cost_s"]["full"]
    ) == {"16", "48"}
    md = (opts.out / "bench_serve.md").read_text()
    assert "| full | 3 |" in md and "Poisson" in md and "ctx 48" in md


def test_llama_conversion_keeps_the_logits():
    torch.manual_seed(0)
    cfg = AttnLabConfig(vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                        num_key_value_heads=2, layers="F", initializer_range=0.2)  # fmt: skip
    model = AttnLabForCausalLM(cfg).eval()
    x = torch.randint(0, 64, (2, 19))
    with torch.no_grad():
        diff = (to_llama(model)(x).logits - model(x).logits).abs().max().item()
    assert diff < 1e-4


def test_llama_conversion_refuses_other_families():
    cfg = AttnLabConfig(
        vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, layers="LF"
    )
    with pytest.raises(ValueError, match="only plain full-attention"):
        to_llama(AttnLabForCausalLM(cfg))


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--families", "full,mamba"], "invalid families"),
        (["--batches", "8,0"], "invalid batch sizes"),
        (["--poisson-rate", "0"], "--poisson-rate 0"),
    ],
)
def test_cli_errors_name_the_argument(argv, message, capsys):
    try:
        code = main(["bench", "serve", *argv])
    except SystemExit as exc:
        code = exc.code
    assert code == 2
    assert message in capsys.readouterr().err
