"""The command line answers fast because it imports only what a command needs: `attnlab --help`
loads no torch, a subcommand's --help only that job's modules (checked by what is imported, not by
a clock)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from attnlab.cli import COMMANDS, build_parser


def modules_after(argv: list[str]) -> set[str]:
    code = (
        "import json, sys\n"
        "from attnlab.cli import main\n"
        f"try:\n    main({argv!r})\nexcept SystemExit:\n    pass\n"
        "print(json.dumps(sorted(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return set(json.loads(out.strip().splitlines()[-1]))


def test_attnlab_help_imports_no_torch_and_no_job():
    loaded = modules_after(["--help"])
    assert "torch" not in loaded and "transformers" not in loaded
    assert not any(m.startswith(("attnlab.train", "attnlab.serve", "attnlab.kernels")) for m in loaded)


@pytest.mark.parametrize("command", ["study", "eval", "probe", "demo", "convert", "quantize"])
def test_a_command_help_imports_no_torch(command):
    loaded = modules_after([command, "--help"])
    assert "torch" not in loaded and "lightning" not in loaded


@pytest.mark.parametrize("command", ["train", "sweep"])
def test_train_and_sweep_help_import_no_lightning(command):
    assert "lightning" not in modules_after([command, "--help"])


def test_the_command_table_matches_what_each_module_registers():
    full = build_parser()
    (sub,) = [a for a in full._actions if a.choices and "train" in a.choices]
    assert set(COMMANDS) == set(sub.choices)
    for name in COMMANDS:
        only = build_parser(name)
        (part,) = [a for a in only._actions if a.choices and name in a.choices]
        command = part.choices[name]
        groups = [a for a in command._actions if isinstance(a.choices, dict) and a.choices]
        assert command.get_default("func") is not None or groups, name  # registered, not only listed
