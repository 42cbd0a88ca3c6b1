"""The facts about this machine that decide which kernel is correct or fastest: the device's name
and the versions of the libraries that compile or run kernels. Stored rankings and traces are keyed
by them, so a new driver, torch, triton or fla version starts clean.
"""

from __future__ import annotations

import functools
import platform
from importlib import metadata
from pathlib import Path

import torch


def library_version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "none"


@functools.cache
def device_name(device_type: str) -> str:
    if device_type == "cuda":
        major, minor = torch.cuda.get_device_capability()
        return f"cuda:{torch.cuda.get_device_name()} sm{major}{minor}"
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{device_type}:{model}"


@functools.cache
def device_key(device_type: str) -> str:
    """Device plus every library version that changes which kernel is correct or fastest."""
    versions = " ".join(
        f"{d}={library_version(d)}" for d in ("torch", "triton", "flash-linear-attention", "attnlab")
    )
    return f"{device_name(device_type)} | {versions}"
