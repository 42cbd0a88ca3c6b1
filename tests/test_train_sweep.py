"""Sweeps: a 2x2 grid writes one results.csv row per run, summary.md and plots; a re-run skips the
finished runs; parameter matching; the submitit (local executor) path."""

from __future__ import annotations

import csv

import pytest
from train_helpers import tiny_run

from attnlab.train.params import count_params
from attnlab.train.sweep import SweepConfig, expand, load_sweep, run_sweep


def tiny_sweep(tmp_path, **extra) -> SweepConfig:
    base = tiny_run("unused", trainer={"max_steps": 4, "checkpoint_every": 4})
    base.pop("run_dir")
    values = {
        "name": "tiny",
        "out_dir": str(tmp_path / "sweep"),
        "base": base,
        "grid": {
            "variant": {"full": {"model.layers": "F"}, "lightning": {"model.layers": "L"}},
            "model.hidden_size": [16, 32],
        },
        "summary": {"metric": "val/acc"},
        **extra,
    }
    path = tmp_path / "sweep.yaml"
    import yaml

    path.write_text(yaml.safe_dump(values, sort_keys=False))  # axis order is the table layout
    return load_sweep(path)


def read_csv(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def test_2x2_sweep_writes_one_row_per_run_and_rerun_skips_finished(tmp_path):
    sweep = tiny_sweep(tmp_path)
    first = run_sweep(sweep)
    out = tmp_path / "sweep"
    rows = read_csv(out / "results.csv")
    assert len(rows) == 4 and len(first.ran) == 4 and first.skipped == []
    assert {(r["variant"], r["model.hidden_size"]) for r in rows} == {
        ("full", "16"),
        ("full", "32"),
        ("lightning", "16"),
        ("lightning", "32"),
    }
    assert all(r["status"] == "finished" and r["step"] == "4" and 0 <= float(r["val/acc"]) <= 1 for r in rows)
    # lightning's cache is constant in T, full attention's grows: the table records both
    state = {(r["variant"], r["model.hidden_size"]): int(r["state_bytes"]) for r in rows}
    assert state[("full", "32")] == 2 * 2 * 32 * 32 * 4  # layers x (k, v) x T x (H*Dh) x fp32
    assert state[("lightning", "32")] == 2 * 2 * 16 * 16 * 4  # layers x H x Dh x Dh x fp32
    summary = (out / "summary.md").read_text()
    assert "| variant | model.hidden_size=16 | model.hidden_size=32 |" in summary
    assert (out / "metric_by_variant.png").stat().st_size > 0 and (
        out / "metric_vs_state.png"
    ).stat().st_size > 0

    stamps = {p: p.stat().st_mtime_ns for p in out.glob("runs/*/result.json")}
    second = run_sweep(tiny_sweep(tmp_path))
    assert second.ran == [] and sorted(second.skipped) == sorted(first.ran)
    assert {p: p.stat().st_mtime_ns for p in out.glob("runs/*/result.json")} == stamps
    assert len(read_csv(out / "results.csv")) == 4


def test_a_changed_config_in_a_finished_run_dir_is_refused(tmp_path):
    run_sweep(tiny_sweep(tmp_path, grid={"model.hidden_size": [16]}))
    changed = tiny_sweep(tmp_path, grid={"model.hidden_size": [16]}, base={"optim.lr": 1e-4})
    with pytest.raises(ValueError, match="different config"):
        run_sweep(changed)


def test_match_params_solves_intermediate_size_to_the_reference_count(tmp_path):
    sweep = tiny_sweep(
        tmp_path,
        grid={"variant": {"full": {"model.layers": "F"}, "lightning": {"model.layers": "L"}}},
        match_params={"axis": "variant", "reference": "full"},
    )
    runs = {r.labels["variant"]: r.config for r in expand(sweep)}
    full, light = count_params(runs["full"]), count_params(runs["lightning"])
    # lightning has an extra output gate (D x D) per layer; the FFN shrinks to compensate, within
    # one FFN column's worth of parameters (3 matrices x D per layer x 2 layers).
    assert runs["lightning"].model.extra["intermediate_size"] < 64
    assert abs(light - full) <= 3 * 32 * 2


def test_bad_sweep_values_name_the_field(tmp_path):
    with pytest.raises(ValueError, match="executor.kind"):
        tiny_sweep(tmp_path, executor={"kind": "mpi"})
    with pytest.raises(ValueError, match=r"sweep run .*model.hidden_size|hidden_size"):
        expand(tiny_sweep(tmp_path, grid={"model.hidden_size": [-8]}))


def test_submitit_local_executor_runs_the_sweep(tmp_path):
    pytest.importorskip("submitit")
    sweep = tiny_sweep(
        tmp_path,
        grid={"variant": {"full": {"model.layers": "F"}, "swa": {"model.layers": "S"}}},
        executor={"kind": "submitit", "cluster": "local", "workers": 2, "parameters": {"timeout_min": 10}},
    )
    outcome = run_sweep(sweep)
    assert outcome.all_finished and len(outcome.ran) == 2
    rows = read_csv(tmp_path / "sweep" / "results.csv")
    assert [r["status"] for r in rows] == ["finished", "finished"]
    assert list((tmp_path / "sweep" / "submitit").glob("*_result.pkl"))  # ran through submitit's job files
