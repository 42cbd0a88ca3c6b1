"""The kernel choice is part of every job's output: `--kernels` pins an op's backend (or opts into
the machine's ranking), a bad value names the flag and what is allowed, and eval.json, probe
scores.json and the benchmarks' results.json record the choice and the backends that ran."""

from __future__ import annotations

import json

import pytest

from attnlab import AttnLabConfig, AttnLabForCausalLM
from attnlab.cli import main
from attnlab.kernels import current_choice, describe_kernels


@pytest.fixture(scope="module")
def softmax_model(tmp_path_factory):
    """A tiny full + lightning model saved without a tokenizer (token tasks only)."""
    folder = tmp_path_factory.mktemp("model")
    cfg = AttnLabConfig(
        vocab_size=64, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, layers="LF"
    )
    AttnLabForCausalLM(cfg).save_pretrained(folder)
    return folder


def eval_args(model, out, *extra):
    return ["eval", str(model), "--suite", "mqar", "--lengths", "64", "--hops", "1", "--samples", "2",
            "--out", str(out), *extra]  # fmt: skip


def test_eval_records_the_builtin_choice_and_a_pin(softmax_model, tmp_path):
    assert main(eval_args(softmax_model, tmp_path / "a")) == 0
    kernels = json.loads((tmp_path / "a" / "eval.json").read_text())["models"][0]["kernels"]
    assert kernels["choice"] == {"default": "builtin"}
    assert {"swa_prefill", "lightning_prefill"} <= set(kernels["used"])
    assert "kernels (builtin choice)" in (tmp_path / "a" / "eval.md").read_text()

    assert main(eval_args(softmax_model, tmp_path / "b", "--kernels", "swa_prefill=torch")) == 0
    pinned = json.loads((tmp_path / "b" / "eval.json").read_text())["models"][0]["kernels"]
    assert pinned["choice"] == {"default": "builtin", "swa_prefill": "torch"}
    assert pinned["used"]["swa_prefill"] == "torch"
    assert current_choice().to_json() == {"default": "builtin"}  # the command's choice ended with it


@pytest.mark.parametrize(
    "value, says",
    [
        ("swa_prefill=nope", "kernels.swa_prefill = 'nope' is not a backend of swa_prefill; allowed: torch"),
        ("no_such_op=torch", "kernels.no_such_op: not an op; allowed: default, "),
        ("default=fastest", "kernels.default = 'fastest'; allowed: builtin, ranked"),
        ("swa_prefill", "'swa_prefill' is not OP=BACKEND"),
    ],
)
def test_a_bad_kernels_flag_names_the_field_and_the_allowed_values(
    softmax_model, tmp_path, capsys, value, says
):
    with pytest.raises(SystemExit) as exit_info:
        main(eval_args(softmax_model, tmp_path / "bad", "--kernels", value))
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "--kernels" in err and says in err
    assert not (tmp_path / "bad").exists()  # nothing written


def test_probe_scores_record_the_kernels(softmax_model, tmp_path):
    out = tmp_path / "probe"
    args = ["probe", str(softmax_model), "--probes", "induction", "--batch", "2", "--seq-len", "16",
            "--kernels", "lightning_prefill=torch", "--out", str(out)]  # fmt: skip
    assert main(args) == 0
    kernels = json.loads((out / "scores.json").read_text())["kernels"]
    assert kernels["choice"]["lightning_prefill"] == "torch"
    assert kernels["used"].get("lightning_prefill", "torch") == "torch"
    assert "lightning_prefill=torch (pinned)" in (out / "probe.md").read_text()


def test_describe_kernels_lists_pins_then_what_ran():
    record = {
        "choice": {"default": "ranked", "swa_prefill": "torch"},
        "used": {"swa_prefill": "torch", "lightning_prefill": "triton"},
    }
    assert (
        describe_kernels(record)
        == "kernels (ranked choice): swa_prefill=torch (pinned), lightning_prefill=triton"
    )
    assert describe_kernels(None) == "kernels: not recorded"
