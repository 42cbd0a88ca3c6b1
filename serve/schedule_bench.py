"""`attnlab bench schedule`: layered against chunked prefill under a Poisson stream of long prompts.

Models (random weights: speed does not depend on them) share one width and depth: `full` (every
layer softmax attention) and `hybrid` (3 lightning : 1 full, Qwen3-Next's ratio), each with an MoE
FFN (8 experts, top-2, Mixtral-style) and with its dense counterpart (one SwiGLU as wide as the
two active experts together: the same FLOPs per token). For each model and load, both schedules
serve the same arrival trace: `decoders` requests with short prompts decode for the whole run (the
running decodes a prefill must not stall), while long-prompt requests arrive with exponential
gaps. The load is the offered prefill utilisation: arrival rate x the time one prompt's prefill
takes alone (measured per model first), so loads mean the same for every model. Per point: TTFT
and end-to-end latency of the stream's requests (p50/p99), time between tokens of every decoding
sequence (p50/p99), and expert-weight bytes read per prompt token (expert_traffic.py).
"""

from __future__ import annotations

import json
import random
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm

from ..archs import AttnLabConfig, AttnLabForCausalLM
from ..common import check_subset, human_bytes
from ..kernels import kernel_record
from .bench import environment, percentile
from .config import SCHEDULES, EngineConfig
from .engine import LLMEngine
from .expert_traffic import ExpertTraffic
from .sampling import SamplingParams

VOCAB = 256
LAYOUTS = {"full": "F", "hybrid": "LLLF"}  # hybrid: 3 lightning : 1 full
MODELS = [f"{layout}-{ffn}" for layout in LAYOUTS for ffn in ("moe", "dense")]
MAX_LEN = 1 << 16  # positions: the decoders run as long as a point lasts


@dataclass
class ScheduleBenchOptions:
    out: Path = Path("runs/bench-schedule")
    models: list[str] = field(default_factory=lambda: list(MODELS))
    schedules: list[str] = field(default_factory=lambda: list(SCHEDULES))
    loads: list[float] = field(default_factory=lambda: [0.25, 0.5, 0.75])
    requests: int = 12  # long-prompt requests per point
    prompt_len: int = 1024  # each drawn from [prompt_len / 2, prompt_len]
    new_tokens: int = 16
    decoders: int = 4  # short requests decoding through the whole point
    token_budget: int = 256  # max_num_batched_tokens: chunked's chunk; bounds layered's groups too
    layer_groups: int | None = None
    hidden: int = 256
    layers: int = 8
    heads: int = 4
    experts: int = 8
    top_k: int = 2
    expert_size: int = 512  # each expert's intermediate size; dense: top_k x this
    cache_memory: str = "1GiB"
    threads: int | None = 1
    seed: int = 0

    def check(self) -> None:
        """Clear errors naming the flag and what it allows (the CLI's types check each alone)."""
        check_subset(self.models, MODELS, "--models")
        check_subset(self.schedules, SCHEDULES, "--schedules")
        if not self.loads or not all(0 < x < float("inf") for x in self.loads):
            raise ValueError(f"--loads {self.loads}: expected positive numbers (e.g. 0.25,0.5,0.75)")
        if self.layer_groups is not None and self.layer_groups > self.layers:
            raise ValueError(f"--layer-groups {self.layer_groups}: at most --layers {self.layers}")
        if not 1 <= self.top_k <= self.experts:
            raise ValueError(f"--top-k {self.top_k}: must be in 1..--experts ({self.experts})")
        if self.decoders < 0:
            raise ValueError(f"--decoders {self.decoders}: must be 0 or more")
        if self.prompt_len < 2:
            raise ValueError(f"--prompt-len {self.prompt_len}: must be at least 2")


def build_model(name: str, opts: ScheduleBenchOptions) -> AttnLabForCausalLM:
    layout, ffn = name.rsplit("-", 1)
    torch.manual_seed(opts.seed)
    moe = ffn == "moe"
    cfg = AttnLabConfig(
        vocab_size=VOCAB, hidden_size=opts.hidden, num_hidden_layers=opts.layers,
        num_attention_heads=opts.heads, num_key_value_heads=opts.heads, layers=LAYOUTS[layout],
        ffn=ffn, num_experts=opts.experts, num_experts_per_tok=opts.top_k,
        intermediate_size=opts.expert_size if moe else opts.top_k * opts.expert_size,
        max_position_embeddings=MAX_LEN,
    )  # fmt: skip
    return AttnLabForCausalLM(cfg).eval()


def engine_for(model, schedule: str, opts: ScheduleBenchOptions) -> LLMEngine:
    config = EngineConfig(
        cache_memory=opts.cache_memory, max_num_batched_tokens=opts.token_budget, schedule=schedule,
        layer_groups=opts.layer_groups if schedule == "layered" else None,
        max_num_seqs=opts.decoders + opts.requests,
    )  # fmt: skip
    return LLMEngine(model, None, config)


@dataclass
class Trace:
    """One point's arrivals: (seconds after the start, prompt) for the stream; decoders' prompts."""

    arrivals: list[tuple[float, list[int]]]
    decoder_prompts: list[list[int]]


def make_trace(opts: ScheduleBenchOptions, rate: float, seed: int) -> Trace:
    rng = random.Random(seed)
    t, arrivals = 0.0, []
    for _ in range(opts.requests):
        t += rng.expovariate(rate)
        n = rng.randint(opts.prompt_len // 2, opts.prompt_len)
        arrivals.append((t, [rng.randrange(1, VOCAB) for _ in range(n)]))
    decoders = [[rng.randrange(1, VOCAB) for _ in range(32)] for _ in range(opts.decoders)]
    return Trace(arrivals, decoders)


def prefill_seconds(model, opts: ScheduleBenchOptions) -> float:
    """Median of three timings of one mean-length prompt's prefill alone in the engine (the first,
    cold one is the slowest and drops out)."""
    prompt = [7] * (3 * opts.prompt_len // 4)
    times = []
    for _ in range(3):
        engine = engine_for(model, "chunked", opts)
        engine.add_request(prompt, SamplingParams(max_tokens=1, ignore_eos=True))
        t0 = time.perf_counter()
        while engine.has_unfinished():
            engine.step()
        times.append(time.perf_counter() - t0)
    return sorted(times)[1]


def serve_trace(engine: LLMEngine, trace: Trace, opts: ScheduleBenchOptions) -> dict:
    """Decoders first (until each decodes), then the stream in real time; -> the point's figures."""
    forever = SamplingParams(max_tokens=MAX_LEN - 64, ignore_eos=True)
    decoders = [
        engine.add_request(p, forever, request_id=f"decoder-{i}") for i, p in enumerate(trace.decoder_prompts)
    ]
    while any(not engine.requests[d].output_token_ids for d in decoders):
        engine.step()
    params = SamplingParams(max_tokens=opts.new_tokens, ignore_eos=True)
    start = time.perf_counter()
    pending = [(start + t, p) for t, p in trace.arrivals]
    outs, steps = [], 0
    mark = {
        d: len(engine.requests[d].metrics.token_times) for d in decoders
    }  # decoder tokens before the stream
    with ExpertTraffic(engine) as traffic:
        while pending or any(not r.startswith("decoder-") for r in engine.requests):
            now = time.perf_counter()
            while pending and pending[0][0] <= now:
                at, p = pending.pop(0)
                engine.add_request(p, params, arrival_time=at)
            outs += [o for o in engine.step() if o.finished]
            steps += 1
    wall = time.perf_counter() - start
    decoder_gaps = []
    for d in decoders:
        times = engine.requests[d].metrics.token_times[mark[d] :]
        decoder_gaps += [b - a for a, b in zip(times, times[1:], strict=False)]
        engine.abort(d)
    ttft = [o.metrics.ttft for o in outs]
    e2e = [o.metrics.e2e for o in outs]
    tbt = decoder_gaps + [g for o in outs for g in o.metrics.time_between_tokens]
    return {
        "requests": len(outs),
        "steps": steps,
        "wall_s": wall,
        "ttft_p50_s": percentile(ttft, 50),
        "ttft_p99_s": percentile(ttft, 99),
        "tbt_p50_s": percentile(tbt, 50),
        "tbt_p99_s": percentile(tbt, 99),
        "decoder_tbt_max_s": max(decoder_gaps, default=None),
        "e2e_p50_s": percentile(e2e, 50),
        "e2e_p99_s": percentile(e2e, 99),
        "prompt_tokens": traffic.prefill_tokens,
        "expert_bytes_per_prompt_token": traffic.prefill_bytes / traffic.prefill_tokens
        if traffic.prefill_tokens
        else None,
        "expert_bytes_per_step": traffic.bytes / steps if steps else None,
    }


def run(opts: ScheduleBenchOptions, progress: bool = True) -> dict:
    from .schedule_bench_report import markdown, plot

    if opts.threads:
        torch.set_num_threads(opts.threads)
    out = Path(opts.out)
    out.mkdir(parents=True, exist_ok=True)
    results = {
        "options": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(opts).items()},
        "environment": environment(),
        "kernels": kernel_record(),
        "points": [],
        "models": {},
    }
    total = len(opts.models) * len(opts.loads) * len(opts.schedules)
    bar = tqdm(total=total, desc="bench schedule", unit="point", disable=not progress)
    for m, name in enumerate(opts.models):
        model = build_model(name, opts)
        single = prefill_seconds(model, opts)
        weights = sum(p.numel() * p.element_size() for p in model.parameters())
        results["models"][name] = {"prefill_alone_s": single, "weight_bytes": weights}
        for i, load in enumerate(opts.loads):
            rate = load / single
            trace = make_trace(opts, rate, seed=opts.seed * 1000 + i)
            for schedule in opts.schedules:
                point = serve_trace(engine_for(model, schedule, opts), trace, opts)
                point.update(model=name, schedule=schedule, load=load, rate_requests_per_s=rate)
                results["points"].append(point)
                bar.update(1)
                bar.set_postfix_str(f"{name} load {load} {schedule}: TTFT p50 {point['ttft_p50_s']:.2f}s")
        (out / "results.json").write_text(json.dumps(results, indent=1))  # after each model: partial results
        if progress and m == 0:
            print(
                f"  {name}: weights {human_bytes(weights)}, one prefill alone {single:.2f}s", file=sys.stderr
            )
    bar.close()
    (out / "results.json").write_text(json.dumps(results, indent=1))
    (out / "schedule.md").write_text(markdown(results))
    plot(results, out / "schedule.png")
    return results


def command(args) -> int:
    """`attnlab bench schedule` (registered in serve/cli.py) -> exit status; 2 for a bad flag value."""
    opts = ScheduleBenchOptions(
        out=args.out, models=args.models, schedules=args.schedules, loads=args.loads, requests=args.requests,
        prompt_len=args.prompt_len, new_tokens=args.new_tokens, decoders=args.decoders,
        token_budget=args.token_budget, layer_groups=args.layer_groups, hidden=args.hidden, layers=args.layers,
        heads=args.heads, experts=args.experts, top_k=args.top_k, expert_size=args.expert_size,
        threads=args.threads, seed=args.seed,
    )  # fmt: skip
    try:
        opts.check()
    except ValueError as e:
        print(f"attnlab bench schedule: error: {e}", file=sys.stderr)
        return 2
    Path(opts.out).mkdir(parents=True, exist_ok=True)  # a folder that cannot be written fails first
    print(f"attnlab bench schedule: {', '.join(opts.models)} at loads {opts.loads}, "
          f"{', '.join(opts.schedules)} -> {opts.out}", flush=True)  # fmt: skip
    run(opts)
    print((Path(opts.out) / "schedule.md").read_text())
    return 0
