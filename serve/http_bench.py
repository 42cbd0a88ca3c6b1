"""`attnlab bench serve --url URL`: the serving workloads over HTTP, against any OpenAI-compatible
server (attnlab serve, vLLM, ...), by concurrent streaming clients.

Workloads (the offline benchmark's, serve/bench.py): for each concurrency C, C clients each send
requests back to back until `rounds * C` have finished; every request is `prompt_len` random token
ids and asks for exactly `new_tokens` tokens (`ignore_eos`), streamed. Plus a Poisson stream of
requests at a fixed rate. Reported per workload: requests/s, output tokens/s, TTFT p50/p99, time
per output token (TPOT, per request: (end - first token) / (tokens - 1)) p50/p99 and inter-token
latency (ITL: gaps between streamed chunks) p50/p99.

Results of several servers (one `--label` each, run one after the other so they do not share the
CPU) accumulate in the same `--out` folder: http_results.json and bench_http.md hold them all.
"""

from __future__ import annotations

import asyncio
import json
import platform
import random
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from .bench import percentile


@dataclass
class HttpBenchOptions:
    url: str
    label: str
    out: Path
    concurrency: list[int] = field(default_factory=lambda: [1, 8, 32])
    prompt_len: int = 512
    new_tokens: int = 128
    rounds: int = 2  # requests per client at each concurrency
    poisson_rate: float = 2.0
    poisson_requests: int = 24
    api_key: str | None = None
    model: str | None = None  # default: the server's first model
    vocab: int = 256  # prompt token ids are drawn from [1, vocab)
    seed: int = 0
    timeout: float = 600.0


@dataclass
class Sample:
    start: float
    first: float | None = None
    end: float | None = None
    chunk_times: list[float] = field(default_factory=list)
    tokens: int = 0
    error: str | None = None


async def one_request(
    client: httpx.AsyncClient, opts: HttpBenchOptions, model: str, prompt: list[int]
) -> Sample:
    body = {
        "model": model, "prompt": prompt, "max_tokens": opts.new_tokens, "temperature": 0,
        "ignore_eos": True, "stream": True, "stream_options": {"include_usage": True},
    }  # fmt: skip
    s = Sample(start=time.perf_counter())
    try:
        async with client.stream("POST", "/v1/completions", json=body) as r:
            if r.status_code != 200:
                s.error = f"HTTP {r.status_code}: {(await r.aread())[:200]!r}"
                return s
            async for line in r.aiter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                t = time.perf_counter()
                chunk = json.loads(line[6:])
                if "error" in chunk:
                    s.error = str(chunk["error"])
                    return s
                if chunk.get("usage"):
                    s.tokens = chunk["usage"]["completion_tokens"]
                if chunk.get("choices"):
                    s.chunk_times.append(t)
                    if s.first is None:
                        s.first = t
        s.end = time.perf_counter()
        if not s.tokens:  # a server that does not send usage: one token per chunk
            s.tokens = len(s.chunk_times)
    except httpx.HTTPError as e:
        s.error = f"{type(e).__name__}: {e}"
    return s


def summarize(samples: list[Sample], wall: float) -> dict:
    ok = [s for s in samples if s.error is None and s.first is not None]
    ttft = [s.first - s.start for s in ok]
    tpot = [(s.end - s.first) / (s.tokens - 1) for s in ok if s.tokens > 1]
    itl = [b - a for s in ok for a, b in zip(s.chunk_times, s.chunk_times[1:], strict=False)]
    tokens = sum(s.tokens for s in ok)
    return {
        "requests": len(samples),
        "failed": len(samples) - len(ok),
        "errors": sorted({s.error for s in samples if s.error})[:3],
        "wall_s": wall,
        "requests_per_s": len(ok) / wall,
        "output_tokens_per_s": tokens / wall,
        "ttft_p50_s": percentile(ttft, 50),
        "ttft_p99_s": percentile(ttft, 99),
        "tpot_p50_s": percentile(tpot, 50),
        "tpot_p99_s": percentile(tpot, 99),
        "itl_p50_s": percentile(itl, 50),
        "itl_p99_s": percentile(itl, 99),
    }


async def closed_loop(
    client, opts: HttpBenchOptions, model: str, concurrency: int, rng: random.Random
) -> dict:
    """`concurrency` clients, each sending its next request as soon as the last one ends."""
    prompts = [
        [rng.randrange(1, opts.vocab) for _ in range(opts.prompt_len)]
        for _ in range(concurrency * opts.rounds)
    ]
    queue = list(reversed(prompts))
    samples: list[Sample] = []

    async def worker():
        while queue:
            samples.append(await one_request(client, opts, model, queue.pop()))

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return summarize(samples, time.perf_counter() - start)


async def poisson(client, opts: HttpBenchOptions, model: str, rng: random.Random) -> dict:
    tasks = []
    start = time.perf_counter()
    for _ in range(opts.poisson_requests):
        prompt = [rng.randrange(1, opts.vocab) for _ in range(opts.prompt_len)]
        tasks.append(asyncio.create_task(one_request(client, opts, model, prompt)))
        await asyncio.sleep(rng.expovariate(opts.poisson_rate))
    samples = await asyncio.gather(*tasks)
    return summarize(list(samples), time.perf_counter() - start)


async def bench(opts: HttpBenchOptions, progress=print) -> dict:
    headers = {"Authorization": f"Bearer {opts.api_key}"} if opts.api_key else {}
    limits = httpx.Limits(max_connections=max(opts.concurrency) + opts.poisson_requests + 4)
    async with httpx.AsyncClient(
        base_url=opts.url.rstrip("/"), headers=headers, timeout=opts.timeout, limits=limits
    ) as client:
        r = await client.get("/v1/models")
        r.raise_for_status()
        models = [m["id"] for m in r.json()["data"]]
        model = opts.model or models[0]
        rng = random.Random(opts.seed)
        warm = await one_request(
            client, opts, model, [rng.randrange(1, opts.vocab) for _ in range(opts.prompt_len)]
        )
        if warm.error:
            raise RuntimeError(f"{opts.url}: the warm-up request failed: {warm.error}")
        rows = []
        for c in opts.concurrency:
            row = {
                "workload": f"{c} clients",
                "concurrency": c,
                **await closed_loop(client, opts, model, c, rng),
            }
            progress(line(opts.label, row))
            rows.append(row)
        if opts.poisson_requests:
            row = {
                "workload": f"Poisson {opts.poisson_rate:g}/s",
                "concurrency": None,
                **await poisson(client, opts, model, rng),
            }
            progress(line(opts.label, row))
            rows.append(row)
    return {"label": opts.label, "url": opts.url, "model": model, "rows": rows}


def bench_offline(engine, opts: HttpBenchOptions, progress=print) -> dict:
    """The same workloads through the engine in this process, no HTTP: the server's baseline."""
    from .sampling import SamplingParams

    params = SamplingParams(max_tokens=opts.new_tokens, ignore_eos=True)
    rng = random.Random(opts.seed)

    def prompt():
        return [rng.randrange(1, opts.vocab) for _ in range(opts.prompt_len)]

    def drive(concurrency: int | None = None, arrivals: list[float] | None = None) -> dict:
        """Closed loop of `concurrency` clients, or requests arriving at the given offsets (s)."""
        total = concurrency * opts.rounds if concurrency else len(arrivals)
        due = list(arrivals or [])
        samples: dict[str, Sample] = {}

        def add():
            samples[engine.add_request(prompt(), params)] = Sample(start=time.perf_counter())

        start = time.perf_counter()
        for _ in range(concurrency or 0):
            add()
        while len(samples) < total or engine.has_unfinished():
            while due and due[0] <= time.perf_counter() - start:
                due.pop(0)
                add()
            if not engine.has_unfinished():
                time.sleep(max(0.0, min(0.01, due[0] - (time.perf_counter() - start))))
                continue
            for out in engine.step():
                s, t = samples[out.request_id], out.metrics.token_times[-1]
                s.first = s.first or t
                s.chunk_times.append(t)
                if out.finished:
                    s.end, s.tokens = t, len(out.token_ids)
                    if concurrency and len(samples) < total:
                        add()
        return summarize(list(samples.values()), time.perf_counter() - start)

    engine.add_request(prompt(), params)  # warm-up
    while engine.has_unfinished():
        engine.step()
    rows = []
    for c in opts.concurrency:
        row = {"workload": f"{c} clients", "concurrency": c, **drive(concurrency=c)}
        progress(line(opts.label, row))
        rows.append(row)
    if opts.poisson_requests:
        t, arrivals = 0.0, []
        for _ in range(opts.poisson_requests):
            arrivals.append(t)
            t += rng.expovariate(opts.poisson_rate)
        row = {
            "workload": f"Poisson {opts.poisson_rate:g}/s",
            "concurrency": None,
            **drive(arrivals=arrivals),
        }
        progress(line(opts.label, row))
        rows.append(row)
    return {"label": opts.label, "url": None, "model": "in-process engine", "rows": rows}


def run(opts: HttpBenchOptions, progress=print, engine=None) -> dict:
    """Bench one server (or, given `engine`, the offline engine) and merge its rows into `out`'s
    results (a label run again is replaced)."""
    result = (
        bench_offline(engine, opts, progress) if engine is not None else asyncio.run(bench(opts, progress))
    )
    opts.out.mkdir(parents=True, exist_ok=True)
    path = opts.out / "http_results.json"
    results = json.loads(path.read_text()) if path.exists() else {"servers": {}}
    entry = results["servers"].setdefault(opts.label, {"runs": []})
    entry.update(url=result["url"], model=result["model"])
    entry["runs"].append(result["rows"])
    entry["rows"] = median_rows(entry["runs"])
    results["workload"] = {
        "prompt_len": opts.prompt_len, "new_tokens": opts.new_tokens, "rounds": opts.rounds,
        "poisson_rate": opts.poisson_rate, "poisson_requests": opts.poisson_requests,
        "machine": f"{platform.processor() or platform.machine()}, {platform.system()}",
    }  # fmt: skip
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(results, indent=2))
    tmp.replace(path)
    (opts.out / "bench_http.md").write_text(markdown(results))
    return results


def median_rows(runs: list[list[dict]]) -> list[dict]:
    """Per workload, the median of every figure over the runs of one server (runs alternate with
    the other servers' so that a slow spell of this shared machine does not pick the winner)."""
    rows = []
    for first in runs[0]:
        same = [r for run in runs for r in run if r["workload"] == first["workload"]]
        row = dict(first, runs=len(same))
        for key, value in first.items():
            if isinstance(value, float) or key == "failed":
                values = [r[key] for r in same if r[key] is not None]
                row[key] = statistics.median(values) if values else None
        tps = [r["output_tokens_per_s"] for r in same]
        row["output_tokens_per_s_range"] = [min(tps), max(tps)]
        rows.append(row)
    return rows


def line(label: str, row: dict) -> str:
    return (
        f"{label:>10} {row['workload']:>12}: {row['requests_per_s']:.2f} req/s, "
        f"{row['output_tokens_per_s']:.0f} tok/s, TTFT p50 {_ms(row['ttft_p50_s'])}, "
        f"TPOT p50 {_ms(row['tpot_p50_s'])}" + (f", {row['failed']} failed" if row["failed"] else "")
    )


def _tps(row: dict) -> str:
    lo, hi = row.get("output_tokens_per_s_range") or (None, None)
    spread = f" ({lo:.0f}-{hi:.0f})" if row.get("runs", 1) > 1 else ""
    return f"{row['output_tokens_per_s']:.1f}{spread}"


def _ms(s: float | None) -> str:
    return "-" if s is None else f"{s * 1000:.0f} ms"


def markdown(results: dict) -> str:
    w = results["workload"]
    out = [
        f"# HTTP serving benchmark ({w['machine']})",
        "",
        f"Streaming completions of {w['prompt_len']} prompt tokens -> {w['new_tokens']} output tokens "
        f"(ignore_eos); C clients send {w['rounds']} requests each, back to back. Servers were run one "
        "after the other on the same machine; with several runs of a server, medians (output tok/s "
        "range in brackets).",
        "",
        "| server | workload | req/s | out tok/s | TTFT p50 | TTFT p99 | TPOT p50 | TPOT p99 | ITL p99 | failed |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    labels = list(results["servers"])
    workloads = []
    for label in labels:
        for row in results["servers"][label]["rows"]:
            if row["workload"] not in workloads:
                workloads.append(row["workload"])
    for wl in workloads:  # servers side by side per workload
        for label in labels:
            for r in results["servers"][label]["rows"]:
                if r["workload"] == wl:
                    out.append(
                        f"| {label} | {wl} | {r['requests_per_s']:.2f} | {_tps(r)} | "
                        f"{_ms(r['ttft_p50_s'])} | {_ms(r['ttft_p99_s'])} | {_ms(r['tpot_p50_s'])} | "
                        f"{_ms(r['tpot_p99_s'])} | {_ms(r['itl_p99_s'])} | {int(r['failed'])} |"
                    )
    if len(labels) >= 2:
        base = labels[0]
        out += ["", f"Ratios against `{base}` (> 1: {base} is ahead):", ""]
        for label in labels[1:]:
            for wl in workloads:
                a = _row(results, base, wl)
                b = _row(results, label, wl)
                if a and b and b["requests_per_s"] and b["output_tokens_per_s"]:
                    out.append(
                        f"- {wl}: {base} / {label} = {a['requests_per_s'] / b['requests_per_s']:.2f}x req/s, "
                        f"{a['output_tokens_per_s'] / b['output_tokens_per_s']:.2f}x output tok/s"
                    )
    return "\n".join(out) + "\n"


def _row(results: dict, label: str, workload: str) -> dict | None:
    return next((r for r in results["servers"][label]["rows"] if r["workload"] == workload), None)
