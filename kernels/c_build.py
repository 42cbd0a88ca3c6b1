"""Compile and load the C kernels (paged/paged_attention.c, state/state_codec.c) at first use.

Each C source ships with the package and is compiled (`gcc -O3 -march=native -fopenmp -shared
-fPIC`) into `ATTNLAB_KERNEL_BUILD_DIR` (default ~/.cache/attnlab/build), one library per source,
compiler version and CPU: -march=native code may not run on another CPU that shares the home
directory. The library is written under a temporary name and renamed, so a concurrent process sees
either no file or a whole one. Without gcc, or when the compile or the load fails, the backend
reports itself unavailable with the reason; importing a `c` backend module never fails.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import subprocess
import uuid
from pathlib import Path

COMPILER = "gcc"
FLAGS = ("-O3", "-march=native", "-fopenmp", "-shared", "-fPIC")


class BuildError(RuntimeError):
    pass


def build_dir() -> Path:
    default = Path.home() / ".cache" / "attnlab" / "build"
    return Path(os.environ.get("ATTNLAB_KERNEL_BUILD_DIR", default))


def _cpu_id() -> str:
    """The CPU model and instruction-set flags -march=native compiles for."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return platform.machine()
    wanted = [line for line in lines if line.startswith(("model name", "flags"))]
    return "\n".join(dict.fromkeys(wanted)) or platform.machine()  # one copy, not one per core


def compiler_version(compiler: str) -> str:
    try:
        result = subprocess.run([compiler, "--version"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise BuildError(f"no C compiler: `{compiler} --version` failed ({exc})") from exc
    if result.returncode != 0:
        raise BuildError(f"no C compiler: `{compiler} --version` exited {result.returncode}")
    return result.stdout.splitlines()[0] if result.stdout else compiler


def build(directory: Path, path: Path, compiler: str = COMPILER) -> Path:
    """Compile the C source `path` into `directory` unless an identical build is there -> the .so path."""
    source = path.read_bytes()
    key = hashlib.sha256(
        b"\0".join(
            [source, compiler_version(compiler).encode(), " ".join(FLAGS).encode(), _cpu_id().encode()]
        )
    ).hexdigest()[:16]
    target = directory / f"{path.stem}-{key}.so"
    if target.exists():
        return target
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BuildError(f"cannot create the build directory {directory}: {exc}") from exc
    tmp = directory / f".{target.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"
    try:
        # The source goes in on stdin: the bytes compiled are the bytes hashed.
        result = subprocess.run([compiler, *FLAGS, "-x", "c", "-", "-o", str(tmp)], input=source,
                                capture_output=True, timeout=300)  # fmt: skip
        if result.returncode != 0:
            log = result.stderr.decode(errors="replace").strip()[-2000:]
            raise BuildError(f"`{compiler} {' '.join(FLAGS)}` failed on {path.name}: {log}")
        os.replace(tmp, target)  # atomic: no process ever loads a half-written file
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise BuildError(f"compiling {path.name} into {directory} failed: {exc}") from exc
    finally:
        tmp.unlink(missing_ok=True)
    return target


def open_library(source: Path, declare) -> tuple[ctypes.CDLL | None, str | None]:
    """Build `source` (or reuse its build) and load it; `declare(lib)` sets its functions'
    signatures. -> (the library, None), or (None, why not)."""
    try:
        lib = ctypes.CDLL(str(build(build_dir(), source, COMPILER)))
    except (BuildError, OSError) as exc:
        return None, f"the C kernel is unavailable: {exc}"
    declare(lib)
    return lib, None
