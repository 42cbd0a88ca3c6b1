"""The suite runner, training hook and `attnlab eval` CLI. Scoring end to end is checked with oracle
models that answer by brute-force reading of their input (score 1) or answer wrongly (score 0);
file outputs with a tiny random attnlab model."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch
import yaml
from evals_solvers import solve
from torch import nn
from transformers.generation.utils import GenerateDecoderOnlyOutput

from attnlab import AttnLabConfig, AttnLabForCausalLM
from attnlab.cli import main
from attnlab.evals import SuiteSpec, evaluate_suite, run_eval, run_suite
from attnlab.evals.loading import resolve_model_dir
from attnlab.evals.tokenizer import byte_tokenizer

HEADERS = {
    "Track the variable": "variable_tracking",
    "Memorize the special magic": "niah_single",  # one solver for every niah variant
    "Read the story.": "facts",
    "Repeat the text exactly.": "copy",
    "Read the text.": "ngram_lookup",
}
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


class TextOracle(nn.Module):
    """A byte-level 'model' whose generate() reads the prompt and writes the answer (or junk)."""

    def __init__(self, correct: bool = True):
        super().__init__()
        self.config = SimpleNamespace(vocab_size=256)
        self.anchor = nn.Parameter(torch.zeros(1))
        self.correct = correct
        self.batch_sizes: list[int] = []

    def generate(self, input_ids, attention_mask, max_new_tokens, **kwargs):
        assert bool(attention_mask.all())  # never padded
        self.batch_sizes.append(len(input_ids))
        rows = []
        for row in input_ids.tolist():
            prompt = bytes(row).decode()
            task = next(t for h, t in HEADERS.items() if prompt.startswith(h))
            answer = (" " + ", ".join(solve(task, prompt))).encode() if self.correct else b" 0"
            assert len(answer) <= max_new_tokens, "the generation budget must fit the answer"
            rows.append(row + list(answer) + [0] * (max_new_tokens - len(answer)))  # 0 = pad, skipped
        return GenerateDecoderOnlyOutput(sequences=torch.tensor(rows))  # return_dict_in_generate=True


class MqarOracle(nn.Module):
    """Predicts, at every position, the next link of that token's chain in the kv context; with
    `wrong_last` it misses the final link of every chain (the value), with `correct=False` all."""

    def __init__(self, vocab_size, kv_pairs, hops, separator=False, correct=True, wrong_last=False):
        super().__init__()
        self.config = SimpleNamespace(vocab_size=vocab_size)
        self.anchor = nn.Parameter(torch.zeros(1))
        self.width = 3 if separator else 2
        self.context = self.width * kv_pairs * hops
        self.correct, self.wrong_last = correct, wrong_last

    def forward(self, input_ids, use_cache=False):
        batch, length = input_ids.shape
        half = self.config.vocab_size // 2
        logits = torch.zeros(batch, length, self.config.vocab_size)
        for b, row in enumerate(input_ids.tolist()):
            w = self.width
            table = dict(zip(row[w - 2 : self.context : w], row[w - 1 : self.context : w], strict=True))
            for t, token in enumerate(row):
                guess = table.get(token, 0)
                if not self.correct or (self.wrong_last and guess >= half):
                    guess = 1 if guess == 0 else 0
                logits[b, t, guess] = 1.0
        return SimpleNamespace(logits=logits)


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory):
    torch.manual_seed(0)
    cfg = AttnLabConfig(
        vocab_size=256, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, layers="LF"
    )
    path = tmp_path_factory.mktemp("models") / "tiny-hybrid"
    AttnLabForCausalLM(cfg).save_pretrained(path)  # no tokenizer files: vocab 256 means bytes
    return path


TEXT_TASKS = (
    "variable_tracking",
    "facts",
    "niah_single",
    "niah_multikey",
    "niah_multivalue",
    "niah_multiquery",
    "copy",
    "ngram_lookup",
)


def test_text_oracle_scores_one_on_every_cell_and_junk_scores_zero():
    spec = SuiteSpec(tasks=TEXT_TASKS, lengths=(700, 1300), hops=(1, 2), samples=3, batch_size=2)
    oracle = TextOracle()
    result = run_suite(oracle, byte_tokenizer(), spec, progress=False)
    assert len(result.cells) == len(spec.cells()) and all(c["score"] == 1.0 for c in result.cells)
    assert set(oracle.batch_sizes) == {2, 1}  # 3 samples of equal length -> batches of 2 and 1
    junk = run_suite(TextOracle(correct=False), byte_tokenizer(), spec, progress=False)
    assert all(c["score"] == 0.0 for c in junk.cells)


def test_cells_only_for_supported_hops():
    cells = SuiteSpec(tasks=("facts", "niah_single"), lengths=(256,), hops=(1, 3)).cells()
    assert cells == [("facts", 256, 1), ("facts", 256, 3), ("niah_single", 256, 1)]


@pytest.mark.parametrize("separator", [False, True])
@pytest.mark.parametrize("hops", [1, 2])
def test_mqar_oracle_gets_every_chain_and_a_wrong_model_none(hops, separator):
    options = {"mqar": {"kv_pairs": 4, "separator": separator}}
    spec = SuiteSpec(tasks=("mqar",), lengths=(64, 128), hops=(hops,), samples=4, options=options)
    cells = run_suite(MqarOracle(256, 4, hops, separator), None, spec, progress=False).cells
    assert [(c["length"], c["hops"]) for c in cells] == [(64, hops), (128, hops)]
    assert all(c["score"] == 1.0 and c["sample_exact_match"] == 1.0 and c["kv_pairs"] == 4 for c in cells)
    assert all(c["metric"] == "chain_exact_match" for c in cells)
    wrong = run_suite(MqarOracle(256, 4, hops, separator, correct=False), None, spec, progress=False).cells
    assert all(c["score"] == 0.0 for c in wrong)


def test_a_chain_with_one_wrong_link_scores_zero():
    """3-hop chains with the first two links right and the last wrong: 2/3 of the answer tokens,
    but no chain (greedy decoding would end on a wrong value)."""
    spec = SuiteSpec(tasks=("mqar",), lengths=(128,), hops=(3,), samples=4, options={"mqar": {"kv_pairs": 4}})
    (cell,) = run_suite(MqarOracle(256, 4, 3, wrong_last=True), None, spec, progress=False).cells
    assert cell["score"] == 0.0 and cell["answer_token_accuracy"] == pytest.approx(2 / 3)


def test_a_cell_that_cannot_fit_is_skipped_with_the_reason():
    spec = SuiteSpec(
        tasks=("facts", "mqar"), lengths=(64,), hops=(4,), samples=1, options={"mqar": {"kv_pairs": 4}}
    )
    cells = run_suite(MqarOracle(16, 4, 4), byte_tokenizer(), spec, progress=False).cells
    assert all(c["score"] is None for c in cells)
    assert (
        "more than length=64" in cells[0]["skipped"] and "vocab_size = 16 is too small" in cells[1]["skipped"]
    )


def test_a_model_without_tokenizer_runs_token_tasks_and_skips_text_tasks(tmp_path):
    cfg = AttnLabConfig(
        vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, layers="LF"
    )
    AttnLabForCausalLM(cfg).save_pretrained(tmp_path / "run" / "hf")  # a trainer's run dir layout
    spec = SuiteSpec(
        tasks=("mqar", "facts"),
        lengths=(128,),
        hops=(2,),
        samples=2,
        options={"mqar": {"random_non_queries": False}},
    )
    report = run_eval([tmp_path / "run"], spec, tmp_path / "out", device="cpu", progress=False)
    mqar_cell, facts_cell = report["models"][0]["cells"]
    assert report["models"][0]["path"] == str(tmp_path / "run" / "hf")
    assert mqar_cell["score"] is not None and mqar_cell["random_non_queries"] is False
    assert facts_cell["score"] is None and facts_cell["skipped"] == "no tokenizer for a text task"


def test_mqar_samples_follow_the_training_config_of_each_run(tmp_path):
    """A run trained with separator=true is evaluated on separator samples without --options; an
    explicit option wins; a run trained on text (or a bare HF folder) gets the generator defaults."""
    cfg = AttnLabConfig(vocab_size=64, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, layers="F")
    task = {"name": "mqar", "separator": True, "random_non_queries": False, "power_a": 0.02}
    for name, data in (("mqar_run", {"source": "task", "task": task}), ("text_run", {"source": "text"})):
        AttnLabForCausalLM(cfg).save_pretrained(tmp_path / name / "hf")
        (tmp_path / name / "config.yaml").write_text(yaml.safe_dump({"seed": 0, "data": data}))
    spec = SuiteSpec(tasks=("mqar",), lengths=(64,), hops=(2,), samples=2)
    runs = [tmp_path / "mqar_run", tmp_path / "mqar_run" / "hf", tmp_path / "text_run"]
    report = run_eval(runs, spec, tmp_path / "out", device="cpu", progress=False)
    trained = {"power_a": 0.02, "random_non_queries": False, "separator": True}
    assert [m["mqar_options"] for m in report["models"]] == [trained, trained, {}]
    assert report["models"][0]["cells"][0]["separator"] is True
    assert "separator" not in report["models"][2]["cells"][0]  # generator defaults

    spec = SuiteSpec(
        tasks=("mqar",), lengths=(64,), hops=(2,), samples=2, options={"mqar": {"separator": False}}
    )
    report = run_eval(runs[:1], spec, tmp_path / "out2", device="cpu", progress=False)
    assert report["models"][0]["cells"][0]["separator"] is False


@pytest.mark.parametrize(
    "options, message",
    [
        (
            {"mqar": {"seperator": True}},
            r"options\['mqar'\]: unknown \['seperator'\]; allowed: kv_pairs, power_a",
        ),
        ({"mqar": {"separator": "yes"}}, "mqar.separator = 'yes': must be true or false"),
        ({"mqar": {"random_non_queries": 0}}, "mqar.random_non_queries = 0: must be true or false"),
        ({"mqar": {"kv_pairs": 0}}, "kv_pairs = 0: must be a positive integer"),
        ({"mqar": {"power_a": 2.0}}, "mqar.power_a = 2.0"),
        ({"variable_tracking": {"chain": 2}}, r"unknown \['chain'\]; allowed: chains, icl"),
    ],
)
def test_suite_options_name_the_bad_option_and_what_is_allowed(options, message):
    with pytest.raises(ValueError, match=message):
        SuiteSpec(options=options)


def test_cli_bad_option_is_a_clear_error(tiny_model_dir):
    with pytest.raises(SystemExit, match=r"attnlab eval: error: .*unknown \['bogus'\]; allowed: distractors"):
        main(["eval", str(tiny_model_dir), "--options", '{"facts": {"bogus": 1}}'])


def test_training_hook_returns_flat_metrics_and_keeps_train_mode(tiny_model_dir):
    model = AttnLabForCausalLM.from_pretrained(tiny_model_dir).train()
    metrics = evaluate_suite(
        model, None, {"tasks": ["mqar", "niah_single"], "lengths": [128, 300], "hops": [1, 2], "samples": 2}
    )
    assert model.training
    assert set(metrics) == {
        "eval/mqar/len128/hops1", "eval/mqar/len300/hops1", "eval/mqar/len128/hops2",
        "eval/mqar/len300/hops2", "eval/niah_single/len300/hops1", "eval/mean",
    }  # fmt: skip
    assert all(0.0 <= v <= 1.0 for v in metrics.values())


def test_suite_spec_names_the_bad_field():
    with pytest.raises(ValueError, match="suite 'nope' is unknown; allowed: multihop, ruler"):
        SuiteSpec(suite="nope")
    with pytest.raises(ValueError, match=r"unknown field\(s\) \['length'\]"):
        SuiteSpec.from_dict({"length": [256]})
    with pytest.raises(ValueError, match="suite lengths = \\(0,\\)"):
        SuiteSpec(lengths=(0,))


def test_run_eval_writes_json_markdown_predictions_and_plots(tiny_model_dir, tmp_path):
    spec = SuiteSpec(lengths=(300, 600), hops=(1, 2), samples=2)
    report = run_eval([tiny_model_dir, tiny_model_dir], spec, tmp_path, device="cpu", progress=False)
    saved = json.loads((tmp_path / "eval.json").read_text())
    assert saved == report and [m["name"] for m in saved["models"]] == ["tiny-hybrid", "tiny-hybrid'"]
    assert {(c["task"], c["length"], c["hops"]) for c in saved["models"][0]["cells"]} == set(spec.cells())
    table = (tmp_path / "eval.md").read_text()
    assert "| task | hops | model | 300 | 600 |" in table
    assert "| mqar | 2 | tiny-hybrid' |" in table and "| facts | 1 | tiny-hybrid |" in table
    lines = (tmp_path / "predictions.jsonl").read_text().splitlines()
    scored_cells = [c for c in saved["models"][0]["cells"] if c["score"] is not None]
    assert len(lines) == 2 * 2 * len(scored_cells)  # 2 models x 2 samples per cell, mqar's too
    for png in ("accuracy_vs_length.png", "heatmap.png"):
        assert (tmp_path / png).read_bytes()[:8] == PNG_MAGIC


def test_run_dir_resolves_to_its_newest_model_folder(tiny_model_dir, tmp_path):
    (tmp_path / "checkpoints" / "last").mkdir(parents=True)
    (tmp_path / "checkpoints" / "last" / "config.json").write_text(
        (tiny_model_dir / "config.json").read_text()
    )
    assert resolve_model_dir(tmp_path) == tmp_path / "checkpoints" / "last"
    assert resolve_model_dir(tiny_model_dir) == tiny_model_dir
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="has no config.json"):
        resolve_model_dir(tmp_path / "empty")


def test_runner_evaluates_a_plain_hf_causal_lm_with_its_bpe_tokenizer(tmp_path):
    from transformers import GPT2Config, GPT2LMHeadModel

    from attnlab.evals.tokenizer import train_bpe
    from attnlab.evals.words import NOISE, NOUNS

    tok = train_bpe([NOISE * 3, " ".join(NOUNS)] * 5, vocab_size=400)
    torch.manual_seed(0)
    GPT2LMHeadModel(
        GPT2Config(vocab_size=len(tok), n_embd=32, n_layer=2, n_head=2, n_positions=512)
    ).save_pretrained(tmp_path / "gpt2")
    tok.save_pretrained(tmp_path / "gpt2")
    spec = SuiteSpec(tasks=("niah_single", "mqar"), lengths=(300,), hops=(1,), samples=2)
    report = run_eval([tmp_path / "gpt2"], spec, tmp_path / "out", device="cpu", progress=False)
    cells = report["models"][0]["cells"]
    assert [(c["task"], c["n"]) for c in cells] == [("niah_single", 2), ("mqar", 2)]
    assert all(c["score"] is not None for c in cells)


def test_cli_eval_writes_its_files(tiny_model_dir, tmp_path):
    args = [
        "eval",
        str(tiny_model_dir),
        "--tasks",
        "mqar,facts",
        "--lengths",
        "512,1k",
        "--hops",
        "1,2",
        "--samples",
        "1",
        "--out",
        str(tmp_path),
        "--device",
        "cpu",
    ]
    assert main(args) == 0
    assert {p.name for p in tmp_path.iterdir()} >= {
        "eval.json",
        "eval.md",
        "predictions.jsonl",
        "accuracy_vs_length.png",
        "heatmap.png",
    }
    assert json.loads((tmp_path / "eval.json").read_text())["suite"]["lengths"] == [512, 1024]


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["eval", "X", "--suite", "nope"], ["--suite", "invalid choice", "multihop"]),
        (["eval", "X", "--lengths", "256,2q"], ["--lengths", "'2q' is not a length", "1k = 1024"]),
        (["eval", "X", "--hops", "1,0"], ["--hops", "'0' is not a hop count"]),
        (["eval", "X", "--tasks", "mqar,nope"], ["--tasks", "unknown task(s) ['nope']", "variable_tracking"]),
        (["eval"], ["required", "PATH"]),
    ],
)
def test_bad_cli_input_names_the_flag_and_allowed_values(argv, expected, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert all(text in err for text in expected), err


def test_cli_missing_path_is_a_clear_error(tmp_path):
    with pytest.raises(SystemExit, match="PATH .*nowhere does not exist"):
        main(["eval", str(tmp_path / "nowhere")])


def report_of(models: dict[str, dict[int, float | None]]) -> dict:
    """An eval.json-shaped report: {model name: {length: score or None}} on mqar, 1 hop."""
    return {
        "suite": {"suite": "mqar", "samples": 4, "seed": 0},
        "models": [
            {"name": name, "path": name, "seconds": 0.0,
             "cells": [{"task": "mqar", "hops": 1, "length": n, "score": s} for n, s in scores.items()]}
            for name, scores in models.items()
        ],
    }  # fmt: skip


def test_a_sweeps_seeds_are_reported_per_variant_with_each_seed(tmp_path):
    from attnlab.evals.markdown_report import across_seeds, markdown_report
    from attnlab.evals.plots import line_series, plot_lines

    report = report_of(
        {
            "full_seed=0": {64: 1.0, 128: 1.0},
            "full_seed=1": {64: 1.0, 128: 0.5},
            "lightning_seed=0": {64: 0.5, 128: 0.2},
            "lightning_seed=1": {64: 0.3, 128: None},  # a skipped cell: one seed left
        }
    )
    rows = {(r["variant"], r["length"]): (r["mean"], r["seeds"], r["scores"]) for r in across_seeds(report)}
    assert rows == {
        ("full", 64): (1.0, 2, [1.0, 1.0]),
        ("full", 128): (0.75, 2, [1.0, 0.5]),
        ("lightning", 64): (pytest.approx(0.4), 2, [0.5, 0.3]),
        ("lightning", 128): (0.2, 1, [0.2]),
    }
    text = markdown_report(report)
    assert "| mqar | 1 | full | 2 | 100.0 | 75.0 (100 / 50) |" in text
    assert "| mqar | 1 | lightning | 2 | 40.0 (50 / 30) | 20.0 |" in text
    (full, lightning) = line_series(report, "mqar", 1)
    assert full == ("full", [64, 128], [100.0, 75.0], ([100.0, 50.0], [100.0, 100.0]))
    assert lightning[0] == "lightning" and lightning[1] == [64, 128]
    plot_lines(report, tmp_path / "lines.png")
    assert (tmp_path / "lines.png").stat().st_size > 0


def test_models_that_are_not_seeds_get_no_seed_rows():
    from attnlab.evals.markdown_report import across_seeds, markdown_report
    from attnlab.evals.plots import line_series

    report = report_of({"full_seed=0": {64: 1.0}, "lightning": {64: 0.5}})  # one seed each: no groups
    assert across_seeds(report) == [] and "Across seeds" not in markdown_report(report)
    assert [s[0] for s in line_series(report, "mqar", 1)] == ["full_seed=0", "lightning"]
