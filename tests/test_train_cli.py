"""`attnlab train` and `attnlab sweep` from the command line: YAML + overrides, the resolved config
saved in the run dir, the HF export, help, and the committed sweep config expanding as documented."""

from __future__ import annotations

from pathlib import Path

import yaml
from transformers import AutoModelForCausalLM

from attnlab.cli import main
from attnlab.train.run import read_result
from attnlab.train.sweep import expand, load_sweep

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
ZOOLOGY = str(CONFIGS / "sweeps" / "zoology_mqar.yaml")


def test_train_from_yaml_with_overrides_saves_resolved_config_and_exports(tmp_path, capsys):
    run = tmp_path / "run"
    code = main(
        [
            "train",
            "--config",
            "train/mqar.yaml",
            "--run_dir",
            str(run),
            "--trainer.max_steps",
            "3",
            "--trainer.progress_bar",
            "false",
            "--optim.lr",
            "0.01",
            "--data.task.train_examples",
            "256",
            "--data.task.val_examples",
            "32",
        ]
    )
    assert code == 0, capsys.readouterr().err
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["optim"]["lr"] == 0.01  # the override
    assert saved["model"]["layers"] == "LF"  # from the YAML
    assert saved["optim"]["beta2"] == 0.95 and saved["trainer"]["precision"] == "32-true"  # defaults resolved
    assert read_result(run)["status"] == "finished"
    model = AutoModelForCausalLM.from_pretrained(run / "hf")
    assert [m.mixer_type for m in model.mixers()] == ["lightning", "full"]
    assert "finished at step 3" in capsys.readouterr().out


def test_train_help_lists_the_config_fields(capsys):
    try:
        main(["train", "--help"])
    except SystemExit as exit_:
        assert exit_.code == 0
    out = capsys.readouterr().out
    assert "--optim.lr" in out and "--data.task.num_kv_pairs" in out and "--resume" in out


def test_committed_zoology_sweep_expands_to_its_grid():
    sweep = load_sweep(ZOOLOGY)
    runs = expand(sweep)
    variants = {r.labels["variant"] for r in runs}
    assert variants == {"full", "lightning", "swa", "hybrid", "swa_full", "intra"}
    assert {r.config.model.hidden_size for r in runs} == {64, 128}
    slices = {name for name, *_ in runs[0].config.data.task.slices(runs[0].config.data.batch_size)}
    assert slices == {"64x4", "128x8", "256x16"}
    assert all(r.config.model.num_hidden_layers == 2 for r in runs)


def test_committed_khop_sweep_expands_to_its_variants():
    """configs/sweeps/khop_mqar.yaml (evals/KHOP_RESULTS.md): six 2-layer variants x 3 seeds,
    separator samples, 1- and 2-hop slices at 64-256 tokens after the 64x4 curriculum slice."""
    runs = expand(load_sweep(str(CONFIGS / "sweeps" / "khop_mqar.yaml")))
    assert len(runs) == 18 and {r.config.seed for r in runs} == {0, 1, 2}
    assert "hybrid_seed=1" in {r.name for r in runs}
    layers = {r.labels["variant"]: r.config.model.layers for r in runs}
    assert layers == {
        "full": "FF",
        "lightning": "LL",
        "hybrid": "FL",
        "swa": "SS",
        "swa_full": "SF",
        "hybrid_lf": "LF",
    }
    task = runs[0].config.data.task
    assert task.separator and all(r.config.data.task.separator for r in runs)
    slices = {name: start for name, _, _, start in task.slices(64)}
    assert slices == {"64x4": 0, "64x4h2": 800, "128x8": 800, "128x8h2": 800, "256x16": 800, "256x15h2": 800}


def test_sweep_dry_run_lists_runs_without_running(tmp_path, capsys):
    code = main(["sweep", ZOOLOGY, "--out_dir", str(tmp_path / "s"), "--dry_run"])
    assert code == 0
    out = capsys.readouterr().out
    assert out.count("run  ") == len(expand(load_sweep(ZOOLOGY)))
    assert not (tmp_path / "s").exists()
