"""Every code block in the README runs as written.

Python blocks run in a fresh namespace; shell blocks run through bash, with `attnlab serve` started
in the background until its /health answers. They run in a folder holding what the README assumes
exists: `runs/my-run`, a tiny model with a byte tokenizer, and `$KEY`. The set-up block (install
and the full study, or the test suite itself) is the one block not run here: CI runs its test
command, and its study command is parsed."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import time
from pathlib import Path

import httpx
import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
KEY = "readme-test-key"


def blocks() -> list[tuple[str, str]]:
    return re.findall(r"^```(\w+)\n(.*?)^```", README.read_text(), flags=re.S | re.M)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    from attnlab import AttnLabConfig, AttnLabForCausalLM
    from attnlab.evals.tokenizer import byte_tokenizer

    folder = tmp_path_factory.mktemp("readme")
    cfg = AttnLabConfig(
        vocab_size=256, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, layers="LF"
    )
    AttnLabForCausalLM(cfg).save_pretrained(folder / "runs" / "my-run")
    byte_tokenizer().save_pretrained(folder / "runs" / "my-run")
    return folder


def test_the_readme_starts_with_the_two_setup_commands():
    lang, first = blocks()[0]
    lines = first.strip().splitlines()
    assert lang == "bash" and len(lines) == 2
    assert lines[0].endswith("pip install -e . && attnlab study")
    assert lines[1].endswith('pip install -e ".[test]" && python -m pytest -q')


def test_every_python_and_shell_block_runs(workdir, monkeypatch):
    monkeypatch.chdir(workdir)
    port = free_port()
    env = {**os.environ, "KEY": KEY}
    server = None
    try:
        for i, (lang, code) in enumerate(blocks()[1:], start=2):
            code = code.replace("8000", str(port))
            if lang == "python":
                exec(compile(code, f"README block {i}", "exec"), {"KEY": KEY, "__name__": "readme"})
            elif lang == "bash":
                lines = code.strip().splitlines()
                if lines[0].startswith("attnlab serve"):
                    server = subprocess.Popen(
                        ["bash", "-c", lines[0].split("  #")[0]], env=env, cwd=workdir,
                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
                    )  # fmt: skip
                    wait_for(f"http://127.0.0.1:{port}/health", server)
                    lines = lines[1:]
                result = subprocess.run(["bash", "-ec", "\n".join(lines)], env=env, cwd=workdir, capture_output=True, text=True, timeout=120)  # fmt: skip
                assert result.returncode == 0, f"README block {i}: {result.stderr[-1500:]}"
                assert "error" not in result.stdout, f"README block {i}: {result.stdout[-1500:]}"
            else:
                raise AssertionError(f"README block {i}: a {lang!r} block this test does not know how to run")
    finally:
        if server is not None:
            os.killpg(server.pid, 15)
            server.wait(timeout=60)


def wait_for(url: str, proc: subprocess.Popen, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert proc.poll() is None, "attnlab serve exited"
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise AssertionError(f"{url} did not answer within {seconds} s")


def test_the_study_command_in_the_setup_block_parses():
    from attnlab.cli import build_parser

    args = build_parser().parse_args(["study"])
    assert args.config == "study/default.yaml" and str(args.out) == "runs/study"
