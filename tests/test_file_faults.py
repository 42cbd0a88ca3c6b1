"""Damaged model files and output folders that cannot be written: every command says in one line
which file and what is wrong, exits non-zero, and writes no half an output folder."""

from __future__ import annotations

import errno
import os
import pathlib

import pytest

from attnlab import AttnLabConfig, AttnLabForCausalLM
from attnlab.archs.model_files import check_model_files
from attnlab.cli import main


@pytest.fixture
def model_dir(tmp_path):
    """A tiny saved model (no tokenizer), as `attnlab train` exports it under <run>/hf."""
    cfg = AttnLabConfig(
        vocab_size=32, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, layers="LF"
    )
    folder = tmp_path / "run" / "hf"
    AttnLabForCausalLM(cfg).save_pretrained(folder)
    return folder


def cut(path: pathlib.Path, keep) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: keep(len(data))])


def one_line_error(err: str, *needles: str) -> None:
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert lines and "Traceback" not in err, err
    assert all(n in lines[-1] for n in needles), lines[-1]


@pytest.mark.parametrize(
    "damage, says",
    [
        (lambda n: n // 2, "cut short?"),
        (lambda n: 4, "shorter than a header"),
        (lambda n: 100, "its header claims"),
    ],
)
def test_a_damaged_safetensors_file_is_named_with_what_is_wrong(model_dir, damage, says):
    check_model_files(model_dir)  # intact: passes
    cut(model_dir / "model.safetensors", damage)
    with pytest.raises(ValueError, match=f"model.safetensors is damaged or incomplete: .*{says}"):
        check_model_files(model_dir)


def test_a_damaged_config_json_is_named(model_dir):
    (model_dir / "config.json").write_text('{"model_type": "attnlab", ')
    with pytest.raises(ValueError, match="config.json is not valid JSON"):
        check_model_files(model_dir)


def test_eval_and_probe_on_a_truncated_model_fail_in_one_line_and_write_nothing(model_dir, tmp_path, capsys):
    cut(model_dir / "model.safetensors", lambda n: n // 2)
    run = model_dir.parent
    with pytest.raises(SystemExit) as exit_info:
        main(
            [
                "eval",
                str(run),
                "--suite",
                "mqar",
                "--lengths",
                "64",
                "--hops",
                "1",
                "--out",
                str(tmp_path / "e"),
            ]
        )
    assert "model.safetensors is damaged or incomplete" in str(exit_info.value.code)
    assert (
        main(["probe", str(run), "--probes", "induction", "--out", str(tmp_path / "p"), "--no-progress"]) == 2
    )
    one_line_error(capsys.readouterr().err, "attnlab probe: error:", "model.safetensors is damaged")
    assert not (tmp_path / "e").exists() and not (tmp_path / "p").exists()


def test_probe_checks_ablate_before_any_work(model_dir, tmp_path, capsys):
    code = main(
        ["probe", str(model_dir.parent), "--ablate", "top:4", "--out", str(tmp_path / "p"), "--no-progress"]
    )
    assert code == 2
    one_line_error(capsys.readouterr().err, "--ablate top:4: the model has 4 heads; k must be in 1..3")
    assert not (tmp_path / "p").exists()


def refuse_writes_under(monkeypatch, root: pathlib.Path, code: int) -> None:
    """Folders under `root` cannot be created: a read-only (EACCES) or full (ENOSPC) disk."""
    real_mkdir = pathlib.Path.mkdir

    def mkdir(self, *args, **kwargs):
        if str(self).startswith(str(root)):
            raise OSError(code, os.strerror(code), str(self))
        return real_mkdir(self, *args, **kwargs)

    monkeypatch.setattr(pathlib.Path, "mkdir", mkdir)


@pytest.mark.parametrize("code", [errno.EACCES, errno.ENOSPC])
@pytest.mark.parametrize(
    "command",
    [
        ["demo", "--out", "{out}"],
        [
            "eval",
            "{run}",
            "--suite",
            "mqar",
            "--lengths",
            "64",
            "--hops",
            "1",
            "--samples",
            "2",
            "--out",
            "{out}",
        ],
        ["probe", "{run}", "--probes", "induction", "--batch", "2", "--out", "{out}", "--no-progress"],
        ["bench", "crossover", "--models", "full={run}/hf", "--lengths", "128", "--out", "{out}"],
    ],
    ids=["demo", "eval", "probe", "bench"],
)
def test_an_output_folder_that_cannot_be_written_is_one_line(
    model_dir, tmp_path, monkeypatch, capsys, command, code
):
    import os

    out = tmp_path / "readonly" / "out"
    refuse_writes_under(monkeypatch, tmp_path / "readonly", code)
    words = [w.format(out=out, run=model_dir.parent) for w in command]
    assert main(words) == 1
    one_line_error(capsys.readouterr().err, f"attnlab {command[0]}: error: {os.strerror(code)}: {out}")


def test_lm_eval_on_a_model_without_a_tokenizer_says_so(model_dir):
    from attnlab.evals.lm_eval_model import AttnLabLM

    with pytest.raises(ValueError, match="no tokenizer in .*lm-eval tasks are text"):
        AttnLabLM(pretrained=str(model_dir.parent), device="cpu")


@pytest.mark.parametrize("command", ["train", "study"])
def test_a_config_file_cut_short_is_named_with_the_line(tmp_path, capsys, command):
    source = "configs/train/mqar.yaml" if command == "train" else "configs/study/default.yaml"
    text = (pathlib.Path(__file__).resolve().parents[1] / source).read_text()
    config = tmp_path / "cut.yaml"
    config.write_text(text[: text.index("\n", len(text) // 2) + 1] + "extra: [cut")  # a flow list cut short
    words = (
        ["train", "--config", str(config)]
        if command == "train"
        else ["study", str(config), "--out", str(tmp_path / "o")]
    )
    assert main(words) == 2
    one_line_error(capsys.readouterr().err, f"attnlab {command}: error: {config}: not valid YAML", "at line")
    assert not (tmp_path / "o").exists()
