"""`attnlab bench crossover`: where each attention family becomes cheaper than full attention.

Models of one width and depth (random weights: speed does not depend on them), one per family:
full, MLA, SWA, lightning, and the published hybrids (MiniMax-01 7:1 lightning/full, Qwen3-Next
3:1, Gemma 3 5:1 SWA/full; at a depth the ratio does not divide, a global layer closes each group
of ratio+1 layers and the layout string is reported). At context lengths doubling from 128:

- prefill: one request's whole prompt in one engine step (time to first token), and tokens/s;
- end-to-end: the same request's prefill + `new_tokens` decode tokens;
- decode: per-token step latency at batch 1 and at a larger batch through the engine, with the
  context already in the cache (placed by the allocator, not prefilled: the step reads the same
  pages either way, and a 64K-token prefill of full attention takes minutes on a CPU);
- memory: cache bytes per sequence from the engine's allocator (checked against
  `model.state_bytes(T)`), and the most sequences that fit in a fixed budget.

Each decode point is a median over timed steps after warm-up steps; each prefill point a median
over repeats; spreads are kept. A point that does not fit in memory is recorded as "oom", one past
the time budget as "skipped", and the run goes on. The roofline beside each point: bytes the
decode step must read (weights + cache) over the measured copy bandwidth, or FLOPs over the
measured matmul rate, whichever is slower.
"""

from __future__ import annotations

import json
import math
import platform
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm

from ..archs import AttnLabForCausalLM
from ..quant import weight_bytes
from .bench import copy_bandwidth, matmul_rate, random_model, sync
from .cache_manager import PAGED, CacheManager
from .config import EngineConfig, device_memory
from .engine import LLMEngine
from .flops import step_flops
from .request import Status
from .sampling import SamplingParams

# family -> (local letter, ratio of local to global layers); ratio None: every layer is `local`.
FAMILIES: dict[str, tuple[str, int | None]] = {
    "full": ("F", None),
    "mla": ("M", None),
    "swa": ("S", None),
    "lightning": ("L", None),
    "minimax-7to1": ("L", 7),
    "qwen3next-3to1": ("L", 3),
    "gemma3-5to1": ("S", 5),
}


@dataclass
class CrossoverOptions:
    out: Path
    families: list[str] = field(default_factory=lambda: list(FAMILIES))
    lengths: list[int] = field(default_factory=lambda: [128 << i for i in range(10)])
    batch: int = 16  # the larger decode batch (batch 1 is always measured)
    device: str = "cpu"
    hidden: int = 256
    layers: int = 8
    heads: int = 4
    window: int = 512
    new_tokens: int = 32  # decode tokens of the end-to-end request
    decode_steps: int = 12  # timed decode steps per point (after 3 warm-up steps)
    repeats: int = 3  # prefill / end-to-end repeats
    memory_budget: int = 1 << 30  # for "sequences that fit"
    max_cache_bytes: int | None = None  # the most a point may allocate; default: half the device memory
    max_point_seconds: float = 60.0  # a point predicted to take longer is skipped (longer lengths too)
    seed: int = 0
    # Saved models to measure instead of the random-weight families: name -> model folder (their
    # own width, depth and layout; a model named "full" is the reference). `attnlab study` passes
    # the variants it trained.
    models: dict[str, str] = field(default_factory=dict)
    deadline_s: float | None = None  # seconds from the start; points after it are "skipped"

    def __post_init__(self) -> None:
        if self.models:
            self.families = list(self.models)


def layout(family: str, depth: int) -> str:
    local, ratio = FAMILIES[family]
    if ratio is None:
        return local * depth
    return "".join("F" if (i + 1) % (ratio + 1) == 0 else local for i in range(depth))


def max_positions(opts: CrossoverOptions) -> int:
    return max(opts.lengths) + opts.new_tokens + opts.decode_steps + 64


def layout_of(model: AttnLabForCausalLM) -> str:
    """The layer layout as letters (e.g. LLLLLLLF); a spec with no default letter shows as ?."""
    letters = {"full": "F", "mla": "M", "lightning": "L", "swa": "S", "intra": "I"}
    return "".join(letters.get(m.spec.type, "?") for m in model.mixers())


def build_model(family: str, opts: CrossoverOptions) -> AttnLabForCausalLM:
    if opts.models:
        model = AttnLabForCausalLM.from_pretrained(
            opts.models[family], max_position_embeddings=max_positions(opts)
        )
        return model.to(opts.device).eval()
    return random_model(
        layout(family, opts.layers), hidden=opts.hidden, depth=opts.layers, heads=opts.heads,
        max_positions=max_positions(opts), seed=opts.seed,
        mixers={"S": {"type": "swa", "window": opts.window}}, device=opts.device,
    )  # fmt: skip


# --- measurements ---------------------------------------------------------------------------------
def seat_with_context(engine: LLMEngine, length: int, params: SamplingParams, request_id: str) -> None:
    """Admit a request whose first `length - 1` prompt tokens are already in the cache (blocks and
    slot allocated, values left as they are): its next step is a decode step at context `length`."""
    engine.add_request([1] * length, params, request_id=request_id)
    sched, cache = engine.scheduler, engine.cache
    req = sched.waiting.pop()
    cache.admit(request_id)
    done, chunk = 0, engine.config.max_num_batched_tokens
    while done < length - 1:  # as prefill chunks would: window blocks are freed behind the window
        n = min(chunk, length - 1 - done)
        if not cache.can_extend(request_id, done, n):
            cache.free(request_id)
            raise MemoryError(f"{length} tokens do not fit in the engine's cache")
        cache.extend(request_id, done, n)
        done += n
        cache.trim(request_id, done)
    req.num_computed = length - 1
    req.status = Status.RUNNING
    sched.running.append(req)


def _probe(
    model, budget: int, seqs: int, max_len: int, chunk: int, block_size: int = 16
) -> CacheManager | None:
    """The engine's allocator for this budget, on the meta device (sizes only, no memory)."""
    specs = [m.cache_spec() for m in model.mixers()]
    config = EngineConfig(
        cache_memory=budget, max_num_seqs=seqs, max_num_batched_tokens=chunk, max_model_len=max_len,
        block_size=block_size,
    )  # fmt: skip
    try:
        return CacheManager(specs, config, model.dtype, "meta", max_len)
    except ValueError:
        return None


def _fits(cache: CacheManager | None, seqs: int, length: int) -> bool:
    if cache is None or cache.max_seqs < seqs:
        return False
    return PAGED not in cache.pools or cache.pools[PAGED].capacity >= seqs * math.ceil(
        length / cache.block_size
    )


def cache_budget(model, seqs: int, max_len: int, chunk: int, block_size: int = 16) -> int:
    """The smallest budget (to 1%) in which the allocator holds `seqs` sequences of `max_len`."""

    def fits(budget: int) -> bool:
        return _fits(_probe(model, budget, seqs, max_len, chunk, block_size), seqs, max_len)

    lo, hi = 1 << 16, 1 << 20
    while not fits(hi):
        lo, hi = hi, hi * 2
    while hi - lo > hi // 100:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if fits(mid) else (mid, hi)
    return hi


def seqs_in_budget(model, opts: CrossoverOptions, length: int, chunk: int = 2048) -> int:
    """The most sequences of `length` tokens the engine's allocator fits in `memory_budget` (with
    the engine's default prefill chunk reserved, as when serving)."""

    def fits(n: int) -> bool:
        return _fits(_probe(model, opts.memory_budget, n, length, chunk), n, length)

    if not fits(1):
        return 0
    lo, hi = 1, 2
    while fits(hi):
        lo, hi = hi, hi * 2
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if fits(mid) else (lo, mid)
    return lo


def engine_for(model, opts: CrossoverOptions, seqs: int, length: int, tokens_per_step: int) -> LLMEngine:
    """An engine whose budget holds `seqs` sequences of `length` (+ the decode tokens), or MemoryError."""
    max_len = length + opts.new_tokens + opts.decode_steps + 8
    chunk = max(tokens_per_step, seqs)
    need = cache_budget(model, seqs, max_len, chunk)
    cap = opts.max_cache_bytes or device_memory(torch.device(opts.device)) // 2
    if need > cap:
        raise MemoryError(f"needs {need} bytes of cache, more than the cap of {cap}")
    config = EngineConfig(
        cache_memory=need, max_num_seqs=seqs, max_num_batched_tokens=chunk, max_model_len=max_len
    )
    try:
        return LLMEngine(model, None, config)
    except (ValueError, RuntimeError) as e:  # allocation failed
        raise MemoryError(str(e)) from e


def decode_latency(model, opts: CrossoverOptions, length: int, batch: int) -> dict:
    """Seconds per decode step of `batch` sequences at context `length`, and cache bytes held."""
    warmup = 3
    engine = engine_for(model, opts, batch, length, batch)
    params = SamplingParams(max_tokens=warmup + opts.decode_steps + 1, ignore_eos=True)
    for i in range(batch):
        seat_with_context(engine, length, params, f"r{i}")
    held = engine.cache.request_bytes("r0")
    times = []
    for step in range(warmup + opts.decode_steps):
        sync(opts.device)
        t0 = time.perf_counter()
        outs = engine.step()
        sync(opts.device)
        if step >= warmup:
            times.append(time.perf_counter() - t0)
        if len(outs) != batch:  # a sequence was preempted: the budget was short after all
            raise MemoryError(f"only {len(outs)} of {batch} sequences decoded in one step")
    return {"median": statistics.median(times), "min": min(times), "max": max(times), "cache_bytes": held}


def prefill_and_e2e(model, opts: CrossoverOptions, length: int) -> dict:
    """One request of `length` prompt tokens (prefilled in one step) then `new_tokens` decodes."""
    engine = engine_for(model, opts, 1, length, length)
    gen = torch.Generator().manual_seed(opts.seed)
    prompt = torch.randint(1, model.config.vocab_size, (length,), generator=gen).tolist()
    params = SamplingParams(max_tokens=opts.new_tokens, ignore_eos=True)
    prefill, e2e = [], []
    for _ in range(opts.repeats):
        engine.add_request(prompt, params)
        while engine.has_unfinished():
            for out in engine.step():
                if out.finished:
                    prefill.append(out.metrics.ttft)
                    e2e.append(out.metrics.e2e)
    return {
        "prefill_s": statistics.median(prefill), "prefill_min": min(prefill), "prefill_max": max(prefill),
        "e2e_s": statistics.median(e2e), "e2e_min": min(e2e), "e2e_max": max(e2e),
    }  # fmt: skip


# --- rooflines ------------------------------------------------------------------------------------
def machine_rates(device: str, hidden: int) -> dict:
    return {
        "memory_bandwidth_bytes_per_s": copy_bandwidth(device),
        "matmul_flops_per_s": matmul_rate(2048, hidden, 4 * hidden, device=device),
    }


def roofline(model, rates: dict, context: int, batch: int, tokens: int) -> float:
    """Least seconds for a step of `batch` sequences each adding `tokens` at `context`."""
    read = weight_bytes(model) + batch * model.state_bytes(context)
    flops = batch * step_flops(model, context, tokens)
    return max(read / rates["memory_bandwidth_bytes_per_s"], flops / rates["matmul_flops_per_s"])


# --- the run --------------------------------------------------------------------------------------
def run(opts: CrossoverOptions, progress: bool = True) -> dict:
    from .crossover_report import write_outputs

    Path(opts.out).mkdir(parents=True, exist_ok=True)  # a folder that cannot be written fails first
    rates = machine_rates(opts.device, opts.hidden)
    started = time.perf_counter()
    points = {}
    models = {family: build_model(family, opts) for family in opts.families}
    too_slow = {f: {"prefill": False, "decode_b1": False, "decode_bN": False} for f in opts.families}
    last = {f: {} for f in opts.families}
    bar = tqdm(
        total=len(opts.families) * len(opts.lengths), desc="crossover", unit="point", disable=not progress
    )
    # Length by length, so a deadline cuts the longest contexts of every family alike.
    for length in opts.lengths:
        for family, model in models.items():
            bar.set_postfix_str(f"{family} @ {length}")
            if opts.deadline_s is not None and time.perf_counter() - started > opts.deadline_s:
                too_slow[family] = dict.fromkeys(too_slow[family], True)
            p = {"family": family, "length": length, "state_bytes": model.state_bytes(length)}
            p["seqs_in_budget"] = seqs_in_budget(model, opts, length)
            slow, seen = too_slow[family], last[family]
            for key, batch in (("decode_b1", 1), ("decode_bN", opts.batch)):
                p[key] = _attempt(slow, key, seen, opts, decode_latency, model, opts, length, batch)
                if isinstance(p[key], dict):
                    p[key]["roofline_s"] = roofline(model, rates, length, batch, 1)
                    p.setdefault("cache_bytes_per_seq", p[key]["cache_bytes"])
            p["prefill"] = _attempt(slow, "prefill", seen, opts, prefill_and_e2e, model, opts, length)
            if isinstance(p["prefill"], dict):
                p["prefill"]["roofline_s"] = roofline(model, rates, length, 1, length)
                p["prefill"]["tokens_per_s"] = length / p["prefill"]["prefill_s"]
            points[family, length] = p
            bar.update(1)
    bar.close()
    points = [points[f, n] for f in opts.families for n in opts.lengths]
    results = {
        "options": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(opts).items()},
        "layouts": {f: layout_of(m) for f, m in models.items()},
        "machine": {
            "device": opts.device,
            "processor": platform.processor() or platform.machine(),
            "threads": torch.get_num_threads(),
            **rates,
        },  # fmt: skip
        "points": points,
    }
    write_outputs(results, opts.out)
    return results


def _attempt(too_slow: dict, key: str, last: dict, opts: CrossoverOptions, fn, *args) -> dict | str:
    """Run one measurement unless an earlier length was too slow; predict from the last time
    (prefill grows up to 4x per doubling, decode up to 2x) and skip past the time budget."""
    if too_slow[key]:
        return "skipped"
    growth = 4.5 if key == "prefill" else 2.2
    reps = opts.repeats if key == "prefill" else opts.decode_steps + 3
    if key in last and last[key] * growth * reps > opts.max_point_seconds:
        too_slow[key] = True
        return "skipped"
    try:
        t0 = time.perf_counter()
        out = fn(*args)
        last[key] = (time.perf_counter() - t0) / reps
        return out
    except (MemoryError, torch.OutOfMemoryError) as e:
        return f"oom: {e}"[:200]
    except Exception as e:  # recorded, and the run goes on
        return f"error: {type(e).__name__}: {e}"[:200]


def load(path: Path) -> dict:
    return json.loads(Path(path).read_text())
