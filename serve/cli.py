"""`attnlab serve` (the OpenAI-compatible server) and `attnlab bench serve` (serve/bench.py,
serve/http_bench.py) on the command line."""

from __future__ import annotations

import argparse
import math
import os
import sys
from pathlib import Path


def _list(kind: str, allowed=None, cast=str):
    def parse(text: str) -> list:
        try:
            items = [cast(s.strip()) for s in text.split(",") if s.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r}: expected comma-separated {kind}") from None
        bad = [i for i in items if (allowed is not None and i not in allowed) or (cast is int and i <= 0)]
        if bad or not items:
            hint = f"; allowed: {', '.join(allowed)}" if allowed else ""
            raise argparse.ArgumentTypeError(f"invalid {kind} {bad or text!r}{hint}")
        return items

    return parse


def register(sub) -> None:
    from attnlab.common import positive_int
    from attnlab.kernels import add_kernels_option

    from ..kernels import command_group
    from .bench import FAMILIES

    bench = command_group(sub, "bench", "benchmarks")
    p = bench.add_parser(
        "serve", help="the serving engine against HF generate(): tok/s, TTFT, Poisson stream"
    )
    p.add_argument(
        "--out", type=Path, default=Path("runs/bench-serve"), help="run directory (JSON + markdown)"
    )
    p.add_argument("--families", type=_list("families", list(FAMILIES)), default=list(FAMILIES))
    p.add_argument("--batches", type=_list("batch sizes", cast=int), default=[1, 8, 32])
    p.add_argument("--prompt-len", type=positive_int, default=512)
    p.add_argument("--new-tokens", type=positive_int, default=128)
    p.add_argument(
        "--cache-memory", default="2GiB", help="engine cache budget (bytes, '2GiB', or a fraction)"
    )
    p.add_argument("--poisson-rate", type=float, default=2.0, help="arrival rate of the stream, requests/s")
    p.add_argument("--poisson-requests", type=positive_int, default=24)
    p.add_argument(
        "--decode-contexts", type=_list("context lengths", cast=int), default=[512, 4096, 32768],
        help="contexts for the per-token decode cost (full attention stops at 4096)",
    )  # fmt: skip
    p.add_argument("--no-hf", action="store_true", help="skip the generate() peers")
    p.add_argument("--repeats", type=positive_int, default=3, help="rounds of engine and peers taking turns")
    p.add_argument(
        "--threads", type=positive_int, default=None, help="torch CPU threads (default: every core)"
    )
    p.add_argument("--seed", type=int, default=0)
    http = p.add_argument_group(
        "over HTTP", "with --url (any OpenAI-compatible server) or --offline (the in-process engine on "
        "the same model): --batches are concurrent streaming clients; results accumulate per --label",
    )  # fmt: skip
    http.add_argument("--url", default=None, help="base URL of a running server, e.g. http://127.0.0.1:8000")
    http.add_argument("--offline", type=Path, default=None, metavar="PATH",
                      help="run the HTTP workloads through the offline engine on this model (baseline)")  # fmt: skip
    http.add_argument("--label", default=None, help="name of this server in the table (default: attnlab)")
    http.add_argument("--api-key", default=None)
    http.add_argument("--model", default=None, help="model id to request (default: the server's first)")
    http.add_argument("--rounds", type=positive_int, default=2, help="requests per client per workload")
    http.add_argument("--vocab", type=positive_int, default=256, help="prompt ids are drawn from [1, vocab)")
    http.add_argument("--write-model", type=Path, default=None, metavar="DIR",
                      help="only write the benchmark's full-attention model (first of --families) to DIR, "
                      "with its byte tokenizer, to serve it (and `attnlab convert` it for a peer)")  # fmt: skip
    add_kernels_option(p)
    p.set_defaults(func=cmd_bench_serve)
    register_crossover(bench)
    register_state_precision(bench)
    register_prefix(bench)
    register_spec(bench)
    register_schedule(bench)
    register_quant(bench)
    register_serve(sub)


def _lengths(text: str) -> list[int]:
    """'128:65536' (doubling) or '128,512,4096'."""
    try:
        if ":" in text:
            lo, hi = (int(x) for x in text.split(":"))
            if lo <= 0 or hi < lo:
                raise ValueError
            return [lo << i for i in range(int(math.log2(hi // lo)) + 1)]
        values = [int(x) for x in text.split(",") if x.strip()]
        if not values or min(values) <= 0:
            raise ValueError
        return sorted(set(values))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r}: expected LO:HI (doubling from LO to at most HI) or a comma list of positive lengths"
        ) from None


def register_crossover(bench) -> None:
    from attnlab.common import positive_int
    from attnlab.kernels import add_kernels_option

    from .crossover import FAMILIES

    p = bench.add_parser("crossover", help="where each family becomes cheaper than full attention")
    p.add_argument("--out", type=Path, default=Path("runs/crossover"))
    p.add_argument(
        "--device", default=None, choices=["cpu", "cuda"], help="default: cuda when there is one, else cpu"
    )
    p.add_argument(
        "--lengths", type=_lengths, default=_lengths("128:65536"), help="LO:HI doubling, or a list"
    )
    p.add_argument("--families", type=_list("families", list(FAMILIES)), default=list(FAMILIES))
    p.add_argument("--batch", type=_list("batch sizes", cast=int), default=[1, 16],
                   help="decode batch sizes: 1 and the larger one")  # fmt: skip
    p.add_argument("--hidden", type=positive_int, default=256)
    p.add_argument("--layers", type=positive_int, default=8)
    p.add_argument("--heads", type=positive_int, default=4)
    p.add_argument("--window", type=positive_int, default=512, help="SWA window")
    p.add_argument(
        "--new-tokens", type=positive_int, default=32, help="decode tokens of the end-to-end request"
    )
    p.add_argument("--decode-steps", type=positive_int, default=12, help="timed decode steps per point")
    p.add_argument("--repeats", type=positive_int, default=3, help="prefill / end-to-end repeats")
    p.add_argument("--memory-budget", default="1GiB", help="budget for 'sequences that fit'")
    p.add_argument("--max-point-seconds", type=float, default=60.0,
                   help="skip a measurement (and longer lengths) predicted to take longer")  # fmt: skip
    p.add_argument("--models", type=_named_models, default={}, metavar="NAME=PATH,...",
                   help="saved models to measure instead of --families (one named full is the reference)")  # fmt: skip
    p.add_argument("--threads", type=positive_int, default=None)
    add_kernels_option(p)
    p.set_defaults(func=cmd_bench_crossover)


def _named_models(text: str) -> dict[str, str]:
    """`full=runs/a/hf,lightning=runs/b/hf` -> {name: folder}; each folder must hold a config.json."""
    models = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, path = part.partition("=")
        if not sep or not name or not path:
            raise argparse.ArgumentTypeError(f"{part!r}: expected NAME=PATH (e.g. full=runs/full/hf)")
        if not (Path(path) / "config.json").is_file():
            raise argparse.ArgumentTypeError(f"{name}={path}: no config.json there (a saved model folder?)")
        models[name] = path
    if not models:
        raise argparse.ArgumentTypeError("expected at least one NAME=PATH")
    return models


def cmd_bench_crossover(args) -> int:
    import torch

    from .config import parse_memory
    from .crossover import CrossoverOptions, run

    args.device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if args.device == "cuda" and not torch.cuda.is_available():
        print(
            "attnlab bench crossover: error: --device cuda but no CUDA device is available", file=sys.stderr
        )
        return 2
    batch = max(args.batch)
    try:
        budget = parse_memory(args.memory_budget, torch.device(args.device))
    except ValueError as e:
        print(f"attnlab bench crossover: error: --memory-budget: {e}", file=sys.stderr)
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    opts = CrossoverOptions(
        out=args.out, families=args.families, lengths=args.lengths, batch=batch, device=args.device,
        hidden=args.hidden, layers=args.layers, heads=args.heads, window=args.window,
        new_tokens=args.new_tokens, decode_steps=args.decode_steps, repeats=args.repeats,
        memory_budget=budget, max_point_seconds=args.max_point_seconds, models=args.models,
    )  # fmt: skip
    print(f"attnlab bench crossover: {', '.join(opts.families)} at {opts.lengths[0]}..{opts.lengths[-1]} "
          f"on {opts.device} -> {opts.out}", flush=True)  # fmt: skip
    try:
        run(opts)
    except ValueError as e:  # e.g. a pattern the depth does not divide
        print(f"attnlab bench crossover: error: {e}", file=sys.stderr)
        return 2
    print((opts.out / "crossover.md").read_text())
    return 0


def register_state_precision(bench) -> None:
    from attnlab.common import positive_int
    from attnlab.kernels import add_kernels_option

    from .state_precision import FORMATS, PrecisionOptions

    d = PrecisionOptions()
    p = bench.add_parser(
        "state-precision", help="error growth of bf16/fp16/int8 lightning state storage over decoding"
    )
    p.add_argument("--out", type=Path, default=d.out)
    p.add_argument("--models", type=Path, nargs="*", default=[], metavar="PATH",
                   help="lightning-bearing LMs (run dirs or model folders); default: train two on the local corpus")  # fmt: skip
    p.add_argument("--mqar-models", type=Path, nargs="*", default=[], metavar="PATH",
                   help="MQAR-trained models for the eval accuracy; default: train configs/train/khop_mqar.yaml (FL)")  # fmt: skip
    formats = [f for f in FORMATS if f != "fp32"]
    p.add_argument("--formats", type=_list("formats", formats), default=formats,
                   help=f"storage formats against fp32 ('+sr': stochastic rounding); default: all of {','.join(formats)}")  # fmt: skip
    p.add_argument("--steps", type=positive_int, default=d.steps, help="decode steps per sequence")
    p.add_argument("--sequences", type=positive_int, default=d.sequences, help="text streams per model")
    p.add_argument("--prefill", type=positive_int, default=d.prefill)
    p.add_argument("--mqar-lengths", type=_list("lengths", cast=int), default=d.mqar_lengths)
    p.add_argument("--mqar-hops", type=_list("hops", cast=int), default=d.mqar_hops)
    p.add_argument("--mqar-samples", type=positive_int, default=d.mqar_samples)
    p.add_argument("--train-steps", type=positive_int, default=d.train_steps,
                   help="steps of the default LMs when --models is not given")  # fmt: skip
    p.add_argument("--jobs", type=positive_int, default=d.jobs,
                   help="models studied at once, one process each (the cores are split between them)")  # fmt: skip
    add_kernels_option(p)
    p.set_defaults(func=cmd_bench_state_precision)


def cmd_bench_state_precision(args) -> int:
    from .state_precision import PrecisionOptions, run

    opts = PrecisionOptions(
        out=args.out, models=args.models, mqar_models=args.mqar_models, formats=args.formats,
        steps=args.steps, sequences=args.sequences, prefill=args.prefill, mqar_lengths=args.mqar_lengths,
        mqar_hops=args.mqar_hops, mqar_samples=args.mqar_samples, train_steps=args.train_steps, jobs=args.jobs,
    )  # fmt: skip
    Path(opts.out).mkdir(parents=True, exist_ok=True)  # an output folder that cannot be written fails first
    print(f"attnlab bench state-precision: {', '.join(opts.formats)} over {opts.steps} steps -> {opts.out}",
          flush=True)  # fmt: skip
    try:
        run(opts)
    except (ValueError, FileNotFoundError) as e:
        print(f"attnlab bench state-precision: error: {e}", file=sys.stderr)
        return 2
    print((opts.out / "state_precision.md").read_text())
    return 0


def _turns(text: str) -> tuple[int, int]:
    """'4:8' (each conversation's turns drawn from 4..8) or '6' (every conversation 6 turns)."""
    try:
        lo, _, hi = text.partition(":")
        lo, hi = int(lo), int(hi or lo)
    except ValueError:
        lo = hi = 0
    if not 1 <= lo <= hi:
        raise argparse.ArgumentTypeError(
            f"{text!r}: expected LO:HI with 1 <= LO <= HI (e.g. 4:8), or one count"
        )
    return lo, hi


def register_prefix(bench) -> None:
    from attnlab.common import positive_int
    from attnlab.kernels import add_kernels_option

    from .crossover import FAMILIES
    from .prefix_bench import WORKLOADS, PrefixBenchOptions

    d = PrefixBenchOptions()
    p = bench.add_parser(
        "prefix",
        help="prefix caching per family: hit rate, TTFT, speedup on multi-turn chat and few-shot workloads",
        description="Prefix caching off / cost / lru / interval for each family on a multi-turn chat and a "
        "few-shot workload, under a cache budget where the cached prefixes do not all fit. The default run "
        "takes about 6 minutes on a 2-core CPU (1 thread).",
    )  # fmt: skip
    p.add_argument(
        "--out", type=Path, default=Path("runs/bench-prefix"), help="run directory (JSON + markdown)"
    )
    p.add_argument("--families", type=_list("families", list(FAMILIES)), default=d.families)
    p.add_argument("--workloads", type=_list("workloads", list(WORKLOADS)), default=d.workloads)
    chat = p.add_argument_group("multi-turn chat")
    chat.add_argument("--conversations", type=positive_int, default=d.conversations)
    chat.add_argument("--turns", type=_turns, default=d.turns, metavar="LO:HI",
                      help="turns per conversation, drawn from LO..HI (default 4:8)")  # fmt: skip
    chat.add_argument(
        "--system-len", type=positive_int, default=d.system_len, help="shared system prompt tokens"
    )
    chat.add_argument("--user-len", type=positive_int, default=d.user_len,
                      help="tokens of a user message (and of a few-shot question)")  # fmt: skip
    chat.add_argument("--new-tokens", type=positive_int, default=d.new_tokens,
                      help="output tokens of every request (and of a few-shot example's answer)")  # fmt: skip
    few = p.add_argument_group("few-shot")
    few.add_argument("--shots", type=positive_int, default=d.shots, help="examples in the shared prefix")
    few.add_argument("--few-shot-requests", type=positive_int, default=d.few_shot_requests)
    few.add_argument("--wave", type=positive_int, default=d.wave, help="few-shot requests submitted at once")
    eng = p.add_argument_group("engine")
    eng.add_argument("--cache-memory", default="auto",
                     help="cache budget: 'auto' (per family and workload: --cache-fraction of what caching "
                     "every prefix would take, at least the running batch), or bytes / '64MiB'")  # fmt: skip
    eng.add_argument(
        "--cache-fraction",
        type=float,
        default=d.cache_fraction,
        help="with --cache-memory auto: the share of the cached prefixes that fits (> 0)",
    )
    eng.add_argument(
        "--max-num-seqs", type=positive_int, default=d.max_num_seqs, help="requests running at once"
    )
    eng.add_argument("--block-size", type=positive_int, default=d.block_size)
    eng.add_argument("--interval", type=positive_int, default=None,
                     help="checkpoint spacing of the `interval` config, a multiple of --block-size "
                     "(default 4 blocks)")  # fmt: skip
    model = p.add_argument_group("models (random weights)")
    model.add_argument("--hidden", type=positive_int, default=d.hidden)
    model.add_argument("--layers", type=positive_int, default=d.layers)
    model.add_argument("--heads", type=positive_int, default=d.heads)
    model.add_argument("--window", type=positive_int, default=d.window, help="SWA window (swa, gemma3-5to1)")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--threads", type=positive_int, default=None,
                   help="torch CPU threads (default: every core but one; 2 threads on a busy 2-core machine "
                   "spin-wait and make times noisy)")  # fmt: skip
    add_kernels_option(p)
    p.set_defaults(func=cmd_bench_prefix)


def cmd_bench_prefix(args) -> int:
    import torch

    from .config import parse_memory
    from .prefix_bench import PrefixBenchOptions, run

    def fail(message: str) -> int:
        print(f"attnlab bench prefix: error: {message}", file=sys.stderr)
        return 2

    budget = None
    if args.cache_memory != "auto":
        try:
            budget = parse_memory(args.cache_memory, torch.device("cpu"))
        except ValueError as e:
            return fail(f"--cache-memory: {e}; or 'auto'")
    opts = PrefixBenchOptions(
        out=args.out, families=args.families, workloads=args.workloads, conversations=args.conversations,
        turns=args.turns, system_len=args.system_len, user_len=args.user_len, new_tokens=args.new_tokens,
        shots=args.shots, few_shot_requests=args.few_shot_requests, wave=args.wave, cache_memory=budget,
        cache_fraction=args.cache_fraction, max_num_seqs=args.max_num_seqs, block_size=args.block_size,
        interval=args.interval, hidden=args.hidden, layers=args.layers, heads=args.heads, window=args.window,
        seed=args.seed,
    )  # fmt: skip
    try:
        opts.check()
    except ValueError as e:
        return fail(str(e))
    torch.set_num_threads(args.threads or max(1, (os.cpu_count() or 2) - 1))
    Path(opts.out).mkdir(parents=True, exist_ok=True)  # an output folder that cannot be written fails first
    print(f"attnlab bench prefix: {', '.join(opts.families)} x {', '.join(opts.workloads)}, "
          f"{torch.get_num_threads()} threads -> {opts.out}", flush=True)  # fmt: skip
    try:
        run(opts)
    except ValueError as e:  # e.g. a budget too small for one sequence
        return fail(str(e))
    print((opts.out / "prefix.md").read_text())
    return 0


def register_spec(bench) -> None:
    from attnlab.common import positive_int
    from attnlab.kernels import add_kernels_option

    from .spec_bench import SpecOptions, command
    from .spec_models import FAMILIES
    from .spec_workloads import WORKLOADS

    d = SpecOptions()
    p = bench.add_parser(
        "spec", help="speculative decoding: acceptance and speedup of n-gram lookup and a draft model"
    )
    p.add_argument("--out", type=Path, default=d.out, help="run directory (results.json, spec.md, models/)")
    p.add_argument("--families", type=_list("families", list(FAMILIES)), default=d.families,
                   help="targets: full (FFFF), lightning (LLLL), hybrid (LLLF); drafts: 1 layer (F, L, L)")  # fmt: skip
    p.add_argument("--workloads", type=_list("workloads", list(WORKLOADS)), default=d.workloads,
                   help="code: held-out stdlib code; copy: the eval suite's copy task")  # fmt: skip
    p.add_argument("--batches", type=_list("batch sizes", cast=int), default=d.batches,
                   help="requests decoding together (each a divisor of --prompts)")  # fmt: skip
    p.add_argument("--k", type=positive_int, default=d.k, help="drafts per request and step")
    p.add_argument("--prompt-len", type=positive_int, default=d.prompt_len, help="prompt tokens (bytes)")
    p.add_argument("--new-tokens", type=positive_int, default=d.new_tokens, help="greedy tokens per request")
    p.add_argument("--prompts", type=positive_int, default=d.prompts, help="prompts per workload")
    p.add_argument("--repeats", type=positive_int, default=d.repeats, help="timed rounds (after a warm-up)")
    p.add_argument("--train-steps", type=positive_int, default=d.train.steps,
                   help="training steps of each model (models already trained are reused as they are)")  # fmt: skip
    p.add_argument("--hidden", type=positive_int, default=d.train.hidden, help="width of the trained models")
    p.add_argument("--models", type=Path, default=None, metavar="DIR",
                   help="folder of trained models to reuse, missing ones trained there (default: OUT/models)")  # fmt: skip
    p.add_argument("--threads", type=positive_int, default=d.threads,
                   help="torch CPU threads (default 1: on a busy 2-core machine 2 threads spin and run 10x slower)")  # fmt: skip
    p.add_argument("--jobs", type=positive_int, default=d.jobs, help="models trained at once")
    p.add_argument("--seed", type=int, default=d.seed, help="which prompts")
    add_kernels_option(p)
    p.set_defaults(func=command)


def register_schedule(bench) -> None:
    from attnlab.common import positive_int

    from .config import SCHEDULES
    from .schedule_bench import MODELS, ScheduleBenchOptions, command

    d = ScheduleBenchOptions()
    p = bench.add_parser(
        "schedule", help="layered vs chunked prefill: TTFT, time between tokens, expert bytes, MoE and dense",
        description="Chunked and layered prefill serve the same Poisson stream of long prompts next to running "
        "decodes, for full and 3:1 hybrid models with MoE and dense FFNs, at several loads. The default run "
        "takes about 10 minutes on a 2-core CPU (1 thread).",
    )  # fmt: skip
    p.add_argument("--out", type=Path, default=d.out, help="run directory (results.json, schedule.md/.png)")
    p.add_argument("--models", type=_list("models", MODELS), default=d.models,
                   help="full / hybrid (3 lightning : 1 full), each -moe or -dense")  # fmt: skip
    p.add_argument("--schedules", type=_list("schedules", list(SCHEDULES)), default=d.schedules)
    p.add_argument("--loads", type=_list("loads", cast=float), default=d.loads,
                   help="arrival rate x one prompt's prefill time alone (e.g. 0.25,0.5,0.75)")  # fmt: skip
    p.add_argument("--requests", type=positive_int, default=d.requests, help="long-prompt requests per point")
    p.add_argument("--prompt-len", type=positive_int, default=d.prompt_len,
                   help="longest prompt (each drawn from half of it to it)")  # fmt: skip
    p.add_argument("--new-tokens", type=positive_int, default=d.new_tokens)
    p.add_argument("--decoders", type=int, default=d.decoders, help="requests decoding through each point")
    p.add_argument("--token-budget", type=positive_int, default=d.token_budget,
                   help="max_num_batched_tokens: chunked's chunk; layered's groups keep prompt tokens x layers within it x all layers")  # fmt: skip
    p.add_argument("--layer-groups", type=positive_int, default=None, metavar="G", help="fix layered's G")
    m = p.add_argument_group("models (random weights)")
    for name in ("hidden", "layers", "heads", "experts"):
        m.add_argument(f"--{name}", type=positive_int, default=getattr(d, name))
    m.add_argument("--top-k", type=positive_int, default=d.top_k, help="experts per token")
    m.add_argument("--expert-size", type=positive_int, default=d.expert_size,
                   help="an expert's intermediate size (dense: top-k x it)")  # fmt: skip
    p.add_argument("--threads", type=positive_int, default=d.threads, help="torch CPU threads")
    p.add_argument("--seed", type=int, default=d.seed)
    p.set_defaults(func=command)


def register_quant(bench) -> None:
    from attnlab.common import positive_int

    from .quant_bench import QuantBenchOptions, command
    from .quant_bench_models import FAMILIES

    d = QuantBenchOptions()
    t, m, s = d.train, d.measure, d.speed
    p = bench.add_parser(
        "quant",
        help="INT4 weights per attention family: loss, k-hop recall, top heads, bytes, tok/s; PTQ vs QAT",
        description="Trains full, lightning (2 layers) and 7:1 hybrid (8 layers) models, d 64, on the "
        "k-hop MQAR curriculum, each plainly and with INT4 QAT from half-way, and compares fp32, bf16, "
        "INT4 PTQ and INT4 QAT: "
        "validation loss, chain accuracy by length x hops, whether the top retrieval / induction heads "
        "survive, weight bytes and decode tokens/s; plus a text LM for the loss. The default run takes "
        "about 23 minutes on a 2-core CPU (training ~21 of them; a rerun reuses the runs in OUT/models).",
    )
    p.add_argument(
        "--out", type=Path, default=d.out, help="run directory (results.json, quant.md/.png, models/, int4/)"
    )
    p.add_argument("--families", type=_list("families", list(FAMILIES)), default=d.families,
                   help="full (FF), lightning (LL), hybrid-7to1 (FLLLLLLL)")  # fmt: skip
    p.add_argument("--text", action=argparse.BooleanOptionalAction, default=t.text,
                   help="also a byte-level LM on the local corpus (configs/train/stdlib_lm.yaml)")  # fmt: skip
    tr = p.add_argument_group("training (runs in OUT/models are reused when finished with the same config)")
    tr.add_argument("--train-steps", type=positive_int, default=t.steps, help="steps of each MQAR run")
    tr.add_argument("--text-steps", type=positive_int, default=t.text_steps, help="steps of each text run")
    tr.add_argument("--qat-start", type=float, default=t.qat_start,
                    help="QAT twins: fake quant from this fraction of the steps on (0..1)")  # fmt: skip
    tr.add_argument("--hidden", type=positive_int, default=t.hidden, help="width of the MQAR models")
    tr.add_argument("--heads", type=positive_int, default=t.heads)
    tr.add_argument("--intermediate", type=positive_int, default=t.intermediate, help="FFN width")
    tr.add_argument("--val-examples", type=positive_int, default=t.val_examples,
                    help="held-out rows per MQAR data slice (the validation loss)")  # fmt: skip
    tr.add_argument("--jobs", type=positive_int, default=d.jobs,
                    help="runs trained (then families measured) at once, one process each")  # fmt: skip
    ev = p.add_argument_group("measurements")
    ev.add_argument("--lengths", type=_list("lengths", cast=int), default=m.lengths, help="MQAR eval lengths")
    ev.add_argument("--hops", type=_list("hops", cast=int), default=m.hops, help="MQAR eval hops")
    ev.add_argument("--samples", type=positive_int, default=m.samples, help="MQAR samples per (length, hops)")
    ev.add_argument("--probes", type=_list("probes"), default=m.probes,
                    help="head scores (attnlab probe's names); kv_retrieval: Wu et al.'s retrieval score on "
                    "MQAR-format prompts")  # fmt: skip
    ev.add_argument("--probe-lengths", type=positive_int, default=m.niah_lengths,
                    help="prompt lengths of the retrieval probes (x 5 depths x 2 needles)")  # fmt: skip
    ev.add_argument(
        "--top-k", type=positive_int, default=d.top_k, help="top heads whose survival is reported"
    )
    ev.add_argument("--min-head-score", type=float, default=d.min_head_score,
                    help="... of the heads scoring at least this in the fp32 model (0..1)")  # fmt: skip
    ev.add_argument(
        "--batch", type=positive_int, default=s.batch, help="decode speed: requests decoding together"
    )
    ev.add_argument("--prompt-len", type=positive_int, default=s.prompt_len)
    ev.add_argument("--new-tokens", type=positive_int, default=s.new_tokens)
    ev.add_argument("--repeats", type=positive_int, default=s.repeats, help="decode speed: timed rounds")
    p.add_argument("--threads", type=positive_int, default=d.threads,
                   help="torch threads of each worker and of the decode-speed runs")  # fmt: skip
    p.add_argument("--seed", type=int, default=m.seed, help="eval samples, probe prompts, decode prompts")
    p.set_defaults(func=command)


def add_prefix_caching_options(p) -> None:
    from attnlab.common import positive_int

    from .config import PREFIX_EVICTION

    g = p.add_argument_group("prefix caching (docs/prefix_caching.md)")
    g.add_argument("--enable-prefix-caching", action="store_true",
                   help="share cached prefixes' blocks and recurrent-state checkpoints between requests")  # fmt: skip
    g.add_argument("--prefix-eviction", choices=list(PREFIX_EVICTION), default="cost",
                   help="cost: recency + alpha x FLOPs saved per byte (Marconi); lru: least recently used")  # fmt: skip
    g.add_argument("--prefix-eviction-alpha", type=float, default=1.0, help="alpha of the cost policy (>= 0)")
    g.add_argument("--state-checkpoint-interval", type=positive_int, default=None, metavar="N",
                   help="store recurrent-state checkpoints every N tokens (a multiple of --block-size) "
                   "instead of where they pay")  # fmt: skip


def add_speculative_options(p) -> None:
    from attnlab.common import positive_int

    from .config import SPECULATIVE

    g = p.add_argument_group("speculative decoding (docs/speculative_decoding.md)")
    g.add_argument("--speculative", choices=list(SPECULATIVE), default=None,
                   help="propose tokens with a draft model or by n-gram prompt lookup; verify in one forward")  # fmt: skip
    g.add_argument("--num-speculative-tokens", type=positive_int, default=3, metavar="K",
                   help="drafts per decoding request and step")  # fmt: skip
    g.add_argument("--draft-model", default=None, metavar="PATH",
                   help="--speculative draft: a smaller attnlab model with the same tokenizer")  # fmt: skip
    g.add_argument(
        "--ngram-max", type=positive_int, default=4, help="--speculative ngram: longest n-gram to match"
    )
    g.add_argument("--ngram-min", type=positive_int, default=1, help="--speculative ngram: shortest n-gram")


def add_schedule_options(p) -> None:
    from attnlab.common import positive_int

    from .config import SCHEDULES

    g = p.add_argument_group("prefill scheduling (docs/layered_prefill.md)")
    g.add_argument("--schedule", choices=list(SCHEDULES), default="chunked",
                   help="chunked: prompts in token chunks mixed with decodes; layered: whole prompts, "
                   "one group of layers per step (Layered Prefill)")  # fmt: skip
    g.add_argument("--layer-groups", type=positive_int, default=None, metavar="G",
                   help="--schedule layered: layer groups (default: the fewest that keep a step's prompt tokens x "
                   "layers within --max-num-batched-tokens x all layers)")  # fmt: skip


def schedule_options(args) -> dict:
    return {"schedule": args.schedule, "layer_groups": args.layer_groups}


def speculative_options(args) -> dict:
    return {
        "speculative": args.speculative,
        "num_speculative_tokens": args.num_speculative_tokens,
        "draft_model": None if args.draft_model is None else str(args.draft_model),
        "ngram_max": args.ngram_max,
        "ngram_min": args.ngram_min,
    }


def prefix_caching_options(args) -> dict:
    return {
        "enable_prefix_caching": args.enable_prefix_caching,
        "prefix_eviction": args.prefix_eviction,
        "prefix_eviction_alpha": args.prefix_eviction_alpha,
        "state_checkpoint_interval": args.state_checkpoint_interval,
    }


def register_serve(sub) -> None:
    from attnlab.common import positive_int
    from attnlab.kernels import add_kernels_option

    from .config import ROUNDINGS, SCALE_GROUPS, STATE_DTYPES

    p = sub.add_parser("serve", help="OpenAI-compatible HTTP server (completions, chat, metrics)")
    p.add_argument("path", type=Path, metavar="PATH", help="attnlab run dir or model folder")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback only)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument(
        "--api-key", default=os.environ.get("ATTNLAB_API_KEY"),
        help="require 'Authorization: Bearer KEY' on /v1/* (default: $ATTNLAB_API_KEY)",
    )  # fmt: skip
    p.add_argument("--served-model-name", default=None, help="the model id clients send (default: PATH)")
    p.add_argument("--cache-memory", default="1GiB", help="cache budget (bytes, '1GiB', a fraction, '10%%')")
    p.add_argument("--max-num-seqs", type=positive_int, default=64)
    p.add_argument("--max-num-batched-tokens", type=positive_int, default=2048)
    p.add_argument("--max-model-len", type=positive_int, default=None)
    p.add_argument("--block-size", type=positive_int, default=16)
    p.add_argument("--state-dtype", choices=list(STATE_DTYPES), default="fp32",
                   help="storage of lightning state slots (docs/state_precision.md)")  # fmt: skip
    p.add_argument("--state-rounding", choices=list(ROUNDINGS), default="nearest",
                   help="rounding on store for bf16/fp16/int8 states")  # fmt: skip
    p.add_argument("--state-scales", choices=list(SCALE_GROUPS), default="row",
                   help="int8 states: one fp32 scale per (head, key row) or per (head, 32x32 block)")  # fmt: skip
    add_prefix_caching_options(p)
    add_speculative_options(p)
    add_schedule_options(p)
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    p.add_argument("--max-body-bytes", type=positive_int, default=4 * 2**20)
    p.add_argument(
        "--drain-timeout", type=float, default=30.0,
        help="seconds open requests may finish after Ctrl-C / SIGTERM before they are aborted",
    )  # fmt: skip
    p.add_argument(
        "--threads", type=positive_int, default=None,
        help="torch CPU threads of the engine (default: every core; every core but one with --engine-thread)",
    )  # fmt: skip
    p.add_argument(
        "--engine-thread", action="store_true",
        help="run the engine on a thread of the server's process instead of a process of its own",
    )  # fmt: skip
    p.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    add_kernels_option(p)
    p.set_defaults(func=cmd_serve)


def cmd_serve(args) -> int:
    from .http_server import ServeOptions, serve

    if not 0 < args.port < 65536:
        print(f"attnlab serve: error: --port {args.port}: must be in 1..65535", file=sys.stderr)
        return 2
    options = ServeOptions(
        path=args.path, host=args.host, port=args.port, api_key=args.api_key or None,
        model_name=args.served_model_name, device=args.device, max_body_bytes=args.max_body_bytes,
        drain_timeout=args.drain_timeout, log_level=args.log_level, threads=args.threads,
        engine_process=not args.engine_thread,
    )  # fmt: skip
    try:
        serve(
            options, cache_memory=args.cache_memory, max_num_seqs=args.max_num_seqs,
            max_num_batched_tokens=args.max_num_batched_tokens, max_model_len=args.max_model_len,
            block_size=args.block_size, state_dtype=args.state_dtype, state_rounding=args.state_rounding,
            state_scales=args.state_scales, **prefix_caching_options(args), **speculative_options(args),
            **schedule_options(args),
        )  # fmt: skip
    except (ValueError, FileNotFoundError) as e:
        print(f"attnlab serve: error: {e}", file=sys.stderr)
        return 2
    except RuntimeError as e:  # the engine process could not start (it says why)
        print(f"attnlab serve: error: {e}", file=sys.stderr)
        return 1
    return 0


def cmd_bench_serve(args) -> int:
    import torch

    from ..kernels import keep_freed_memory
    from .bench import BenchOptions, run

    if args.poisson_rate <= 0:
        print(f"attnlab bench serve: error: --poisson-rate {args.poisson_rate}: must be > 0", file=sys.stderr)
        return 2
    if args.url or args.offline:
        return cmd_bench_http(args)
    if args.write_model:
        from ..evals import byte_tokenizer
        from .bench import bench_model

        model = bench_model(
            args.families[0], BenchOptions(out=args.out, families=args.families, batches=args.batches)
        )
        model.config.max_position_embeddings = 4096
        model.save_pretrained(args.write_model)
        byte_tokenizer().save_pretrained(args.write_model)
        print(f"attnlab bench serve: wrote the {args.families[0]} benchmark model to {args.write_model}")
        return 0
    torch.set_num_threads(args.threads or torch.get_num_threads())
    # Both peers run in this process: big temporaries are reused instead of page-faulted anew.
    keep_freed_memory()
    opts = BenchOptions(
        out=args.out,
        families=args.families,
        batches=args.batches,
        prompt_len=args.prompt_len,
        new_tokens=args.new_tokens,
        cache_memory=args.cache_memory,
        poisson_rate=args.poisson_rate,
        poisson_requests=args.poisson_requests,
        decode_contexts=tuple(args.decode_contexts),
        hf=not args.no_hf,
        repeats=args.repeats,
        seed=args.seed,
    )
    Path(opts.out).mkdir(parents=True, exist_ok=True)  # an output folder that cannot be written fails first
    print(f"attnlab bench serve: {', '.join(opts.families)} at batch {opts.batches}, "
          f"{torch.get_num_threads()} threads -> {opts.out}", flush=True)  # fmt: skip
    run(opts)
    print((opts.out / "bench_serve.md").read_text())
    return 0


def cmd_bench_http(args) -> int:
    import httpx

    from .http_bench import HttpBenchOptions, run

    if args.url and args.offline:
        print("attnlab bench serve: error: give --url or --offline, not both", file=sys.stderr)
        return 2
    opts = HttpBenchOptions(
        url=args.url or "", label=args.label or ("attnlab-offline" if args.offline else "attnlab"),
        out=args.out, concurrency=args.batches, prompt_len=args.prompt_len, new_tokens=args.new_tokens,
        rounds=args.rounds, poisson_rate=args.poisson_rate, poisson_requests=args.poisson_requests,
        api_key=args.api_key, model=args.model, vocab=args.vocab, seed=args.seed,
    )  # fmt: skip
    engine = None
    if args.offline:
        from .config import EngineConfig
        from .engine import LLMEngine
        from .llm import load_for_serving

        try:
            model, tokenizer = load_for_serving(args.offline)
            config = EngineConfig(cache_memory=args.cache_memory, max_num_seqs=max(64, *args.batches))
            engine = LLMEngine(model, tokenizer, config)
        except (ValueError, FileNotFoundError) as e:
            print(f"attnlab bench serve: error: {e}", file=sys.stderr)
            return 2
    Path(opts.out).mkdir(parents=True, exist_ok=True)  # an output folder that cannot be written fails first
    print(f"attnlab bench serve: {opts.label} ({args.url or args.offline}) -> {opts.out}", flush=True)
    try:
        results = run(opts, engine=engine)
    except (httpx.HTTPError, RuntimeError) as e:
        print(f"attnlab bench serve: error: {args.url}: {e}", file=sys.stderr)
        return 1
    from .http_bench import markdown

    print(markdown(results))
    return 0
