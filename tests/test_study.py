"""`attnlab study` end to end on a tiny config: every report section is there and filled from the
files of that run, a kill mid-stage resumes without redoing finished runs, and bad input fails
before any work with a message naming the field."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest
import yaml

from attnlab.study.config import from_dict, load_study
from attnlab.study.plan import scaled_base
from attnlab.study.runner import StudyError, run_study

TINY = {
    "name": "tiny",
    "budget_minutes": 2,
    "base": {
        "model": {"hidden_size": 16, "num_hidden_layers": 2, "num_attention_heads": 2, "extra": {"intermediate_size": 16}},
        "data": {
            "source": "task",
            "batch_size": 16,
            "task": {
                "name": "mqar", "vocab_size": 32, "separator": True, "train_examples": 400, "val_examples": 32,
                "mixture": [{"seq_len": 64, "num_kv_pairs": 4}, {"seq_len": 64, "num_kv_pairs": 4, "hops": 2, "start_step": 10}],
            },
        },
        "optim": {"lr": 3.0e-3, "warmup_steps": 4},
        "trainer": {"max_steps": 24, "log_every": 4},
    },
    "variants": {"full": {"model.layers": "F"}, "lightning": {"model.layers": "L"}, "hybrid": {"model.layers": "LF"}},
    "train": {"share": 0.5, "min_steps": 8, "executor": {"kind": "sequential"}},
    "eval": {"share": 0.15, "lengths": [64, 128], "hops": [1, 2], "samples": 16, "batch_size": 8},
    "probe": {"share": 0.15, "ablate": 1, "draws": 2, "max_context": 64, "needles": 1},
    "crossover": {"share": 0.15, "lengths": [128, 256], "batch": 2, "decode_steps": 2, "repeats": 1},
}  # fmt: skip


def tiny(**changes) -> dict:
    values = json.loads(json.dumps(TINY))
    for key, value in changes.items():
        node = values
        *parents, leaf = key.split(".")
        for part in parents:
            node = node[part]
        node[leaf] = value
    return values


@pytest.fixture(scope="module")
def study_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("study") / "out"
    records = run_study(from_dict(tiny()), out, command="attnlab study tiny.yaml", progress=False)
    return out, records


def row_of(markdown: str, first_cell: str, after: str) -> list[str]:
    """The cells of the first table row starting with `first_cell` after the heading `after`."""
    section = markdown[markdown.index(after) :]
    for line in section.splitlines():
        if line.startswith(f"| {first_cell} |"):
            return [c.strip() for c in line.strip("|").split("|")]
    raise AssertionError(f"no row {first_cell!r} after {after!r}")


def test_every_stage_finishes_and_the_report_has_every_section(study_run):
    out, records = study_run
    assert {s: r["status"] for s, r in records.items()} == dict.fromkeys(
        ["train", "eval", "probe", "crossover"], "finished"
    )
    md = (out / "report.md").read_text()
    for heading in (
        "## Variants",
        "## Multi-hop eval",
        "## Head probes",
        "## Crossover",
        "## Reproduce",
        "## Machine",
    ):
        assert heading in md
    html = (out / "report.html").read_text()
    figures = re.findall(r"<img src='([^']*)'", html)
    assert len(figures) == 4 and all(
        f.startswith("data:image/png;base64,") for f in figures
    )  # self-contained
    for linked in re.findall(r"!\[[^]]*\]\(([^)]+)\)", md):
        assert (out / linked).is_file()


def test_the_variants_table_comes_from_the_runs_files(study_run):
    from attnlab.archs.model import AttnLabForCausalLM

    out, _ = study_run
    md = (out / "report.md").read_text()
    for variant, layout in (("full", "FF"), ("lightning", "LL"), ("hybrid", "LF")):
        run = out / "train" / "runs" / variant
        result = json.loads((run / "result.json").read_text())
        cells = row_of(md, variant, "## Variants")
        assert cells[1] == f"`{layout}`"
        assert cells[2] == f"{result['params']:,}"
        model = AttnLabForCausalLM.from_pretrained(run / "hf")
        kib_4k = model.state_bytes(4096) / 1024
        assert cells[3] == (f"{kib_4k / 1024:.1f} MiB" if kib_4k >= 1024 else f"{kib_4k:.1f} KiB")
        assert cells[6] == f"{result['val/loss']:.3f}" and cells[7] == f"{result['val/acc']:.3f}"
        assert (
            cells[9]
            == str(result["step"])
            == str(json.loads((out / "plan.json").read_text())["train"]["steps"])
        )


def test_eval_probe_and_crossover_tables_come_from_their_files(study_run):
    out, _ = study_run
    md = (out / "report.md").read_text()
    report = json.loads((out / "eval" / "eval.json").read_text())
    for model in report["models"]:
        cell = next(c for c in model["cells"] if c["hops"] == 2 and c["length"] == 128)
        section = md[md.index("## Multi-hop eval") :]
        line = next(
            line for line in section.splitlines() if line.startswith(f"| {model['name']} | mqar | 2 |")
        )
        assert line.rstrip(" |").endswith(f"{cell['score']:.2f}")
    for variant in ("full", "lightning", "hybrid"):
        scores = json.loads((out / "probe" / variant / "scores.json").read_text())
        cells = row_of(md, variant, "## Head probes")
        found = scores["probes"]["kv_retrieval"]["heads_found"]
        assert cells[1].startswith(f"{len(found)} / 4")
        assert cells[3] == f"{scores['ablation']['baseline_accuracy']:.2f}"
        assert cells[4] == f"{scores['ablation']['top_accuracy']:.2f}"
    results = json.loads((out / "crossover" / "results.json").read_text())
    assert set(results["crossovers"]) == {"lightning", "hybrid"}
    assert results["layouts"] == {"full": "FF", "lightning": "LL", "hybrid": "LF"}
    row_of(md, "hybrid", "## Crossover")


def test_the_reproduce_commands_parse(study_run):
    from attnlab.cli import build_parser

    out, _ = study_run
    block = (out / "report.md").read_text().split("```bash\n")[1].split("```")[0]
    commands = [line for line in block.splitlines() if line.startswith("attnlab ")]
    assert len(commands) == 5
    parser = build_parser()
    for command in commands[2:]:  # eval, probe, crossover: argparse checks every flag and path
        parser.parse_args(command.split()[1:])


def test_a_second_start_without_resume_or_with_another_config_is_refused(study_run, tmp_path):
    out, _ = study_run
    with pytest.raises(StudyError, match="already holds a study; pass --resume"):
        run_study(from_dict(tiny()), out, progress=False)
    with pytest.raises(StudyError, match="different config"):
        run_study(from_dict(tiny(**{"eval.samples": 8})), out, resume=True, progress=False)


def test_resume_of_a_finished_study_redoes_nothing(study_run):
    out, _ = study_run
    before = {p: p.stat().st_mtime_ns for p in (out / "train" / "runs").glob("*/result.json")}
    records = run_study(from_dict(tiny()), out, resume=True, progress=False)
    assert all(r["status"] == "finished" for r in records.values())
    assert {p: p.stat().st_mtime_ns for p in before} == before


def test_a_kill_mid_training_resumes_without_redoing_finished_runs(tmp_path):
    config = tmp_path / "study.yaml"
    values = tiny(**{"base.trainer.max_steps": 300, "train.min_steps": 300, "stages": ["train", "eval"]})
    config.write_text(yaml.safe_dump(values))
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "attnlab.cli", "study", str(config), "--out", str(out), "--no-progress"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    first = out / "train" / "runs" / "full" / "result.json"
    deadline = time.time() + 240
    while not first.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.1)
    assert first.exists(), proc.communicate()
    proc.send_signal(signal.SIGTERM)  # the second run is training now
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130
    assert f"Resume with: attnlab study {config} --out {out} --no-progress --resume" in err
    assert json.loads((out / "stages" / "train.json").read_text())["status"] == "interrupted"
    assert "interrupted" in (out / "report.md").read_text()
    kept = first.read_bytes()

    done = subprocess.run([*cmd, "--resume"], capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr
    assert first.read_bytes() == kept  # the finished run was not redone
    train = json.loads((out / "stages" / "train.json").read_text())
    assert train["status"] == "finished" and train["skipped"] == ["full"]
    assert json.loads((out / "stages" / "eval.json").read_text())["status"] == "finished"
    for variant in ("lightning", "hybrid"):
        assert json.loads((out / "train" / "runs" / variant / "result.json").read_text())["step"] == 300


def test_a_failing_stage_stops_with_its_message_and_keeps_the_earlier_results(tmp_path, monkeypatch):
    from attnlab.study import stages

    def broken(ctx):
        raise OSError(28, "No space left on device")

    monkeypatch.setitem(stages.STAGE_FUNCTIONS, "probe", broken)
    out = tmp_path / "out"
    study = from_dict(tiny(**{"stages": ["train", "eval", "probe", "crossover"]}))
    with pytest.raises(StudyError, match="stage probe failed: OSError: .*No space left on device"):
        run_study(study, out, progress=False)
    status = {
        s: json.loads((out / "stages" / f"{s}.json").read_text())["status"]
        for s in ("train", "eval", "probe")
    }
    assert status == {"train": "finished", "eval": "finished", "probe": "failed"}
    assert not (out / "stages" / "crossover.json").exists()
    md = (out / "report.md").read_text()
    assert "## Multi-hop eval" in md and "No space left on device" in md and "| crossover | not run |" in md


# --- the config ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "change, message",
    [
        ({"budget_minutes": 0}, "budget_minutes = 0: must be a number > 0"),
        ({"colour": "red"}, r"unknown field\(s\) colour; allowed: name, budget_minutes"),
        ({"eval.sample": 3}, r"eval: unknown field\(s\) sample; allowed: share, suite"),
        ({"eval.lengths": [64, -1]}, r"eval.lengths\[1\] = -1: must be an integer > 0"),
        ({"probe.probes": ["kv_retrieval", "copying"]}, r"probe.probes\[1\] = 'copying': allowed: retrieval"),
        ({"stages": ["eval", "train"]}, "must start with train"),
        ({"stages": ["train", "report"]}, "a non-empty list from: train, eval, probe, crossover"),
        ({"train.share": 0.9}, "shares must sum to <= 1"),
        (
            {"train.executor": {"kind": "slurm"}},
            "train.executor.kind = 'slurm': allowed: sequential, processes",
        ),
        (
            {"variants": {"lightning": {"model.layers": "L"}}},
            "the crossover stage needs a variant named full",
        ),
        ({"variants": {"full": "F"}}, "variants.full = 'F': must be a mapping of dotted overrides"),
    ],
)
def test_bad_config_fields_are_named(change, message):
    with pytest.raises(ValueError, match=message):
        from_dict(tiny(**change) if "." in next(iter(change)) else {**tiny(), **change})


def test_a_bad_variant_override_is_caught_before_any_work(tmp_path):
    study = from_dict(tiny(variants={"full": {"model.layers": "F"}, "odd": {"model.layers": "Q"}}))
    with pytest.raises(ValueError, match="sweep run odd: .*Q"):
        run_study(study, tmp_path / "out", progress=False)
    assert not (tmp_path / "out" / "plan.json").exists()


def test_the_cli_names_a_missing_file_and_a_bad_budget(tmp_path):
    from attnlab.cli import main

    assert main(["study", str(tmp_path / "none.yaml"), "--out", str(tmp_path / "o")]) == 2
    with pytest.raises(SystemExit) as exit_info:
        main(["study", "--budget-minutes", "-3"])
    assert exit_info.value.code == 2
    assert not (tmp_path / "o").exists()


def test_the_default_study_is_valid_and_trains_the_seven_variants():
    study = load_study("study/default.yaml")
    assert list(study.variants) == [
        "full",
        "mla",
        "swa",
        "lightning",
        "minimax-7to1",
        "swa-full-1to1",
        "intra",
    ]
    from attnlab.study.plan import variant_configs

    layouts = {
        label: [spec.type for spec in cfg.model.hf_config(64).layer_specs]
        for label, cfg in variant_configs(study).items()
    }
    assert layouts["minimax-7to1"] == ["lightning"] * 7 + ["full"]
    assert layouts["swa-full-1to1"] == ["swa", "full"] * 4
    assert all(len(types) == 8 for types in layouts.values())


def test_a_budget_cut_scales_warmup_and_examples_and_keeps_the_curriculum():
    study = load_study("study/default.yaml")
    base = scaled_base(study, 300)  # of the configured 1,500: a fifth
    assert base["trainer"]["max_steps"] == 300
    assert base["optim"]["warmup_steps"] == 6
    mixture = base["data"]["task"]["mixture"]
    assert [e.get("start_step", 0) for e in mixture] == [0, 800, 800, 800, 800, 800]  # kept
    assert [e["train_examples"] for e in mixture] == [8000, 8000, 3200, 3200, 1600, 1600]
    assert study.base["trainer"]["max_steps"] == 1500  # the config itself is untouched


def test_the_schedule_model_hands_runs_to_the_first_free_worker():
    from attnlab.study.plan import makespan

    assert makespan([1, 1, 1], 2) == 2  # the third run waits for a worker
    assert makespan([3, 1, 1, 1], 2) == 3
    assert makespan([2, 2, 2, 2, 2, 2, 2], 2) == 8  # 7 runs on 2 workers: 4 rounds, not 3.5
    assert makespan([5], 4) == 5
