"""Triton kernels, checked on CPU: tests/triton_interpret_cases.py runs once in a subprocess with
TRITON_INTERPRET=1 (it must be set before triton is imported, and must not leak into the other
tests), and each of its test functions is reported here as its own test."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

CASES = Path(__file__).with_name("triton_interpret_cases.py")
NAMES = [
    node.name
    for node in ast.parse(CASES.read_text()).body
    if isinstance(node, ast.FunctionDef) and node.name.startswith("test_")
]

pytest.importorskip("triton")


@pytest.fixture(scope="module")
def interpreted(tmp_path_factory) -> dict[str, list[str]]:
    """Run the cases once; -> test function name -> list of failure messages (one entry per case)."""
    report = tmp_path_factory.mktemp("triton") / "junit.xml"
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", str(CASES), "-q", "-p", "no:cacheprovider", f"--junitxml={report}"],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert report.exists(), result.stdout[-3000:] + result.stderr[-3000:]
    outcomes: dict[str, list[str]] = {}
    for case in ET.parse(report).iter("testcase"):
        name = case.get("name").split("[")[0]
        problems = [el.get("message", el.tag) for el in case if el.tag in ("failure", "error", "skipped")]
        outcomes.setdefault(name, []).append("; ".join(problems))
    return outcomes


@pytest.mark.parametrize("name", NAMES)
def test_triton_kernel_under_interpreter(interpreted, name):
    assert name in interpreted, f"{name} did not run; ran: {sorted(interpreted)}"
    failures = [msg for msg in interpreted[name] if msg]
    assert not failures, f"{name}: " + " | ".join(failures)
