"""The prefix caching benchmark: a tiny run end to end (every family x workload x config, outputs
equal to `off`'s, no leaks, the markdown tables read from the JSON), the workloads' prompts, the
default budget's tightness, and the command line's errors."""

from __future__ import annotations

import json

import pytest

from attnlab.cli import main
from attnlab.serve.prefix_bench import (
    CONFIGS,
    DEFAULT_FAMILIES,
    WORKLOADS,
    ChatWorkload,
    PrefixBenchOptions,
    auto_budget,
    build_model,
    chat_workload,
    few_shot_workload,
    max_len,
    prefix_footprint,
)

TINY = ["--families", "full,qwen3next-3to1", "--conversations", "3", "--turns", "2:3", "--system-len", "32",
        "--user-len", "8", "--new-tokens", "4", "--shots", "3", "--few-shot-requests", "8", "--wave", "2",
        "--hidden", "32", "--layers", "4", "--heads", "2", "--block-size", "4", "--max-num-seqs", "2",
        "--threads", "1"]  # fmt: skip


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("prefix") / "run"
    assert main(["bench", "prefix", "--out", str(out), *TINY]) == 0
    return json.loads((out / "results.json").read_text()), (out / "prefix.md").read_text()


def test_tiny_run_covers_every_family_workload_and_config(tiny_run):
    results, _ = tiny_run
    runs = {(r["family"], r["workload"], r["config"]): r for r in results["runs"]}
    assert set(runs) == {(f, w, c) for f in ("full", "qwen3next-3to1") for w in WORKLOADS for c in CONFIGS}
    assert results["layouts"] == {"full": "FFFF", "qwen3next-3to1": "LLLF"}
    for (family, workload, config), r in runs.items():
        assert r["outputs_match"] and r["mismatched_requests"] == 0, (family, workload, config)
        assert r["leaks"] == [], (family, workload, config)
        assert r["output_tokens"] == 4 * r["requests"]
        assert r["tokens_per_s"] == pytest.approx((r["prompt_tokens"] + r["output_tokens"]) / r["wall_s"])
        assert 0 < r["ttft_p50_s"] <= r["ttft_p90_s"]
        off = runs[family, workload, "off"]
        assert r["speedup_vs_off"] == pytest.approx(off["wall_s"] / r["wall_s"])
        assert r["cpu_speedup_vs_off"] == pytest.approx(off["cpu_s"] / r["cpu_s"])
        assert r["prompt_tokens"] == off["prompt_tokens"]  # the same outputs, so the same later prompts
        if config == "off":
            assert r["hit_rate"] == 0 and r["held_bytes_peak"] == r["evictions"] == r["checkpoints_peak"] == 0
        else:
            assert r["held_bytes_end"] <= r["held_bytes_peak"] <= r["budget_bytes"]
            if r["preemptions"] == 0:  # each request admitted once: the outputs' count is the cache's
                assert r["hit_rate"] == pytest.approx(r["stats_hit_rate"])
    for family in ("full", "qwen3next-3to1"):
        assert runs[family, "chat", "cost"]["hit_rate"] > 0
        assert runs[family, "few-shot", "cost"]["hit_rate"] > 0
    assert runs["full", "chat", "cost"]["checkpoints_peak"] == 0
    assert runs["qwen3next-3to1", "chat", "cost"]["checkpoints_peak"] > 0
    # The default budget is tight: something was evicted.
    assert any(r["evictions"] for r in results["runs"])


def _md_tables(md: str) -> dict[str, list[list[str]]]:
    """Section title -> the rows of its table (cells stripped), header and rule left out."""
    tables, title = {}, None
    for line in md.splitlines():
        if line.startswith("## "):
            title = line[3:]
        elif line.startswith("| ") and title is not None and not line.startswith("| family"):
            tables.setdefault(title, []).append([c.strip() for c in line.strip("|").split("|")])
    return tables


def test_markdown_tables_match_the_json(tiny_run):
    results, md = tiny_run
    tables = _md_tables(md)
    assert set(tables) == {"Multi-turn chat", "Few-shot"}
    assert "What it says:" in md and "kernels (" in md
    for title, workload in (("Multi-turn chat", "chat"), ("Few-shot", "few-shot")):
        runs = [r for r in results["runs"] if r["workload"] == workload]
        rows = tables[title]
        assert len(rows) == len(runs)
        for row, r in zip(rows, runs, strict=True):
            family, config, hit, _, _, tps, _, speedup, cpu_speedup, held, ckpts, evictions, preemptions = row
            assert (family, config) == (r["family"], r["config"])
            assert float(hit.rstrip("%")) == pytest.approx(100 * r["hit_rate"], abs=0.051)
            assert float(tps.replace(",", "")) == pytest.approx(r["tokens_per_s"], abs=0.51)
            assert float(speedup.rstrip("x")) == pytest.approx(r["speedup_vs_off"], abs=0.0051)
            assert float(cpu_speedup.rstrip("x")) == pytest.approx(r["cpu_speedup_vs_off"], abs=0.0051)
            peak, end = (float(x) for x in held.split(" / "))
            assert peak == pytest.approx(r["held_bytes_peak"] / 2**20, abs=0.051)
            assert end == pytest.approx(r["held_bytes_end"] / 2**20, abs=0.051)
            assert (int(ckpts), int(evictions), int(preemptions)) == (
                r["checkpoints_end"], r["evictions"], r["preemptions"],
            )  # fmt: skip
    assert "produced `off`'s tokens for every request" in md


def test_chat_turns_extend_the_previous_prompt_and_output():
    opts = PrefixBenchOptions(conversations=3, turns=(1, 3), system_len=5, user_len=2, new_tokens=3)
    w = chat_workload(opts)
    assert isinstance(w, ChatWorkload) and all(1 <= len(m) <= 3 for m in w.messages)
    outputs, prompts = {}, {}
    for turn in range(w.rounds):
        batch = w.round(turn, outputs)
        assert [rid for rid, _ in batch] == [
            w.request_id(c, turn) for c, m in enumerate(w.messages) if turn < len(m)
        ]
        for rid, prompt in batch:
            c = int(rid[1:4])
            assert prompt[:5] == w.system and prompt[-2:] == w.messages[c][turn]
            if turn:
                before = w.request_id(c, turn - 1)
                assert prompt == prompts[before] + outputs[before] + w.messages[c][turn]
            prompts[rid], outputs[rid] = prompt, [7, 8, 9]
    assert len(prompts) == w.requests
    longest = max(len(p) for p in prompts.values()) + 3
    assert w.longest == longest
    assert w.distinct_tokens == 5 + sum(len(m) * 5 for m in w.messages)
    assert chat_workload(opts).messages == w.messages  # seeded


def test_few_shot_waves_share_one_prefix():
    opts = PrefixBenchOptions(shots=3, user_len=4, new_tokens=2, few_shot_requests=5, wave=2)
    w = few_shot_workload(opts)
    assert len(w.prefix) == 3 * (4 + 2) and w.rounds == 3
    waves = [w.round(i, {}) for i in range(w.rounds)]
    assert [len(b) for b in waves] == [2, 2, 1]
    prompts = [p for b in waves for _, p in b]
    assert all(p[:18] == w.prefix and len(p) == 22 for p in prompts)
    assert len({tuple(p) for p in prompts}) == 5  # distinct questions


@pytest.mark.parametrize("family", DEFAULT_FAMILIES)
def test_the_default_budget_does_not_hold_every_prefix(family):
    """By default the cached prefixes cannot all stay (eviction must choose), yet `off` runs its
    whole batch at once: the budget holds max_num_seqs sequences of the longest length."""
    opts = PrefixBenchOptions()
    for make in (chat_workload, few_shot_workload):
        w = make(opts)
        model = build_model(family, opts, max_len(w, opts.block_size))
        budget = auto_budget(model, w, opts)
        assert budget < prefix_footprint(model, w, opts.block_size)
        assert budget >= min(opts.max_num_seqs, w.concurrency) * model.state_bytes(w.longest)


@pytest.mark.parametrize(
    "args, flags",
    [
        (["--turns", "8:4"], ["--turns", "LO <= HI"]),
        (["--turns", "x"], ["--turns"]),
        (["--families", "full,bogus"], ["--families", "allowed", "minimax-7to1"]),
        (["--workloads", "chat,rag"], ["--workloads", "few-shot"]),
        (["--block-size", "0"], ["--block-size", "positive"]),
    ],
)
def test_bad_values_are_argparse_errors_naming_the_flag(args, flags, capsys, tmp_path):
    with pytest.raises(SystemExit) as e:
        main(["bench", "prefix", "--out", str(tmp_path / "x"), *args])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert all(f in err for f in flags), err


@pytest.mark.parametrize(
    "args, flags",
    [
        (["--interval", "40"], ["--interval 40", "multiple of --block-size 16"]),
        (["--interval", "16", "--block-size", "32"], ["--interval 16", "multiple of --block-size 32"]),
        (["--cache-memory", "lots"], ["--cache-memory", "'auto'"]),
        (["--cache-fraction", "0"], ["--cache-fraction", "> 0"]),
    ],
)
def test_inconsistent_values_exit_2_naming_the_flag(args, flags, capsys, tmp_path):
    code = main(["bench", "prefix", "--out", str(tmp_path / "x"), *args])
    err = capsys.readouterr().err
    assert code == 2 and all(f in err for f in flags), err
    assert not (tmp_path / "x").exists()  # rejected before anything runs
