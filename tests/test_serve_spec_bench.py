"""`attnlab bench spec` (serve/spec_bench.py): a tiny run end to end — two models trained for a few
steps, every cell measured and reported, speculative output equal to plain — a rerun that reuses
the models, the held-out files against the trainer's own document selection, the workloads and the
report's reading by hand, and bad flags that exit 2 naming the flag."""

from __future__ import annotations

import json
import random

import pytest

from attnlab.cli import main
from attnlab.evals import byte_tokenizer
from attnlab.serve.spec_bench import MODES, SpecOptions, run
from attnlab.serve.spec_bench_report import markdown
from attnlab.serve.spec_models import TrainSettings
from attnlab.serve.spec_workloads import (
    code_workload,
    copied_fraction,
    copy_workload,
    held_out_files,
    repeated_fraction,
)

TINY_TRAIN = TrainSettings(steps=2, hidden=16, heads=2, seq_len=64, batch_size=2, max_chars=20_000)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("spec") / "a"
    opts = SpecOptions(
        out=out, families=["hybrid"], batches=[1, 2], prompt_len=40, new_tokens=6, prompts=2, repeats=2,
        jobs=1, train=TINY_TRAIN,
    )  # fmt: skip
    return out, run(opts, progress=False)


def test_tiny_run_writes_consistent_outputs(tiny_run):
    out, returned = tiny_run
    results = json.loads((out / "results.json").read_text())
    assert results["options"]["families"] == ["hybrid"] and results["options"]["modes"] == list(MODES)
    # The hybrid's draft is the lightning one; both models trained here, losses recorded.
    assert results["drafts"] == {"hybrid": "draft-L"}
    assert set(results["models"]) == {"target-hybrid", "draft-L"}
    for name, layers in (("target-hybrid", "LLLF"), ("draft-L", "L")):
        m = results["models"][name]
        assert m["layers"] == layers and m["steps"] == 2 and m["trained_now"]
        assert 0 < m["train_loss"] < 10 and 0 < m["val_loss"] < 10
        assert (out / "models" / name / "hf" / "config.json").is_file()
    cells = {(c["family"], c["workload"], c["batch"]): c for c in results["cells"]}
    assert set(cells) == {("hybrid", w, b) for w in ("code", "copy") for b in (1, 2)}
    md = (out / "spec.md").read_text()
    for (family, workload, batch), c in cells.items():
        plain = c["plain"]
        assert plain["repeats_agree"] and len(plain["wall_s"]) == 2
        assert 0 < plain["tokens_per_s_min"] <= plain["tokens_per_s"] <= plain["tokens_per_s_max"]
        assert len(c["tokens"]) == 2 and all(len(t) == 6 for t in c["tokens"])
        for mode in ("ngram", "draft"):
            m = c[mode]
            assert m["outputs_match"] is True and m["repeats_agree"]
            assert 0 <= m["acceptance_rate"] <= 1 and 0 <= m["accepted"] <= m["proposed"]
            assert 0 <= m["accepted_per_verification"] <= 3
            assert m["speedup"] == pytest.approx(m["tokens_per_s"] / plain["tokens_per_s"])
        assert f"| {family} | {workload} | {batch} | {plain['tokens_per_s']:.0f} |" in md
        assert 0 <= c["repeated"] <= 1
        if workload == "copy":
            assert 0 <= c["copied"] <= 1
    assert results["workloads"]["code"]["prompt_tokens"] == [40, 40]
    assert results["kernels"]["used"]  # what the measurements ran
    assert "| target-hybrid | LLLF |" in md and "its draft is the lightning one" in md
    assert "## What it says" in md and "every cell" in md  # outputs matched everywhere
    assert md.rstrip().splitlines()[-1].startswith("kernels (")


def test_rerun_reuses_the_trained_models_through_the_cli(tiny_run, capsys):
    out, _ = tiny_run
    again = out.parent / "b"
    argv = ["bench", "spec", "--out", str(again), "--models", str(out / "models"), "--families", "hybrid",
            "--workloads", "copy", "--batches", "2", "--prompts", "2", "--prompt-len", "40",
            "--new-tokens", "4", "--repeats", "1"]  # fmt: skip
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "reusing target-hybrid" in printed and "# Speculative decoding" in printed
    results = json.loads((again / "results.json").read_text())
    assert not any(m["trained_now"] for m in results["models"].values())
    assert not (again / "models").exists()
    assert [(c["workload"], c["batch"]) for c in results["cells"]] == [("copy", 2)]


def test_held_out_files_are_the_ones_the_trainer_never_reads(tmp_path):
    from attnlab.train.corpus import load_documents, sample_documents
    from attnlab.train.data_sections import TextSection

    rng = random.Random(0)
    files = []
    for i in range(12):
        path = tmp_path / f"m{i:02d}.py"
        # Each text starts with its own letter, so even a 1-character cut names its file.
        path.write_text("" if i == 3 else f"{chr(65 + i)} = {i}\n" * rng.randint(5, 40))  # "": no document
        files.append(str(path))
    texts = {f: (tmp_path / f).read_text() for f in files}
    docs = load_documents(TextSection(files=files))
    assert docs == [texts[f] for f in files if texts[f]]  # one document per non-empty file, in order
    for seed, max_chars in ((0, 600), (5, 1500), (1, 10**6)):
        kept = sample_documents(docs, seed, max_chars)
        held = held_out_files(files, seed, max_chars)
        seen = [f for f in files if texts[f] and any(texts[f].startswith(k) for k in kept)]
        assert set(held) == {f for f in files if texts[f]} - set(seen)
        assert not set(held) & set(seen)
    assert held_out_files(files, 0, None) == []


def test_workloads_by_hand(tmp_path):
    tok = byte_tokenizer()
    code = tmp_path / "a.py"
    code.write_text("".join(f"line_{i} = {i}\n" for i in range(60)))
    w = code_workload(tok, [str(code)], 1, 30, 10, seed=0)
    (prompt,) = w.prompts
    text = code.read_text()
    start = text.index(bytes(prompt).decode())
    assert len(prompt) == 30 and (start == 0 or text[start - 1] == "\n") and start + 40 <= len(text)
    with pytest.raises(ValueError, match="--prompt-len"):
        code_workload(tok, [str(code)], 2, 30, 10, 0)  # one file, two prompts asked for
    c = copy_workload(tok, 2, 64, seed=0)
    assert [len(p) for p in c.prompts] == [64, 64]
    assert all(a in tok.decode(p) for a, p in zip(c.answers, c.prompts, strict=True))
    assert copied_fraction(tok, "red fox", list(b" red fix")) == 5 / 7
    assert copied_fraction(tok, "red fox", list(b"red")) == 1.0
    assert copied_fraction(tok, "red fox", []) == 0.0
    # The 4-grams the output completes: [1, 2, 3, 4] (in the prompt), then three new ones.
    assert repeated_fraction([1, 2, 3, 4, 1, 2, 3], [4, 9, 1, 2]) == 1 / 4
    assert repeated_fraction([5, 5, 5, 5], [5, 5]) == 1.0 and repeated_fraction([1], []) == 0.0


def test_the_reading_flags_a_mismatch(tiny_run):
    out, results = tiny_run
    broken = json.loads(json.dumps(results))
    broken["cells"][0]["draft"]["outputs_match"] = False
    md = markdown(broken)
    assert "**NO**" in md and "differed from plain greedy" in md and "(draft)" in md


@pytest.mark.parametrize(
    "argv, flag",
    [
        (["--families", "full,moe"], "--families"),
        (["--workloads", "chat"], "--workloads"),
        (["--k", "0"], "--k"),
        (["--batches", "0"], "--batches"),
        (["--batches", "1,3"], "--prompts"),  # 8 prompts do not split into batches of 3
        (["--new-tokens", "-4"], "--new-tokens"),
        (["--train-steps", "0"], "--train-steps"),
        (["--jobs", "0"], "--jobs"),
        (["--models", "/nonexistent/models"], "--models"),
    ],
)
def test_bad_flags_exit_2_naming_the_flag(argv, flag, capsys, tmp_path):
    try:
        code = main(["bench", "spec", "--out", str(tmp_path / "x"), *argv])
    except SystemExit as exc:
        code = exc.code
    assert code == 2
    assert flag in capsys.readouterr().err
    assert not (tmp_path / "x").exists()  # nothing trained or written
