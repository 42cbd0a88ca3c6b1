"""`c` backend of `paged_attn_decode`: paged_attention.c (plain C + OpenMP); fp32, CPU, forward only.

The C source ships with the package and is compiled at first use (`gcc -O3 -march=native -fopenmp
-shared -fPIC`) into `ATTNLAB_KERNEL_BUILD_DIR` (default ~/.cache/attnlab/build), one library per
source, compiler version and CPU: -march=native code may not run on another CPU that shares the
home directory. The library is written under a temporary name and renamed, so a concurrent process
sees either no file or a whole one. Without gcc, or when the compile or the load fails, the backend
reports itself unavailable with the reason; importing this module never fails.

The kernel takes data pointers, sizes and element strides (no torch headers), so the caches may be
strided views of one buffer (MLA's latent cache) as long as their last dim is contiguous.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import subprocess
import uuid
from pathlib import Path

import torch

from .attention_ops import PAGED, default_scale
from .registry import register_solution

SOURCE = Path(__file__).with_name("paged_attention.c")
COMPILER = "gcc"
FLAGS = ("-O3", "-march=native", "-fopenmp", "-shared", "-fPIC")
ERRORS = {  # the kernel's return codes
    1: "a block table entry of a visible page is not a page of the cache",
    2: "a sequence is longer than its block table row holds",
    3: "out of memory for the per-thread buffers",
}


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


def build(directory: Path, compiler: str = COMPILER, path: Path = SOURCE) -> Path:
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
        lib = ctypes.CDLL(str(build(build_dir(), COMPILER, source)))
    except (BuildError, OSError) as exc:
        return None, f"the C kernel is unavailable: {exc}"
    declare(lib)
    return lib, None


def _declare(lib: ctypes.CDLL) -> None:
    fn = lib.paged_attn_decode_f32
    ptr, i64 = ctypes.c_void_p, ctypes.c_int64
    fn.argtypes = [ptr] * 7 + [i64] * 15 + [ctypes.c_float, ctypes.c_int]
    fn.restype = ctypes.c_int


@functools.cache
def library() -> tuple[ctypes.CDLL | None, str | None]:
    """-> (the loaded library, None), or (None, why not); built once per process."""
    return open_library(SOURCE, _declare)


def available(device: torch.device) -> str | None:
    if device.type != "cpu":
        return "the C kernel runs on the CPU only"
    return library()[1]


def supports(call: dict) -> str | None:
    for name in ("q", "k_cache", "v_cache", "sinks"):
        t = call.get(name)
        if t is not None and t.dtype != torch.float32:
            return f"{name} is {str(t.dtype).removeprefix('torch.')}; the C kernel takes float32 only"
    for name in ("k_cache", "v_cache"):
        if call[name].stride(-1) != 1:
            return f"{name}'s last dim is strided ({call[name].stride(-1)}); the C kernel needs it contiguous"
    for name in ("block_table", "seq_lens"):
        if call[name].is_floating_point() or call[name].is_complex():
            return f"{name} must hold integers"
    return None


def paged_attn_decode_c(q, k_cache, v_cache, block_table, seq_lens, scale=None, sinks=None, window=None):
    lib, reason = library()
    if lib is None:
        raise RuntimeError(reason)
    n, h, d = q.shape
    num_pages, page, hkv, dv = *k_cache.shape[:3], v_cache.shape[-1]
    q = q.contiguous()
    table = block_table.to(torch.int32).contiguous()  # no copy when it already is
    lens = seq_lens.to(torch.int32).contiguous()
    sinks = None if sinks is None else sinks.contiguous()
    o = q.new_empty(n, h, dv)
    status = lib.paged_attn_decode_f32(
        q.data_ptr(), k_cache.data_ptr(), v_cache.data_ptr(), table.data_ptr(), lens.data_ptr(),
        None if sinks is None else sinks.data_ptr(), o.data_ptr(),
        n, h, hkv, d, dv, page, num_pages, table.shape[1], *k_cache.stride()[:3], *v_cache.stride()[:3],
        0 if window is None else window, default_scale(scale, d), torch.get_num_threads(),
    )  # fmt: skip
    if status:
        raise ValueError(f"{PAGED} (backend c): {ERRORS.get(status, f'error {status}')}")
    return o  # [N, H, Dv]


register_solution(
    PAGED,
    "c",
    paged_attn_decode_c,
    language="c",
    target_hardware=["cpu"],
    dependencies=["torch", "gcc (OpenMP)"],
    dtypes=(torch.float32,),
    available=available,
    supports=supports,
    description="C + OpenMP, online softmax through the block table in place",
)
