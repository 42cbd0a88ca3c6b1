"""`attnlab bench schedule` on a tiny run: all three outputs, numbers that agree with each other and
with what the schedules must do (layered prefill loads fewer experts per prompt token), and clear
errors for bad flags."""

from __future__ import annotations

import json

import pytest

from attnlab.cli import main

TINY = ["--requests", "3", "--prompt-len", "64", "--new-tokens", "3", "--decoders", "2", "--token-budget", "16",
        "--hidden", "32", "--layers", "4", "--heads", "2", "--experts", "8", "--expert-size", "32"]  # fmt: skip


def test_tiny_run_writes_consistent_results(tmp_path):
    out = tmp_path / "sched"
    args = ["bench", "schedule", "--out", str(out), "--models", "full-moe,hybrid-dense", "--loads", "0.5,1"]
    assert main([*args, *TINY]) == 0
    results = json.loads((out / "results.json").read_text())
    assert (out / "schedule.png").stat().st_size > 0
    points = results["points"]
    assert {(p["model"], p["load"], p["schedule"]) for p in points} == {
        (m, load, s)
        for m in ("full-moe", "hybrid-dense")
        for load in (0.5, 1.0)
        for s in ("chunked", "layered")
    }
    prefill = {m: results["models"][m]["prefill_alone_s"] for m in results["models"]}
    md = (out / "schedule.md").read_text()
    for p in points:
        assert p["requests"] == 3
        assert p["rate_requests_per_s"] == pytest.approx(p["load"] / prefill[p["model"]])
        assert p["ttft_p50_s"] <= p["ttft_p99_s"] <= p["e2e_p99_s"]
        assert p["tbt_p50_s"] <= p["tbt_p99_s"]
        row = f"| {p['model']} | {p['load']} | {p['schedule']} | {p['ttft_p50_s'] * 1e3:.0f} |"
        assert row in md
        if p["model"].endswith("dense"):
            assert p["expert_bytes_per_prompt_token"] is None
        else:
            assert 32 <= p["prompt_tokens"] and p["expert_bytes_per_prompt_token"] > 0
    for load in (0.5, 1.0):
        by = {p["schedule"]: p for p in points if p["model"] == "full-moe" and p["load"] == load}
        layered, chunked = (by[s]["expert_bytes_per_prompt_token"] for s in ("layered", "chunked"))
        assert layered < chunked  # 16-token chunks load most experts; a whole prompt loads each once
    assert "## Layered / chunked" in md


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--models", "full-moe,tiny"], "invalid models"),
        (["--loads", "0"], "--loads [0.0]: expected positive numbers"),
        (["--layer-groups", "9", "--layers", "8"], "--layer-groups 9: at most --layers 8"),
        (["--top-k", "9"], "--top-k 9: must be in 1..--experts (8)"),
        (["--schedules", "pipelined"], "invalid schedules"),
        (["--decoders", "-1"], "--decoders -1: must be 0 or more"),
    ],
)
def test_bad_flags_are_clear_errors(tmp_path, capsys, flags, message):
    try:
        code = main(["bench", "schedule", "--out", str(tmp_path / "x"), *flags])
    except SystemExit as e:  # argparse's own checks
        code = e.code
    assert code == 2
    assert message in capsys.readouterr().err
