"""`attnlab bench prefix`: what prefix caching buys each attention family on shared-prefix workloads.

Models of one width and depth (random weights: speed does not depend on them), one per family
(crossover.py's layouts: full, lightning, MiniMax-01 7:1, Qwen3-Next 3:1, ...), byte vocabulary.
Two workloads, token ids from a seeded generator:

- chat: one shared system prompt and many conversations of 4-8 turns; a turn's prompt is the
  previous turn's prompt + its output + a new user message. Rounds: the next turn of every
  unfinished conversation is submitted at once, and the next round only when all have finished
  (a turn needs the previous one's output).
- few-shot: one long prefix of K examples (a question and its answer each); requests = prefix +
  a distinct question, submitted in waves, so later waves can hit what earlier ones cached.

Each runs under four engine configurations: `off` (no prefix caching), `cost` (prefix caching,
eviction by recency + FLOPs saved per byte), `lru` (least recently used), `interval` (cost, with
recurrent-state checkpoints every `interval` tokens instead of where they pay). All four share one
cache budget per family and workload; by default it is tight (`auto_budget`), so that the cached
prefixes do not all fit and the eviction policies have something to decide. Greedy decoding with
a fixed output length: every configuration must produce `off`'s tokens, and after every run no
request may hold cache and clearing the prefix cache must free every pool.
"""

from __future__ import annotations

import json
import math
import random
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tqdm.auto import tqdm

from ..common import check_subset, human_bytes
from ..kernels import kernel_record
from .bench import environment, percentile, random_model
from .config import EngineConfig
from .crossover import FAMILIES, cache_budget, layout
from .engine import LLMEngine
from .sampling import SamplingParams

VOCAB = 256
TOKENS_PER_STEP = 2048  # the engine's max_num_batched_tokens (its default)
DEFAULT_FAMILIES = ["full", "lightning", "minimax-7to1", "qwen3next-3to1"]
WORKLOADS = ("chat", "few-shot")
# config -> EngineConfig prefix-caching fields (the interval is filled in from the options).
CONFIGS: dict[str, dict] = {
    "off": {"enable_prefix_caching": False},
    "cost": {"enable_prefix_caching": True, "prefix_eviction": "cost"},
    "lru": {"enable_prefix_caching": True, "prefix_eviction": "lru"},
    "interval": {"enable_prefix_caching": True, "prefix_eviction": "cost", "state_checkpoint_interval": None},
}


@dataclass
class PrefixBenchOptions:
    out: Path = Path("runs/bench-prefix")
    families: list[str] = field(default_factory=lambda: list(DEFAULT_FAMILIES))
    workloads: list[str] = field(default_factory=lambda: list(WORKLOADS))
    # chat
    conversations: int = 10
    turns: tuple[int, int] = (4, 8)  # each conversation's turns, drawn uniformly from [lo, hi]
    system_len: int = 256
    user_len: int = 64  # a user message, and a few-shot question
    new_tokens: int = 32  # output tokens of every request (a few-shot answer is as long)
    # few-shot
    shots: int = 8
    few_shot_requests: int = 24
    wave: int = 2  # few-shot requests submitted at once
    # engine
    cache_memory: int | None = None  # bytes; None: auto_budget per family and workload
    cache_fraction: float = 0.5  # auto_budget: the share of the workload's prefixes that fits
    max_num_seqs: int = 4
    block_size: int = 16
    interval: int | None = None  # the `interval` config's checkpoint spacing; default 4 blocks
    # models
    hidden: int = 256
    layers: int = 8
    heads: int = 4
    window: int = 512  # SWA layers (swa, gemma3-5to1)
    seed: int = 0

    def __post_init__(self) -> None:
        if self.interval is None:
            self.interval = 4 * self.block_size

    def check(self) -> None:
        """Clear errors naming the flag and what it allows (the CLI's types check each alone)."""
        check_subset(self.families, FAMILIES, "--families")
        check_subset(self.workloads, WORKLOADS, "--workloads")
        lo, hi = self.turns
        if not 1 <= lo <= hi:
            raise ValueError(f"--turns {lo}:{hi}: expected LO:HI with 1 <= LO <= HI (e.g. 4:8)")
        if self.interval <= 0 or self.interval % self.block_size:
            raise ValueError(
                f"--interval {self.interval}: must be a positive multiple of --block-size {self.block_size}"
            )
        if not 0 < self.cache_fraction < math.inf:
            raise ValueError(f"--cache-fraction {self.cache_fraction}: must be a finite number > 0")


# --- workloads ------------------------------------------------------------------------------------
def _ids(rng: random.Random, n: int) -> list[int]:
    return [rng.randrange(1, VOCAB) for _ in range(n)]


@dataclass
class ChatWorkload:
    """Conversations over one system prompt; round t holds turn t of every conversation that has one."""

    system: list[int]
    messages: list[list[list[int]]]  # [conversation][turn] -> the user message's token ids
    new_tokens: int
    name: str = "chat"

    @staticmethod
    def request_id(conversation: int, turn: int) -> str:
        return f"c{conversation:03d}-t{turn}"

    @property
    def rounds(self) -> int:
        return max(len(m) for m in self.messages)

    @property
    def requests(self) -> int:
        return sum(len(m) for m in self.messages)

    @property
    def concurrency(self) -> int:
        return len(self.messages)

    def _length(self, msgs: list[list[int]]) -> int:
        return len(self.system) + sum(len(m) + self.new_tokens for m in msgs)

    @property
    def longest(self) -> int:
        """Tokens of the longest sequence (a last turn's prompt + its output)."""
        return max(self._length(m) for m in self.messages)

    @property
    def distinct_tokens(self) -> int:
        """Tokens a cache keeping every prefix holds: the system prompt once, each conversation's turns."""
        return len(self.system) + sum(self._length(m) - len(self.system) for m in self.messages)

    def round(self, turn: int, outputs: dict[str, list[int]]) -> list[tuple[str, list[int]]]:
        """(request id, prompt) of every conversation's turn `turn`, built from its earlier outputs."""
        batch = []
        for c, msgs in enumerate(self.messages):
            if turn >= len(msgs):
                continue
            prompt = list(self.system)
            for t in range(turn):
                prompt += msgs[t] + outputs[self.request_id(c, t)]
            batch.append((self.request_id(c, turn), prompt + msgs[turn]))
        return batch


@dataclass
class FewShotWorkload:
    """One shared prefix of examples; request r = prefix + question r; waves of `wave` requests."""

    prefix: list[int]
    questions: list[list[int]]
    wave: int
    new_tokens: int
    name: str = "few-shot"

    @property
    def rounds(self) -> int:
        return math.ceil(len(self.questions) / self.wave)

    @property
    def requests(self) -> int:
        return len(self.questions)

    @property
    def concurrency(self) -> int:
        return min(self.wave, len(self.questions))

    @property
    def longest(self) -> int:
        return len(self.prefix) + max(len(q) for q in self.questions) + self.new_tokens

    @property
    def distinct_tokens(self) -> int:
        return len(self.prefix) + sum(len(q) + self.new_tokens for q in self.questions)

    def round(self, wave: int, outputs: dict[str, list[int]]) -> list[tuple[str, list[int]]]:
        first = wave * self.wave
        return [
            (f"q{r:03d}", self.prefix + self.questions[r])
            for r in range(first, min(first + self.wave, len(self.questions)))
        ]


Workload = ChatWorkload | FewShotWorkload


def chat_workload(opts: PrefixBenchOptions) -> ChatWorkload:
    rng = random.Random(f"chat:{opts.seed}")
    system = _ids(rng, opts.system_len)
    lo, hi = opts.turns
    messages = [
        [_ids(rng, opts.user_len) for _ in range(rng.randint(lo, hi))] for _ in range(opts.conversations)
    ]
    return ChatWorkload(system, messages, opts.new_tokens)


def few_shot_workload(opts: PrefixBenchOptions) -> FewShotWorkload:
    rng = random.Random(f"few-shot:{opts.seed}")
    prefix = [t for _ in range(opts.shots) for t in _ids(rng, opts.user_len + opts.new_tokens)]
    questions = [_ids(rng, opts.user_len) for _ in range(opts.few_shot_requests)]
    return FewShotWorkload(prefix, questions, opts.wave, opts.new_tokens)


def make_workload(name: str, opts: PrefixBenchOptions) -> Workload:
    return chat_workload(opts) if name == "chat" else few_shot_workload(opts)


# --- the cache budget -----------------------------------------------------------------------------
def max_len(workload: Workload, block_size: int) -> int:
    """The engine's max_model_len: the longest sequence, to whole blocks, plus one block."""
    return (math.ceil(workload.longest / block_size) + 1) * block_size


def prefix_footprint(model, workload: Workload, block_size: int) -> int:
    """Bytes a cache that never evicts would hold for the workload's prefixes: the paged bytes of
    every distinct token, and for models with recurrent layers two state checkpoints per request
    (where its prompt ends and where its output ends) plus one where the shared prefix branches."""
    per_token = (model.state_bytes(2 * block_size) - model.state_bytes(block_size)) // block_size
    state = model.state_bytes(block_size) - per_token * block_size  # recurrent layers' state
    checkpoints = 2 * workload.requests + 1 if state else 0
    return workload.distinct_tokens * per_token + checkpoints * state


def running_seqs(workload: Workload, opts: PrefixBenchOptions) -> int:
    """Requests the engine runs at once: max_num_seqs, or fewer when a round holds fewer."""
    return min(opts.max_num_seqs, workload.concurrency)


def running_budget(model, workload: Workload, opts: PrefixBenchOptions) -> int:
    """The smallest budget in which the engine's allocator holds its running batch, every sequence
    at the longest length (slots, window blocks and the prefill chunk's reserve included)."""
    seqs, length = running_seqs(workload, opts), max_len(workload, opts.block_size)
    return cache_budget(model, seqs, length, TOKENS_PER_STEP, opts.block_size)


def auto_budget(model, workload: Workload, opts: PrefixBenchOptions) -> int:
    """`cache_fraction` of the prefix footprint, but at least the running batch at the longest
    length (so that `off` runs as many requests at once as the others)."""
    footprint = prefix_footprint(model, workload, opts.block_size)
    return int(max(running_budget(model, workload, opts), opts.cache_fraction * footprint))


# --- one run --------------------------------------------------------------------------------------
def engine_config(config: str, budget: int, workload: Workload, opts: PrefixBenchOptions) -> EngineConfig:
    fields = dict(CONFIGS[config])
    if "state_checkpoint_interval" in fields:
        fields["state_checkpoint_interval"] = opts.interval
    return EngineConfig(
        cache_memory=budget, block_size=opts.block_size, max_num_seqs=running_seqs(workload, opts),
        max_num_batched_tokens=TOKENS_PER_STEP, max_model_len=max_len(workload, opts.block_size), **fields,
    )  # fmt: skip


def serve_rounds(engine: LLMEngine, workload: Workload, new_tokens: int) -> dict:
    """Submit the workload round by round; -> outputs (request id -> tokens), per-request numbers,
    the summed wall and CPU time of the rounds (CPU time varies less on a shared machine), and the
    prefix cache's peak held bytes and checkpoints (read between rounds, when no request runs and
    everything cached is held by the tree alone)."""
    params = SamplingParams(max_tokens=new_tokens, ignore_eos=True)
    prefix = engine.cache.prefix
    tokens, finished, wall, cpu = {}, [], 0.0, 0.0
    peak_held = peak_checkpoints = 0
    for i in range(workload.rounds):
        batch = workload.round(i, tokens)
        start, cpu_start = time.perf_counter(), time.process_time()
        for rid, prompt in batch:
            engine.add_request(prompt, params, request_id=rid, arrival_time=start)
        left, idle = {rid for rid, _ in batch}, 0
        while left:
            outs = engine.step()
            for out in outs:
                if out.finished:
                    tokens[out.request_id] = out.token_ids
                    finished.append(out)
                    left.discard(out.request_id)
            idle = idle + 1 if not outs and not engine.scheduler.running else 0
            if idle > 2:
                raise RuntimeError(f"the engine makes no progress: {len(left)} requests wait, none runs")
        wall += time.perf_counter() - start
        cpu += time.process_time() - cpu_start
        if prefix is not None:
            stats = prefix.stats()
            peak_held = max(peak_held, stats["held_bytes"])
            peak_checkpoints = max(peak_checkpoints, stats["checkpoints"])
    return {
        "tokens": tokens, "finished": finished, "wall_s": wall, "cpu_s": cpu,
        "held_bytes_peak": peak_held, "checkpoints_peak": peak_checkpoints,
    }  # fmt: skip


def leaks(engine: LLMEngine) -> list[str]:
    """What is still held after every request finished (nothing may be), and after the prefix
    cache is cleared (every pool must be free)."""
    problems = []
    if engine.cache.holdings:
        problems.append(f"requests still hold cache after finishing: {sorted(engine.cache.holdings)[:5]}")
    if engine.cache.prefix is not None:
        engine.cache.prefix.clear()
    if not engine.cache.all_free():
        problems.append(f"pools not free after prefix.clear(): (used, free) = {engine.cache.usage()}")
    return problems


def compare_outputs(tokens: dict[str, list[int]], reference: dict[str, list[int]]) -> dict:
    """Whether every request produced the reference's tokens; the first that did not."""
    bad = sorted(rid for rid in reference if tokens.get(rid) != reference[rid])
    first = None
    if bad:
        ours, ref = tokens.get(bad[0], []), reference[bad[0]]
        at = next(
            (i for i, (a, b) in enumerate(zip(ours, ref, strict=False)) if a != b), min(len(ours), len(ref))
        )
        first = {"request": bad[0], "token": at}
    return {"outputs_match": not bad, "mismatched_requests": len(bad), "first_mismatch": first}


def run_config(model, workload: Workload, config: str, budget: int, opts: PrefixBenchOptions,
               reference: dict[str, list[int]] | None) -> tuple[dict, dict[str, list[int]]]:  # fmt: skip
    """One (family, workload, config) run -> its measurements, and its output tokens."""
    engine = LLMEngine(model, None, engine_config(config, budget, workload, opts))
    capacity = {name: used + free for name, (used, free) in engine.cache.usage().items()}
    served = serve_rounds(engine, workload, opts.new_tokens)
    outs, wall = served["finished"], served["wall_s"]
    prompt_tokens = sum(len(o.prompt_token_ids) for o in outs)
    output_tokens = sum(len(o.token_ids) for o in outs)
    cached = sum(o.num_cached_tokens for o in outs)
    ttft = [o.metrics.ttft for o in outs]
    stats = engine.cache.prefix.stats() if engine.cache.prefix is not None else {}
    row = {
        "config": config,
        "requests": len(outs),
        "prompt_tokens": prompt_tokens,
        "output_tokens": output_tokens,
        "cached_tokens": cached,
        "hit_rate": cached / prompt_tokens,
        "stats_hit_rate": stats.get("hit_rate", 0.0),  # every admission, re-admissions after preemption too
        "ttft_mean_s": statistics.mean(ttft),
        "ttft_p50_s": percentile(ttft, 50),
        "ttft_p90_s": percentile(ttft, 90),
        "wall_s": wall,
        "cpu_s": served["cpu_s"],
        "tokens_per_s": (prompt_tokens + output_tokens) / wall,
        "output_tokens_per_s": output_tokens / wall,
        "held_bytes_peak": served["held_bytes_peak"],
        "held_bytes_end": stats.get("held_bytes", 0),
        "checkpoints_peak": served["checkpoints_peak"],
        "checkpoints_end": stats.get("checkpoints", 0),
        "nodes_end": stats.get("nodes", 0),
        "evictions": stats.get("evictions", 0),
        "preemptions": engine.scheduler.num_preemptions,
        "budget_bytes": budget,
        "pool_capacity": capacity,
    }
    row |= compare_outputs(served["tokens"], reference if reference is not None else served["tokens"])
    row["leaks"] = leaks(engine)
    return row, served["tokens"]


def warm_up(model, opts: PrefixBenchOptions) -> None:
    """First calls (kernel choice, compiled backends, allocator) out of the timed runs: a few short
    requests sharing a prefix through an engine with prefix caching."""
    gen = random.Random(opts.seed)
    shared = _ids(gen, 4 * opts.block_size)
    workload = FewShotWorkload(shared, [_ids(gen, opts.block_size) for _ in range(4)], 2, 4)
    config = engine_config("cost", 4 * running_budget(model, workload, opts), workload, opts)
    serve_rounds(LLMEngine(model, None, config), workload, 4)


# --- the run --------------------------------------------------------------------------------------
def build_model(family: str, opts: PrefixBenchOptions, positions: int):
    return random_model(
        layout(family, opts.layers), hidden=opts.hidden, depth=opts.layers, heads=opts.heads,
        max_positions=positions, seed=opts.seed, mixers={"S": {"type": "swa", "window": opts.window}},
    )  # fmt: skip


def plan_budgets(models: dict, workloads: dict[str, Workload], opts: PrefixBenchOptions) -> dict:
    """family -> workload -> the cache budget of its runs, the prefix footprint, and the running
    batch's need; a given --cache-memory too small for one sequence fails here, before any run."""
    plan = {}
    for family, model in models.items():
        plan[family] = {}
        for name, w in workloads.items():
            length = max_len(w, opts.block_size)
            if opts.cache_memory is not None:
                one = cache_budget(model, 1, length, TOKENS_PER_STEP, opts.block_size)
                if opts.cache_memory < one:
                    raise ValueError(
                        f"--cache-memory {human_bytes(opts.cache_memory)}: {family} needs at least "
                        f"{human_bytes(one)} to run one sequence of the {name} workload ({length} tokens)"
                    )
            plan[family][name] = {
                "budget_bytes": opts.cache_memory or auto_budget(model, w, opts),
                "prefix_footprint_bytes": prefix_footprint(model, w, opts.block_size),
                "running_batch_bytes": running_budget(model, w, opts),
            }
    return plan


def run(opts: PrefixBenchOptions, progress: bool = True) -> dict:
    from .prefix_bench_report import write_outputs

    opts.check()
    Path(opts.out).mkdir(parents=True, exist_ok=True)  # a folder that cannot be written fails first
    workloads = {name: make_workload(name, opts) for name in opts.workloads}
    positions = max(max_len(w, opts.block_size) for w in workloads.values())
    models = {family: build_model(family, opts, positions) for family in opts.families}
    budgets = plan_budgets(models, workloads, opts)
    started = time.perf_counter()
    runs = []
    bar = tqdm(
        total=len(models) * len(workloads) * len(CONFIGS), desc="prefix", unit="run", disable=not progress
    )
    for family, model in models.items():
        warm_up(model, opts)
        for name, workload in workloads.items():
            budget = budgets[family][name]["budget_bytes"]
            reference, off = None, None
            for config in CONFIGS:
                bar.set_postfix_str(f"{family} {name} {config}")
                row, tokens = run_config(model, workload, config, budget, opts, reference)
                if config == "off":
                    reference, off = tokens, row
                row["speedup_vs_off"] = off["wall_s"] / row["wall_s"]
                row["cpu_speedup_vs_off"] = off["cpu_s"] / row["cpu_s"]
                runs.append({"family": family, "workload": name, **row})
                bar.update(1)
    bar.close()
    results = {
        "options": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(opts).items()},
        "workloads": {name: describe_workload(w) for name, w in workloads.items()},
        "layouts": {family: layout(family, opts.layers) for family in models},
        "budgets": budgets,
        "machine": environment(),
        "wall_s": time.perf_counter() - started,
        "runs": runs,
        "kernels": kernel_record(),
    }
    write_outputs(results, Path(opts.out))
    return results


def describe_workload(w: Workload) -> dict:
    d = {
        "requests": w.requests,
        "rounds": w.rounds,
        "longest": w.longest,
        "distinct_tokens": w.distinct_tokens,
    }
    if isinstance(w, ChatWorkload):
        d["turns"] = [len(m) for m in w.messages]
    else:
        d["prefix_tokens"] = len(w.prefix)
    return d


def load(path: Path) -> dict:
    return json.loads(Path(path).read_text())
