"""common/quiet.py: the warnings importing torchao logs on a CPU torch are dropped, exactly those.

The end-to-end check imports the model in a fresh interpreter, where transformers pulls in torchao,
and reads its stderr; the unit checks feed the filters records that must pass and records that
must not."""

from __future__ import annotations

import enum
import importlib.util
import logging
import subprocess
import sys

import pytest
import torch

from attnlab.common.quiet import CudaOnlyExtensionsFilter, TorchaoEnumConstantsFilter, quiet_torchao_import


def record(name: str, msg: str, args=()) -> logging.LogRecord:
    return logging.LogRecord(name, logging.WARNING, __file__, 1, msg, args, None)


@pytest.mark.skipif(importlib.util.find_spec("torchao") is None, reason="torchao is not installed")
def test_importing_the_model_logs_no_torchao_noise():
    probe = (
        "import logging, sys\n"
        "import attnlab.archs.model\n"
        "assert 'torchao' in sys.modules, 'transformers did not import torchao here'\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    if torch.version.cuda is None:
        assert "Failed to load" not in done.stderr
    assert "is an Enum subclass" not in done.stderr


def test_only_cuda_only_extensions_on_a_cpu_torch_are_dropped(monkeypatch):
    f = CudaOnlyExtensionsFilter()
    cutlass = record("torchao", "Failed to load /x/torchao/_C_cutlass_90a.abi3.so: Could not load")
    mxfp8 = record("torchao", "Failed to load /x/torchao/_C_mxfp8.cpython-310-x86_64-linux-gnu.so: nope")
    other = record("torchao", "Failed to load /x/torchao/_C.abi3.so: undefined symbol")
    monkeypatch.setattr(torch.version, "cuda", None)
    assert not f.filter(cutlass) and not f.filter(mxfp8)
    assert f.filter(other)  # a CPU extension that fails is news
    assert f.filter(record("torchao", "Skipping import of cpp extensions due to incompatible torch version"))
    monkeypatch.setattr(torch.version, "cuda", "12.8")
    assert f.filter(cutlass)  # with CUDA, a CUDA extension that fails is news too


TorchaoLike = enum.Enum("KernelPreference", "AUTO", module="torchao.quantization.quantize_.common")
Elsewhere = enum.Enum("Elsewhere", "B", module="somelib.enums")


def test_only_torchao_enum_notices_are_dropped():
    f = TorchaoEnumConstantsFilter()
    notice = "%s is an Enum subclass and is now natively supported by torch.compile as an opaque value type."
    assert not f.filter(record("torch.utils._pytree", notice, (TorchaoLike,)))
    assert f.filter(record("torch.utils._pytree", notice, (Elsewhere,)))  # another library's: passes
    assert f.filter(record("torch.utils._pytree", "something else about %s", (TorchaoLike,)))


def test_installing_twice_adds_each_filter_once():
    quiet_torchao_import()
    quiet_torchao_import()
    for name, kind in (
        ("torchao", CudaOnlyExtensionsFilter),
        ("torch.utils._pytree", TorchaoEnumConstantsFilter),
    ):
        assert sum(isinstance(f, kind) for f in logging.getLogger(name).filters) == 1
