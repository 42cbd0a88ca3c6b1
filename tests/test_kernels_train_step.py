"""`attnlab bench train-step`: runs at tiny shapes and writes the builtin, ranked and Llama rows,
each attnlab row with the kernels that ran, without touching the user's ranking cache."""

from __future__ import annotations

import json

from attnlab.cli import main


def test_bench_train_step_writes_both_rows_and_the_peer(tmp_path, monkeypatch):
    cache = tmp_path / "user-cache.json"
    monkeypatch.setenv("ATTNLAB_KERNEL_CACHE", str(cache))
    out = tmp_path / "bench"
    code = main(["bench", "train-step", "--out", str(out), "--batch", "2", "--length", "16", "--hidden", "32",
                 "--layers", "1", "--heads", "2", "--warmup", "1", "--repeats", "1", "--rank-reps", "1"])  # fmt: skip
    assert code == 0
    results = json.loads((out / "results.json").read_text())
    builtin, ranked, llama = results["rows"]
    assert "builtin" in builtin["row"] and "ranked" in ranked["row"] and "Llama" in llama["row"]
    assert builtin["kernels"] == {"swa_prefill": "sdpa"}  # the built-in CPU order, whatever is cached
    assert ranked["kernels"]["swa_prefill"] == ranked["ranking"]["fwd+bwd"][0]
    assert builtin["vs_llama"] > 0 and ranked["vs_llama"] > 0 and llama["vs_llama"] is None
    assert "| attnlab, default: builtin" in (out / "results.md").read_text()
    assert not cache.exists()  # the ranking went to a temporary cache
