"""What `attnlab eval` tells the user beyond the scores: MQAR predictions are written like text
ones, and cells skipped for a reason (a model without a tokenizer facing text tasks) are said on
the terminal and in eval.md, not only in eval.json."""

from __future__ import annotations

import json

import pytest

from attnlab import AttnLabConfig, AttnLabForCausalLM
from attnlab.cli import main


@pytest.fixture
def token_model(tmp_path):
    """A tiny MQAR-sized model saved without a tokenizer (as a token-task run exports it)."""
    cfg = AttnLabConfig(
        vocab_size=64, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, layers="LF"
    )
    AttnLabForCausalLM(cfg).save_pretrained(tmp_path / "model")
    return tmp_path / "model"


def test_mqar_predictions_and_skipped_text_cells_are_reported(token_model, tmp_path, capsys):
    out = tmp_path / "eval"
    args = [
        "eval",
        str(token_model),
        "--suite",
        "multihop",
        "--lengths",
        "128",
        "--hops",
        "1,2",
        "--samples",
        "3",
    ]
    assert main([*args, "--out", str(out)]) == 0
    terminal = capsys.readouterr().out

    rows = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    mqar = [r for r in rows if r["task"] == "mqar"]
    assert len(mqar) == 2 * 3  # hops 1 and 2, 3 samples each
    for r in mqar:
        assert len(r["answers"]) == len(r["prediction"]) == r["chains"] * r["hops"]
        assert r["score"] == float(r["chains_right"] == r["chains"])
    report = json.loads((out / "eval.json").read_text())
    cells = {(c["task"], c["hops"]): c for c in report["models"][0]["cells"]}
    for hops in (1, 2):  # the written rows agree with the cell's score
        right = [r["chains_right"] for r in mqar if r["hops"] == hops]
        total = [r["chains"] for r in mqar if r["hops"] == hops]
        assert cells["mqar", hops]["score"] == pytest.approx(sum(right) / sum(total))

    skipped = [c for c in report["models"][0]["cells"] if c.get("skipped")]
    assert skipped and all(c["skipped"] == "no tokenizer for a text task" for c in skipped)
    line = f"model: {len(skipped)} cell(s) skipped (variable_tracking, facts, niah_multikey): no tokenizer for a text task"
    assert line in terminal
    assert f"- {line}" in (out / "eval.md").read_text()
