"""The harness: workload YAML, correctness verdicts (a wrong backend is caught), traces with
FlashInfer-Bench's fields, rankings, the bmm yardstick, and the CLI's outputs and errors."""

from __future__ import annotations

import json

import pytest
import torch

from attnlab.kernels import dispatch, harness, registry, report
from attnlab.kernels.registry import Solution
from attnlab.kernels.workloads import expand, suite_workloads

CPU = torch.device("cpu")
TINY = {
    "models": {"tiny": {"heads": 2, "head_dim": 16, "kv_heads": 1, "window": 4, "sinks": True}},
    "suites": {
        "t": {
            "lightning_prefill": [{"model": "tiny", "seq_len": [9, 20], "dtype": ["float32", "bfloat16"]}],
            "lightning_decode": [{"model": "tiny", "batch": 2}],
            "swa_prefill": [{"model": "tiny", "seq_len": 11}],
        }
    },
}


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("ATTNLAB_KERNEL_CACHE", str(tmp_path / "kernels.json"))
    dispatch.forget()
    yield
    dispatch.forget()


def test_entries_expand_to_the_product_of_their_lists():
    rows = expand({"a": [1, 2], "b": ["x", "y", "z"], "c": 0, "pack": [[1, 2], [3]]})
    assert len(rows) == 12 and {"a": 2, "b": "z", "c": 0, "pack": [3]} in rows


def test_model_fields_fill_entries_and_entries_override():
    loads = suite_workloads(TINY, "t")
    assert [w.axes["T"] for w in loads["lightning_prefill"]] == [9, 9, 20, 20]
    (swa,) = loads["swa_prefill"]
    assert (swa.axes["H"], swa.axes["Hkv"], swa.inputs["window"]["value"]) == (
        2,
        1,
        4,
    ) and "sinks" in swa.inputs


@pytest.mark.parametrize(
    "suites, message",
    [
        (
            {"t": {"lightning_prefill": [{"seqlen": 4}]}},
            r"suites\.t\.lightning_prefill\[0\]: unknown key\(s\) \['seqlen'\]",
        ),
        ({"t": {"lightning_prefill": [{"model": "big"}]}}, r"model = 'big' is unknown; allowed: tiny"),
        (
            {"t": {"lightning_prefil": [{}]}},
            r"op 'lightning_prefil' is unknown; allowed: .*lightning_prefill",
        ),
    ],
)
def test_bad_workload_entries_name_the_field(suites, message):
    with pytest.raises(ValueError, match=message):
        suite_workloads({"models": TINY["models"], "suites": suites}, "t")


def with_solution(monkeypatch, sol: Solution) -> None:
    """Make `sol` one of its op's backends for this test (the registry itself is left as it is)."""
    real = registry.solutions
    monkeypatch.setattr(
        registry, "solutions", lambda op: {**real(op), sol.name: sol} if op == sol.definition else real(op)
    )


def run_with_fake(monkeypatch, fn, **fields):
    sol = Solution(name="fake", definition="lightning_decode", fn=fn, spec={}, backward=True, **fields)
    with_solution(monkeypatch, sol)
    loads = {"lightning_decode": suite_workloads(TINY, "t", ["lightning_decode"])["lightning_decode"]}
    traces = harness.run(loads, CPU, backends=["torch", "fake"], reps=1)
    return {t.solution: t for t in traces}


def test_a_wrong_output_fails_numerically(monkeypatch):
    ref = registry.definition("lightning_decode").reference

    def off_by_one_percent(**kw):
        o, s = ref(**kw)
        return o * 1.01, s

    traces = run_with_fake(monkeypatch, off_by_one_percent)
    assert traces["torch"].evaluation["status"] == "PASSED"
    ev = traces["fake"].evaluation
    assert ev["status"] == "INCORRECT_NUMERICAL" and ev["correctness"]["relative_rmse"]["o"] == pytest.approx(
        0.01, rel=1e-3
    )
    assert "performance" not in ev  # failures are not timed


def test_a_wrong_gradient_fails_even_when_outputs_match(monkeypatch):
    ref = registry.definition("lightning_decode").reference

    def wrong_state_grad(q, k, v, slope, state):
        o, s = ref(q, k, v, slope, state.detach() if state is not None else None)  # drops d(state)
        return o + 0 * state.sum(), s

    ev = run_with_fake(monkeypatch, wrong_state_grad)["fake"].evaluation
    assert ev["status"] == "INCORRECT_NUMERICAL" and ev["correctness"]["relative_rmse"]["dstate"] > 0.5


def test_wrong_dtype_and_crashes_are_reported(monkeypatch):
    ref = registry.definition("lightning_decode").reference

    def fp64_state(**kw):
        o, s = ref(**kw)
        return o, s.double()

    assert run_with_fake(monkeypatch, fp64_state)["fake"].evaluation["status"] == "INCORRECT_DTYPE"

    def crash(**kw):
        raise RuntimeError("boom")

    ev = run_with_fake(monkeypatch, crash)["fake"].evaluation
    assert ev["status"] == "RUNTIME_ERROR" and "boom" in ev["log"]


def test_traces_rankings_and_yardstick(tmp_path):
    loads = suite_workloads(TINY, "t", ["lightning_prefill"])
    traces = harness.run(loads, CPU, backends=["torch", "torch_chunk", "fla_naive", "triton"], reps=1)
    t = next(t for t in traces if t.solution == "torch_chunk")
    ev = t.evaluation
    assert ev["status"] == "PASSED" and ev["correctness"]["checked"] == "outputs and gradients"
    assert set(ev["correctness"]["relative_rmse"]) == {"o", "final_state", "dq", "dk", "dv", "dinitial_state"}
    assert ev["performance"]["speedup_factor"] > 0 and "latency_fwd_bwd_ms" in ev["performance"]
    assert {"hardware", "libs", "threads"} <= set(ev["environment"])
    assert next(t for t in traces if t.solution == "triton").evaluation["status"] == "UNSUPPORTED"
    ranks = report.rankings(traces)["lightning_prefill"]
    assert set(ranks["fwd+bwd"]) == {"torch", "torch_chunk"}  # the peer fla_naive is never ranked
    rows = report.bmm_yardstick(traces, CPU, reps=1)
    assert len(rows) == 4 and all(0 < r["fraction_of_bmm"] and r["bmm_gflops"] > 0 for r in rows)
    path = report.write_run(tmp_path, "test", traces, {"rankings": {}}, rows)
    assert "| torch_chunk |" in path.read_text() and "same matmul shapes" in path.read_text()
    line = json.loads((tmp_path / "traces.jsonl").read_text().splitlines()[0])
    assert {"definition", "workload", "solution", "evaluation"} <= set(line)
    assert json.loads((tmp_path / "definitions.json").read_text())[0]["axes"]["T"] == {"type": "var"}


def test_cli_check_writes_results_and_stores_rankings(tmp_path):
    from attnlab.cli import main

    config = tmp_path / "k.yaml"
    config.write_text(json.dumps(TINY))  # JSON is YAML
    out = tmp_path / "run"
    code = main(["kernels", "check", "--config", str(config), "--suite", "t", "--ops", "lightning_decode,swa_prefill",
                 "--out", str(out), "--reps", "1"])  # fmt: skip
    assert code == 0
    assert {p.name for p in out.iterdir()} == {
        "traces.jsonl",
        "definitions.json",
        "summary.json",
        "results.md",
    }
    summary = json.loads((out / "summary.json").read_text())
    assert summary["failed"] == [] and "swa_prefill" in summary["rankings"]
    dispatch.forget()
    assert dispatch.stored_ranking("cpu", "swa_prefill", "fwd")  # followed under `default: ranked`


@pytest.mark.parametrize(
    "args, flag, allowed",
    [
        (["kernels", "check", "--ops", "flash"], "--ops", "lightning_prefill"),
        (["bench", "kernels", "--backends", "cuda_magic"], "--backends", "torch_chunk"),
        (["kernels", "check", "--device", "tpu"], "--device", "cpu"),
        (["bench", "kernels", "--suite", "huge"], "--suite", "check"),
        (["bench", "kernels", "--reps", "0"], "--reps", "positive"),
    ],
)
def test_bad_cli_input_names_the_flag_and_allowed_values(args, flag, allowed, capsys):
    from attnlab.cli import main

    try:
        code = main(args)
    except SystemExit as exc:  # argparse's own errors
        code = exc.code
    stderr = capsys.readouterr().err
    assert code == 2, stderr
    assert flag in stderr and allowed in stderr


def test_cli_bench_adds_the_bmm_yardstick(tmp_path):
    from attnlab.cli import main

    config = tmp_path / "k.yaml"
    config.write_text(json.dumps(TINY))
    out = tmp_path / "bench"
    args = ["bench", "kernels", "--config", str(config), "--suite", "t", "--ops", "lightning_prefill",
            "--backends", "torch_chunk", "--out", str(out), "--reps", "1", "--no-rank"]  # fmt: skip
    assert main(args) == 0
    rows = json.loads((out / "summary.json").read_text())["bmm_yardstick"]
    assert len(rows) == 4 and all(r["fraction_of_bmm"] > 0 for r in rows)
    assert "torch.bmm GFLOP/s" in (out / "results.md").read_text()
    assert not dispatch.stored_ranking("cpu", "lightning_prefill", "fwd")  # --no-rank


def checkpoint_traces(monkeypatch, fn) -> dict:
    """torch, torch_chunk and a fake backend `fn` of lightning_prefill on a workload with checkpoints."""
    sol = Solution(name="fake", definition="lightning_prefill", fn=fn, spec={}, backward=True)
    with_solution(monkeypatch, sol)
    config = {"models": TINY["models"], "suites": {"t": {"lightning_prefill": [
        {"model": "tiny", "pack": [[9, 0, 12]], "checkpoints": "every 4"}]}}}  # fmt: skip
    loads = suite_workloads(config, "t")
    (workload,) = loads["lightning_prefill"]
    assert workload.inputs["state_checkpoints"]["value"] == [3, 7, 12, 16, 20] and "ckpt/4" in workload.label
    traces = harness.run(loads, CPU, backends=["torch", "torch_chunk", "fake"], reps=1)
    return {t.solution: t.evaluation for t in traces}


def test_checkpoint_states_are_compared(monkeypatch):
    ref = registry.definition("lightning_prefill").reference

    def wrong_states(**kw):
        o, final, states = ref(**kw)
        return o, final, states * 1.01

    evs = checkpoint_traces(monkeypatch, wrong_states)
    assert evs["torch_chunk"]["status"] == "PASSED"
    assert {"states", "dinitial_state"} <= set(evs["torch_chunk"]["correctness"]["relative_rmse"])
    assert evs["fake"]["status"] == "INCORRECT_NUMERICAL"
    assert evs["fake"]["correctness"]["relative_rmse"]["states"] == pytest.approx(0.01, rel=1e-3)

    def no_states(state_checkpoints, **kw):
        return ref(**kw)

    assert checkpoint_traces(monkeypatch, no_states)["fake"]["status"] == "INCORRECT_SHAPE"


@pytest.mark.parametrize("value", ["every 0", "each 4", [[0, 99]]])
def test_bad_checkpoints_field_is_named(value):
    entry = {"model": "tiny", "seq_len": 9, "checkpoints": value}
    with pytest.raises(ValueError, match=r"lightning_prefill\[0\]\.checkpoints = .*'every N'"):
        suite_workloads({"models": TINY["models"], "suites": {"t": {"lightning_prefill": [entry]}}}, "t")
