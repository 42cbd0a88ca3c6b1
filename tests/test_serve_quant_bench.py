"""`attnlab bench quant` (serve/quant_bench.py): a tiny run end to end — two families, each trained
plainly and with QAT for two steps, three variants measured and reported — whose numbers agree with
independent references (the trainer's own validation losses, packed bytes by hand, the INT4 folders
loaded through transformers), a rerun that trains nothing, the head-survival arithmetic against
scipy, the data shortcuts against the trainer's own data code, and bad flags that exit 2 naming
the flag."""

from __future__ import annotations

import json
import math

import pytest
import torch
import yaml
from scipy.stats import spearmanr
from torch import nn

from attnlab.cli import main
from attnlab.serve.quant_bench import QuantBenchOptions, run
from attnlab.serve.quant_bench_heads import ranks, spearman, survival, top_heads, top_overlap
from attnlab.serve.quant_bench_measure import MeasureSettings, validation_slices
from attnlab.serve.quant_bench_models import TrainSettings, rows_drawn, run_config, run_specs
from attnlab.serve.quant_bench_speed import SpeedSettings
from attnlab.serve.quant_bench_variants import VARIANTS

FAMILIES = ["full", "hybrid-7to1"]
# Linear modules in the decoder layers: a softmax layer has q, k, v, o; a lightning layer qkv,
# output_gate, o; every layer's FFN gate, up, down.
LINEARS = {"full": 2 * (4 + 3), "hybrid-7to1": 7 * (3 + 3) + (4 + 3)}
TINY_TRAIN = TrainSettings(steps=2, hidden=32, val_examples=8, text=False)
TINY_MEASURE = MeasureSettings(lengths=[64, 128], hops=[1, 2], samples=4, niah_lengths=1, probe_batch=2)
TINY_SPEED = SpeedSettings(batch=2, prompt_len=16, new_tokens=4, repeats=1)
# The same sizes as flags, for the CLI runs.
TINY_FLAGS = ["--no-text", "--train-steps", "2", "--hidden", "32", "--val-examples", "8",
              "--lengths", "64,128", "--hops", "1,2", "--samples", "4", "--probe-lengths", "1",
              "--batch", "2", "--prompt-len", "16", "--new-tokens", "4", "--repeats", "1", "--jobs", "1"]  # fmt: skip


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("quant") / "bench"
    opts = QuantBenchOptions(
        out=out, families=FAMILIES, jobs=1, train=TINY_TRAIN, measure=TINY_MEASURE, speed=TINY_SPEED
    )
    return out, run(opts, progress=False)


def packed_bytes_by_hand(model: nn.Module) -> int:
    """compressed-tensors' pack-quantized tensors of every Linear in the decoder layers, float32
    scales: int32 words of 8 values + one scale per 32 inputs + the int64 [2] shape."""
    total = 0
    for name, m in model.named_modules():
        if isinstance(m, nn.Linear) and name.startswith("model.layers."):
            n, k = m.out_features, m.in_features
            total += n * math.ceil(k / 8) * 4 + n * (k // 32) * 4 + 16
    return total


def test_tiny_run_writes_consistent_outputs(tiny_run):
    from transformers import AutoModelForCausalLM

    from attnlab.quant import Int4Linear

    out, returned = tiny_run
    results = json.loads((out / "results.json").read_text())
    assert results["families"].keys() == set(FAMILIES) and returned["families"].keys() == set(FAMILIES)
    assert (out / "quant.png").stat().st_size > 0
    md = (out / "quant.md").read_text()
    for family in FAMILIES:
        fam = results["families"][family]
        assert list(fam["variants"]) == list(VARIANTS)
        base_run, qat_run = (results["runs"][fam["runs"][k]] for k in ("base", "qat"))
        assert base_run["steps"] == qat_run["steps"] == 2 and qat_run["qat_start_step"] == 1
        qat_config = yaml.safe_load((out / "models" / f"{family}-qat" / "config.yaml").read_text())
        assert qat_config["quant"]["qat"] is True and qat_config["quant"]["start_step"] == 1
        assert yaml.safe_load((out / "models" / family / "config.yaml").read_text()).get("quant") is None
        v = fam["variants"]
        # The trainer's own final validation is the reference: the same rows, pooled the same way. The
        # QAT run validated with torchao's fake quant on; its INT4 conversion computes that forward.
        assert v["fp32"]["loss"] == pytest.approx(base_run["val_loss"], abs=1e-4)
        assert v["int4-qat"]["loss"] == pytest.approx(qat_run["val_loss"], abs=1e-3)
        assert all(math.isfinite(v[name]["loss"]) and v[name]["loss"] > 0 for name in VARIANTS)
        fp32_model = AutoModelForCausalLM.from_pretrained(v["fp32"]["folder"])
        by_hand = packed_bytes_by_hand(fp32_model)
        fp32_bytes = v["fp32"]["bytes"]
        assert fp32_bytes["int4_modules"] == 0 and fp32_bytes["modules"] == LINEARS[family]
        # bf16: the fp32 weights rounded, run in bfloat16; half the bytes, nearly the same loss.
        bf16 = AutoModelForCausalLM.from_pretrained(v["bf16"]["folder"])
        assert {p.dtype for p in bf16.parameters()} == {torch.bfloat16}
        for a, b in zip(bf16.parameters(), fp32_model.parameters(), strict=True):
            assert torch.equal(a, b.to(torch.bfloat16))
        assert v["bf16"]["bytes"]["quantized_modules"] * 2 == fp32_bytes["quantized_modules"]
        assert v["bf16"]["bytes"]["model"] * 2 == fp32_bytes["model"] and v["bf16"]["scheme"] is None
        assert v["bf16"]["loss"] == pytest.approx(v["fp32"]["loss"], abs=0.05)
        assert "survival" in v["bf16"] and v["bf16"]["kernel_check"] is None
        for name in ("int4-ptq", "int4-qat"):
            e = v[name]
            assert e["bytes"]["quantized_modules"] == by_hand
            # float32 -> INT4 with float32 scales: 4 / (0.5 + 4/32) = 6.4x, a little less with the shapes
            assert 6.0 < fp32_bytes["quantized_modules"] / by_hand < 6.4
            assert 3.0 < fp32_bytes["bf16_quantized_modules"] / by_hand < 3.2
            assert fp32_bytes["model"] - e["bytes"]["model"] == fp32_bytes["quantized_modules"] - by_hand
            model = AutoModelForCausalLM.from_pretrained(e["folder"])
            int4 = [m for m in model.modules() if isinstance(m, Int4Linear)]
            assert len(int4) == e["bytes"]["int4_modules"] == LINEARS[family]
            assert not any(type(m) is nn.Linear for m in model.model.layers.modules())
            assert e["kernel_check"] < 1e-4
            for probe, s in e["survival"].items():
                assert s["overlap"] is None or 0 <= s["overlap"] <= 1, (probe, s)
                assert s["spearman"] is None or -1 - 1e-9 <= s["spearman"] <= 1 + 1e-9
            assert e["scheme"]["group_size"] == 32 and e["scheme"]["qat"] is (name == "int4-qat")
        for name, e in v.items():
            assert set(e["eval"]["accuracy"]) == {"1", "2"}
            cells = [a for row in e["eval"]["accuracy"].values() for a in row.values()]
            assert len(cells) == 4 and all(a is None or 0 <= a <= 1 for a in cells)
            heads = e["heads"]["induction"]["scores"]
            assert len(heads) == len(fam["layers"]) and all(len(row) == 2 for row in heads)
            assert e["decode"]["tokens_per_s"] > 0 and len(e["decode"]["rounds"]) == 1
            assert f"| {name} | {e['loss']:.3f} |" in md
        assert f"## {family} ({fam['layers']})" in md
    assert md.count("**fp32 has not learned recall**") == 2  # two steps of training learn no recall
    assert results["environment"]["threads"] == 1 and results["options"]["train"]["steps"] == 2
    assert md.rstrip().splitlines()[-1].startswith("kernels (")


def test_rerun_reuses_the_trained_runs(tiny_run, capsys):
    out, _ = tiny_run
    stamps = {p: p.stat().st_mtime_ns for p in (out / "models").glob("*/result.json")}
    assert len(stamps) == 4
    argv = ["bench", "quant", "--out", str(out), "--families", "full", "--probes", "induction", *TINY_FLAGS]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "reusing full from" in printed and "reusing full-qat from" in printed
    assert not [line for line in printed.splitlines() if line.startswith(("training", "trained"))]
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps
    results = json.loads((out / "results.json").read_text())
    assert not any(r["trained_now"] for r in results["runs"].values())
    # Other steps would need other runs: refused, naming the run dir, nothing overwritten.
    argv = ["bench", "quant", "--out", str(out), "--families", "full", *TINY_FLAGS, "--train-steps", "3"]
    assert main(argv) == 2
    assert "holds a finished run of another config" in capsys.readouterr().err
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--families", "full,mamba"], "invalid families ['mamba']; allowed: full, lightning, hybrid-7to1"),
        (["--train-steps", "0"], "0 is not positive"),
        (["--train-steps", "1"], "--train-steps 1: must be at least 2"),
        (["--hidden", "48"], "--hidden 48: must be a multiple of 32"),
        (["--qat-start", "1.5"], "--qat-start 1.5: must be in (0, 1)"),
        (["--probes", "retrieval,bogus"], "--probes ['bogus']: allowed: retrieval"),
        (["--top-k", "5"], "--top-k 5: must be in 1..4 (2 layers x --heads 2)"),
        (["--heads", "3"], "--heads 3: must divide --hidden 64"),
        (["--min-head-score", "2"], "--min-head-score 2.0: must be in [0, 1]"),
    ],
)
def test_bad_flags_are_clear_errors(tmp_path, capsys, flags, message):
    try:
        code = main(["bench", "quant", "--out", str(tmp_path / "x"), *flags])
    except SystemExit as e:  # argparse's own checks
        code = e.code
    assert code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "x" / "models").exists()


def test_head_survival_by_hand_and_against_scipy():
    base = [[0.9, 0.0], [0.5, float("nan")], [0.7, 0.1]]  # top 3 above 0: (0,0) 0.9, (2,0) 0.7, (1,0) 0.5
    assert top_heads(base, 3) == [(0, 0), (2, 0), (1, 0)]
    assert top_heads(base, 9) == [(0, 0), (2, 0), (1, 0), (2, 1)]  # (0,1) scores 0: not found
    other = [[0.2, 0.8], [0.6, 0.0], [None, 0.3]]  # top 3: (0,1), (1,0), (2,1)
    assert top_overlap(base, other, 3) == pytest.approx(1 / 3)  # only (1, 0) survives
    assert top_overlap(base, base, 3) == 1.0
    assert top_overlap([[0.0, 0.0]], other, 3) is None
    # Only base heads scoring >= min_score must survive; the variant's top k is ranked as before.
    assert top_heads(base, 3, min_score=0.6) == [(0, 0), (2, 0)]
    assert top_overlap(base, other, 3, min_score=0.6) == 0.0  # neither (0,0) nor (2,0) in other's top 3
    assert top_overlap(base, [[0.7, 0.8], [0.6, 0.0], [0.05, 0.3]], 3, min_score=0.6) == 0.5
    assert top_overlap(base, other, 3, min_score=0.95) is None  # no base head that strong
    assert survival(base, other, 3, 0.6)["base_top"] == [[0, 0], [2, 0]]
    # Spearman over the heads both score: (0,0), (0,1), (1,0), (2,1).
    pairs = [(0.9, 0.2), (0.0, 0.8), (0.5, 0.6), (0.1, 0.3)]
    assert spearman(base, other) == pytest.approx(spearmanr(*zip(*pairs, strict=True)).statistic)
    rng = torch.Generator().manual_seed(0)
    a = torch.randint(0, 4, (6, 3), generator=rng).float().tolist()  # many ties
    b = torch.rand(6, 3, generator=rng).tolist()
    flat_a, flat_b = sum(a, []), sum(b, [])
    assert spearman(a, b) == pytest.approx(spearmanr(flat_a, flat_b).statistic)
    assert ranks([3.0, 1.0, 3.0, 2.0]) == [3.5, 1.0, 3.5, 2.0]
    assert spearman([[1.0, 1.0]], [[0.5, 0.2]]) is None  # a constant side has no order


def test_rows_drawn_follow_the_trainers_batch_schedule():
    from attnlab.train.data import StepBatches

    starts, batches, steps = [0, 5, 5, 9], [64, 32, 16, 8], 40
    slice_of, _ = StepBatches.schedule(starts, steps)
    counts = torch.bincount(torch.as_tensor(slice_of), minlength=len(starts)).tolist()
    assert rows_drawn(starts, batches, steps) == [n * b for n, b in zip(counts, batches, strict=True)]


def test_run_configs_follow_the_base_configs(tmp_path):
    """The MQAR runs: khop_mqar.yaml's curriculum scaled to the steps, the family's layers; the
    text runs: stdlib_lm.yaml shortened; a QAT twin adds only its quant section."""
    from attnlab.train import parse_args

    settings = TrainSettings(steps=300, text_steps=50)
    specs = {s.name: s for s in run_specs(["hybrid-7to1"], text=True)}
    assert list(specs) == ["hybrid-7to1", "hybrid-7to1-qat", "text-lm", "text-lm-qat"]
    configs = {
        name: parse_args(["--config", str(run_config(s, settings, tmp_path))])[0] for name, s in specs.items()
    }
    mqar, twin, text = configs["hybrid-7to1"], configs["hybrid-7to1-qat"], configs["text-lm"]
    assert (
        mqar.model.layers == "FLLLLLLL" and mqar.model.num_hidden_layers == 8 and mqar.model.hidden_size == 64
    )
    assert [e.get("start_step", 0) for e in mqar.data.task.mixture] == [
        0,
        160,
        160,
        160,
        160,
        160,
    ]  # 800 / 1500
    assert mqar.trainer.max_steps == 300 and mqar.optim.lr == 3e-3 and mqar.quant is None
    assert twin.quant.qat is True and twin.quant.start_step == 150
    assert twin.to_dict() | {"quant": None, "run_dir": None} == mqar.to_dict() | {
        "quant": None,
        "run_dir": None,
    }
    assert text.data.source == "text" and text.model.layers == "LLLF" and text.trainer.max_steps == 50
    assert configs["text-lm-qat"].quant.start_step == 25


def test_validation_rows_are_the_trainers(tiny_run):
    """The shortcut (no training rows generated) gives exactly the rows build_data validates on."""
    from attnlab.train import build_data, parse_args

    out, _ = tiny_run
    run_dir = out / "models" / "full"
    cfg, _ = parse_args(["--config", str(run_dir / "config.yaml")])
    full = build_data(cfg.data, run_dir, cfg.seed).slices
    short = validation_slices(run_dir)
    assert [s.name for s in short] == [s.name for s in full] and len(full) == 6
    for a, b in zip(short, full, strict=True):
        assert torch.equal(a.val_ids, b.val_ids) and torch.equal(a.val_labels, b.val_labels)
        assert a.batch_size == b.batch_size
