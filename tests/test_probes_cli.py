"""`attnlab probe` end to end on a tiny locally built HF LlamaForCausalLM and an attnlab run dir,
and its errors on bad input."""

import json

import pytest
import torch
from probes_helpers import llama_dir, one_thread  # noqa: F401
from variants import tiny_config

from attnlab import AttnLabForCausalLM
from attnlab.cli import main

ALL = ["retrieval", "induction", "previous_token", "duplicate", "prefix_matching"]
SMALL = [
    "--seq-len", "8", "--batch", "2", "--prefix-len", "4",
    "--niah-lengths", "2", "--niah-depths", "2", "--niah-needles", "1", "--max-context", "32",
    "--no-progress",
]  # fmt: skip


def test_probe_cli_on_a_local_llama_writes_scores_heatmaps_ablation_and_summary(llama_dir, tmp_path):
    out = tmp_path / "probe"
    args = ["probe", str(llama_dir), "--probes", ",".join(ALL), "--ablate", "top:2", "--draws", "2"]
    assert main(args + SMALL + ["--out", str(out)]) == 0
    report = json.loads((out / "scores.json").read_text())
    assert report["kind"] == "hf" and report["heads_per_layer"] == [4, 4]
    for name in ALL:
        scores = report["probes"][name]["scores"]
        assert len(scores) == 2 and all(len(row) == 4 for row in scores)
        assert (out / f"{name}.png").stat().st_size > 0
    ablation = report["ablation"]
    assert ablation["k"] == 2 and len(ablation["top_heads"]) == 2 and len(ablation["random_accuracies"]) == 2
    assert not set(map(tuple, ablation["top_heads"])) & {
        tuple(h) for s in ablation["random_heads"] for h in s
    }
    assert (out / "ablation.png").stat().st_size > 0
    md = (out / "probe.md").read_text()
    assert "## Ablation" in md and "| retrieval |" in md


def test_probe_cli_reads_the_hf_export_of_an_attnlab_run_dir(tmp_path):
    torch.manual_seed(0)
    AttnLabForCausalLM(tiny_config("hybrid-1to1")).save_pretrained(tmp_path / "run" / "hf")
    out = tmp_path / "probe"
    assert (
        main(
            ["probe", str(tmp_path / "run"), "--probes", "induction,previous_token", "--out", str(out)]
            + SMALL
        )
        == 0
    )
    report = json.loads((out / "scores.json").read_text())
    assert report["kind"] == "attnlab" and set(report["probes"]) == {"induction", "previous_token"}


@pytest.mark.parametrize(
    "extra, flag, allowed",
    [
        (["--probes", "induction,copying"], "--probes", "allowed: retrieval, induction"),
        (["--ablate", "top8"], "--ablate", "top:K"),
        (["--ablate", "top:0"], "--ablate", "top:K"),
        (["--mask", "half"], "--mask", "'uniform', 'zero'"),
        (["--ablate-by", "copying"], "--ablate-by", "allowed: retrieval, induction"),
    ],
)
def test_bad_flags_name_the_flag_and_the_allowed_values(llama_dir, capsys, extra, flag, allowed):
    with pytest.raises(SystemExit) as exit_info:
        main(["probe", str(llama_dir)] + extra)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert flag in err and allowed in err


def test_a_missing_or_empty_path_is_a_clear_error(tmp_path, capsys):
    for path, message in ((tmp_path / "nope", "does not exist"), (tmp_path, "hf/config.json")):
        with pytest.raises(SystemExit):
            main(["probe", str(path)])
        err = capsys.readouterr().err
        assert "PATH" in err and message in err


def test_an_ablation_larger_than_the_model_is_a_clear_error(llama_dir, tmp_path, capsys):
    args = ["probe", str(llama_dir), "--probes", "induction", "--ablate", "top:8", "--ablate-by", "induction"]
    assert main(args + SMALL + ["--out", str(tmp_path)]) == 2
    assert "--ablate top:8: the model has 8 heads" in capsys.readouterr().err
