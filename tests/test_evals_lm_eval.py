"""The suite through lm-eval, offline, on a tiny random attnlab model: lm-eval's own `lm_eval`
command with `--model attnlab` (in a subprocess; the installed attnlab-lm-eval.pth registers the
model), and lm-eval's `hf` model in process. Checks that lm-eval feeds the generated prompts
unchanged (exactly `length` tokens) and reports the attnlab scores."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from attnlab import AttnLabConfig, AttnLabForCausalLM
from attnlab.evals.lm_eval_data import include_path
from attnlab.evals.tokenizer import byte_tokenizer

pytest.importorskip("lm_eval")

OFFLINE = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
METADATA = {"lengths": [512], "hops": [1, 2], "samples": 2}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    torch.manual_seed(0)
    cfg = AttnLabConfig(
        vocab_size=256, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, layers="LF"
    )
    path = tmp_path_factory.mktemp("lm_eval") / "tiny"
    AttnLabForCausalLM(cfg).save_pretrained(path)
    byte_tokenizer().save_pretrained(path)  # lm-eval's hf model needs tokenizer files
    return path


def test_packaged_task_yamls_define_the_multihop_group():
    names = {p.name for p in include_path().iterdir()}
    assert {
        "attnlab_multihop.yaml",
        "attnlab_variable_tracking.yaml",
        "attnlab_facts.yaml",
        "_common_yaml",
    } <= names
    # the README's `--include_path "$(python -m attnlab.evals.lm_eval_data)"`
    printed = subprocess.run(
        [sys.executable, "-m", "attnlab.evals.lm_eval_data"], capture_output=True, text=True, cwd="/"
    )
    assert printed.stdout.strip() == str(include_path())


def test_plain_lm_eval_cli_runs_the_multihop_group_with_the_attnlab_model(model_dir, tmp_path):
    """The issue's command as written: `lm_eval --model attnlab ... --include_path ...` (lm-eval's
    legacy form without the `run` subcommand), the console script in this interpreter's bin/."""
    lm_eval_command = shutil.which("lm_eval", path=str(Path(sys.executable).parent)) or shutil.which(
        "lm_eval"
    )
    assert lm_eval_command, "lm-eval's console script is not installed"
    command = [
        lm_eval_command,
        "--model", "attnlab", "--model_args", f"pretrained={model_dir}",
        "--tasks", "attnlab_multihop", "--include_path", str(include_path()),
        "--metadata", json.dumps(METADATA), "--device", "cpu", "--batch_size", "4",
        "--output_path", str(tmp_path), "--log_samples",
    ]  # fmt: skip
    result = subprocess.run(
        command, capture_output=True, text=True, env={**os.environ, **OFFLINE}, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (results_file,) = tmp_path.glob("*/results_*.json")
    results = json.loads(results_file.read_text())["results"]
    assert 0.0 <= results["attnlab_multihop"]["score,none"] <= 1.0
    assert results["attnlab_variable_tracking"]["len_512,none"] >= 0  # cells at 512 were scored
    assert "len_1024,none" not in results["attnlab_variable_tracking"]  # not asked: not listed
    assert "len_1024" not in result.stdout and "len_512" in result.stdout  # lm-eval's table
    samples = [
        json.loads(line)
        for f in tmp_path.glob("*/samples_attnlab_variable_tracking_*.jsonl")
        for line in f.open()
    ]
    assert len(samples) == 2 * 2  # 2 hops x 2 samples at one length
    for s in samples:
        context = s["arguments"]["gen_args_0"]["arg_0"]
        assert context == s["doc"]["prompt"] and len(context.encode()) == 512


def test_lm_eval_hf_model_runs_an_attnlab_task_in_process(model_dir):
    import lm_eval
    from lm_eval.tasks import TaskManager

    os.environ.update(OFFLINE)
    # With an explicit TaskManager, lm-eval does not merge model_args into the task metadata.
    manager = TaskManager(
        include_path=str(include_path()), metadata={"pretrained": str(model_dir), **METADATA, "hops": [1]}
    )
    out = lm_eval.simple_evaluate(
        model="hf",
        model_args={"pretrained": str(model_dir), "device": "cpu"},
        tasks=["attnlab_niah_single"],
        task_manager=manager,
        batch_size=1,  # hf left-pads batches, which attnlab models reject
    )
    assert 0.0 <= out["results"]["attnlab_niah_single"]["score,none"] <= 1.0
    assert out["results"]["attnlab_niah_single"]["sample_len"] == 2


def test_the_plugin_registers_lazily_and_leaves_lm_eval_builtins_alone():
    """A fresh interpreter: the .pth hook is installed but imports neither attnlab nor torch until
    lm-eval resolves a model; then `attnlab` and lm-eval's own `hf` both resolve."""
    script = (
        "import sys\n"
        "assert '_attnlab_lm_eval' in sys.modules, 'attnlab-lm-eval.pth did not run'\n"
        "assert 'attnlab' not in sys.modules and 'torch' not in sys.modules\n"
        "from lm_eval.api.registry import get_model\n"
        "assert 'attnlab' not in sys.modules\n"
        "cls = get_model('attnlab')\n"
        "print(cls.__module__, cls.__name__, get_model('hf').__name__)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "ATTNLAB_LM_EVAL_PLUGIN"}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, cwd="/")
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split() == ["attnlab.evals.lm_eval_model", "AttnLabLM", "HFLM"]


@pytest.mark.parametrize("switch, installed", [("1", True), ("0", False)])
def test_the_plugin_can_be_switched_off(switch, installed):
    script = "import sys; print(any(type(f).__module__ == '_attnlab_lm_eval' for f in sys.meta_path))"
    env = {**os.environ, "ATTNLAB_LM_EVAL_PLUGIN": switch}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, cwd="/")
    assert result.stdout.strip() == str(installed)


def test_attnlab_lm_eval_wrapper_adds_the_packaged_include_path():
    result = subprocess.run(
        [sys.executable, "-m", "attnlab.cli", "lm-eval", "ls", "tasks"],
        capture_output=True, text=True, env={**os.environ, **OFFLINE}, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "attnlab_multihop" in result.stdout and "attnlab_variable_tracking" in result.stdout


def test_lengths_too_short_for_a_task_name_the_shortest_that_fits(model_dir):
    from attnlab.evals.lm_eval_data import build_dataset

    with pytest.raises(
        ValueError, match=r"attnlab task variable_tracking: every length in \[32\] is too short"
    ) as err:
        build_dataset("variable_tracking", lengths=[32], hops=[1], samples=1, pretrained=str(model_dir))
    fits = int(re.search(r"the shortest that fits is (\d+) tokens", str(err.value))[1])
    assert (
        len(
            build_dataset(
                "variable_tracking", lengths=[fits], hops=[1], samples=1, pretrained=str(model_dir)
            )["test"]
        )
        == 1
    )
    with pytest.raises(ValueError, match="every length in"):
        build_dataset("variable_tracking", lengths=[fits - 1], hops=[1], samples=1, pretrained=str(model_dir))
