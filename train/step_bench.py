"""`attnlab bench train-step`: attnlab's full-attention training step against Hugging Face's Llama
of the same shape and weights (archs/llama.py `to_llama`).

One step = forward + loss + backward + AdamW step, timed as the median of `repeats` after `warmup`
steps, on `threads` CPU threads, the rows taking turns step by step. Three rows: attnlab with the built-in kernel choice (what a fresh
install runs: the ranking cache is an empty temporary file), attnlab with `default: ranked` after
the harness has ranked the op's backends at this shape (a temporary cache, never ~/.cache), and
the Llama peer. Each attnlab row records the backends that ran (`backends_used`), so the table says
which kernels produced its time.

It lives in train/ because it times a training step of the model archs builds; the kernels it
compares come through attnlab.kernels' public names.
"""

from __future__ import annotations

import contextlib
import copy
import json
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from ..archs import AttnLabConfig, AttnLabForCausalLM, to_llama
from ..kernels import KernelChoice, backends_used, kernel_choice, rank_op, ranking_cache


@dataclass
class TrainStepOptions:
    batch: int = 8
    length: int = 512
    hidden: int = 256
    layers: int = 4
    heads: int = 4
    vocab: int = 256
    threads: int = 2
    warmup: int = 2
    repeats: int = 5
    rank_reps: int = 3  # timed repetitions per backend when ranking
    seed: int = 0


def rank_attention(opts: TrainStepOptions) -> dict:
    """swa_prefill's ranking at the model's attention shape, stored in the current cache."""
    head_dim = opts.hidden // opts.heads
    entry = {"heads": opts.heads, "kv_heads": opts.heads, "head_dim": head_dim, "batch": opts.batch,
             "seq_len": opts.length, "window": None, "sinks": False, "dtype": "float32"}  # fmt: skip
    return rank_op("swa_prefill", entry, torch.device("cpu"), opts.rank_reps, opts.seed)


def step_fn(model, ids: torch.Tensor):
    """-> a function that runs one training step (forward, loss, backward, AdamW step)."""
    model.train()
    optim = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def step() -> None:
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        optim.step()
        optim.zero_grad(set_to_none=True)

    return step


def build_models(opts: TrainStepOptions):
    """-> (the attnlab full-attention model, the Llama with the same weights)."""

    torch.manual_seed(opts.seed)
    cfg = AttnLabConfig(vocab_size=opts.vocab, hidden_size=opts.hidden, num_hidden_layers=opts.layers,
                        num_attention_heads=opts.heads, layers="F", max_position_embeddings=max(opts.length, 8))  # fmt: skip
    ours = AttnLabForCausalLM(cfg)
    return ours, to_llama(ours)


def _row(name: str, times: list[float], peer_s: float | None, **extra) -> dict:
    median = statistics.median(times)
    return {"row": name, "median_s": median, "times_s": times,
            "vs_llama": None if peer_s is None else median / peer_s, **extra}  # fmt: skip


def run(opts: TrainStepOptions, out: Path) -> dict:
    """Time the three rows and write results.json + results.md into `out` -> the results.

    The rows take turns, one step each per round and each in every position of the round, so a
    burst of load from another process on a shared machine slows every row alike instead of one
    row's whole sample."""
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(opts.threads)
    ours, llama = build_models(opts)
    ids = torch.randint(0, opts.vocab, (opts.batch, opts.length), generator=torch.Generator().manual_seed(1))
    with tempfile.TemporaryDirectory() as tmp:
        empty, ranked_cache = Path(tmp) / "empty.json", Path(tmp) / "ranked.json"
        with ranking_cache(ranked_cache):
            ranking = rank_attention(opts)
        # row name -> (one step, its ranking cache, its kernel choice); None: the Llama peer
        rows = {
            "builtin": (step_fn(ours, ids), empty, KernelChoice()),
            "ranked": (step_fn(copy.deepcopy(ours), ids), ranked_cache, KernelChoice(ranked=True)),
            "llama": (step_fn(llama, ids), None, None),
        }
        times: dict[str, list[float]] = {name: [] for name in rows}
        used: dict[str, dict] = {name: {} for name in rows}
        names = list(rows)
        for i in range(opts.warmup + opts.repeats):
            for name in names[i % 3 :] + names[: i % 3]:  # each row goes first, second and third in turn
                step, cache, choice = rows[name]
                with contextlib.ExitStack() as stack:
                    if cache is not None:
                        stack.enter_context(ranking_cache(cache))
                        stack.enter_context(kernel_choice(choice))
                    backends_used(reset=True)
                    start = time.perf_counter()
                    step()
                    elapsed = time.perf_counter() - start
                    used[name] = backends_used(reset=True)
                if i >= opts.warmup:
                    times[name].append(elapsed)
    peer = statistics.median(times["llama"])
    results = {"options": asdict(opts), "torch": torch.__version__, "threads": torch.get_num_threads(),
               "rows": [_row("attnlab, default: builtin (empty ranking cache)", times["builtin"], peer,
                             kernels=used["builtin"]),
                        _row("attnlab, default: ranked (after ranking swa_prefill)", times["ranked"], peer,
                             kernels=used["ranked"], ranking=ranking),
                        _row("Hugging Face LlamaForCausalLM", times["llama"], None,
                             kernels={"attention": "sdpa (HF)"})]}  # fmt: skip
    (out / "results.json").write_text(json.dumps(results, indent=2))
    (out / "results.md").write_text(markdown(results))
    return results


def markdown(results: dict) -> str:
    o = results["options"]
    lines = [
        f"# attnlab bench train-step: B {o['batch']}, T {o['length']}, hidden {o['hidden']}, "
        f"{o['layers']} layers, {o['heads']} heads, vocab {o['vocab']}, fp32, {results['threads']} CPU threads",
        "",
        f"Forward + backward + AdamW step, median of {o['repeats']} after {o['warmup']} warm-up steps; the rows "
        "take turns, one step each per round.",
        "",
        "| row | median s/step | vs Llama | kernels |",
        "|---|---:|---:|---|",
    ]
    for r in results["rows"]:
        ratio = "1.00x (peer)" if r["vs_llama"] is None else f"{r['vs_llama']:.2f}x"
        kernels = ", ".join(f"{op}: {name}" for op, name in r.get("kernels", {}).items())
        lines.append(f"| {r['row']} | {r['median_s']:.3f} | {ratio} | {kernels} |")
    return "\n".join(lines) + "\n"
