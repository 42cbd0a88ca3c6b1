"""ProcessEngine: the LLMEngine in a process of its own, driven from the HTTP server's event loop.

`attnlab serve` runs the engine here by default. In one process, the engine thread and the HTTP
event loop share one interpreter lock: every torch op releases it and must win it back from the
loop, which is busy encoding stream chunks exactly when a step's tokens come out. In a process of
its own the engine never waits for the loop, and it can give torch every core (docs/serving.md,
"HTTP server"). The interface is AsyncEngine's (serve/async_engine.py), so the routes do not
know which one they drive:

    engine = ProcessEngine(EngineLaunch(path, device=None, threads=2, model_name="m", options={...}))
    engine.launch()                    # spawns the engine process, waits until the model is loaded
    engine.start()                     # in the running event loop: read the engine's messages
    group = await engine.submit([(prompt, params, "req-1")])   # ValueError if rejected
    async for index, out in group: ...

The pipe carries small messages: the server sends ("add", id, prompt, params), ("abort", id),
("metrics", token), ("stop", "drain" | "abort"); the engine answers each add with ("added", id,
prompt ids) or ("rejected", id, message), sends ("outputs", [delta, ...]) after every step (each
request's new tokens only, so a long answer costs the same per token), ("metrics", token, text),
("failed", message) when a step fails, and ("exit",) when it stops. The server rebuilds each
request's RequestOutput from the deltas. The engine process ignores Ctrl-C (the server drains
it) and exits when the pipe closes, so it never outlives the server.
"""

from __future__ import annotations

import asyncio
import itertools
import multiprocessing
import signal
import threading
from dataclasses import dataclass, field
from pathlib import Path

from .async_engine import EngineError, RequestGroup, _deliver, _settle, _Sink, submit_group
from .request import Metrics, RequestOutput
from .sampling import SamplingParams


@dataclass
class EngineLaunch:
    """What the engine process builds: the model at `path`, an EngineConfig of `options`."""

    path: Path
    device: str | None
    threads: int
    model_name: str
    options: dict = field(default_factory=dict)
    kernels: object = None  # the server's KernelChoice (--kernels), applied in the engine process too


@dataclass
class _Tracked:
    """The server's copy of one running request, grown from the engine's deltas."""

    sink: _Sink
    prompt: str | None
    prompt_token_ids: list[int] = field(default_factory=list)
    token_ids: list[int] = field(default_factory=list)
    logprobs: list[dict[int, float]] | None = None
    metrics: Metrics = field(default_factory=lambda: Metrics(arrival_time=0.0))


class ProcessEngine:
    def __init__(self, launch: EngineLaunch, start_timeout: float = 600.0):
        self.spec = launch
        self.start_timeout = start_timeout
        self.tokenizer = None
        self.facts: dict = {}  # max_model_len, vocab_size, max_seqs, weight_bytes
        self._conn = None
        self._process = None
        self._send_lock = threading.Lock()  # the loop sends adds; shutdown() sends from a thread
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tracked: dict[str, _Tracked] = {}
        self._admitting: dict[str, tuple[_Sink, asyncio.Future, str | None]] = {}
        self._metrics_waiters: dict[int, asyncio.Future] = {}
        self._tokens = itertools.count()
        self._stop: str | None = None
        self._exited = threading.Event()

    # --- facts the routes read ------------------------------------------------------------------
    @property
    def vocab_size(self) -> int:
        return self.facts["vocab_size"]

    @property
    def max_model_len(self) -> int:
        return self.facts["max_model_len"]

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.is_alive() and not self._exited.is_set()

    # --- lifecycle ------------------------------------------------------------------------------
    def launch(self) -> None:
        """Spawn the engine process and wait until its model is loaded (RuntimeError with the
        engine's own message when it cannot start, e.g. a bad model folder)."""
        ctx = multiprocessing.get_context("spawn")  # a fresh interpreter: no forked torch threads
        self._conn, child = ctx.Pipe()
        self._process = ctx.Process(
            target=engine_main, args=(child, self.spec), name="attnlab-engine", daemon=True
        )
        self._process.start()
        child.close()
        if not self._conn.poll(self.start_timeout):
            self._process.kill()
            raise RuntimeError(f"the engine process did not start within {self.start_timeout:.0f} s")
        try:
            message = self._conn.recv()
        except EOFError:
            self._process.join()
            code = self._process.exitcode
            raise RuntimeError(f"the engine process exited with code {code} while starting") from None
        if message[0] == "failed":
            self._process.join()
            raise RuntimeError(message[1])
        _, self.facts, self.tokenizer = message

    def start(self) -> None:
        """In the running event loop: deliver the engine's messages from now on."""
        if self._process is None:
            self.launch()
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(self._conn.fileno(), self._on_readable)

    def shutdown(self, drain: bool = True, timeout: float | None = None) -> None:
        """Stop the engine process: after the requests in flight finish (drain) or at once,
        aborting them. Waits up to `timeout` seconds for it to exit, then aborts what is left;
        a process that still has not exited 30 s later is killed."""
        if self._process is None:
            return
        mode = "drain" if drain else "abort"
        self._stop = "abort" if self._stop == "abort" else mode
        self._send(("stop", mode))
        self._process.join(timeout)
        if self._process.is_alive():
            self._send(("stop", "abort"))
            self._process.join(30)
        if self._process.is_alive():
            self._process.kill()
            self._process.join()

    def _send(self, message: tuple) -> None:
        with self._send_lock:
            try:
                self._conn.send(message)
            except (OSError, ValueError):  # the engine process is gone; the reader fails what is open
                pass

    # --- asyncio side ---------------------------------------------------------------------------
    async def submit(self, requests: list[tuple[str | list[int], SamplingParams, str]]) -> RequestGroup:
        """Admit (prompt, params, request_id) requests as one group. Raises ValueError, with
        nothing left running, when the engine rejects any of them."""
        return await submit_group(self, requests, self.running and self._stop is None, self._send_add)

    def _send_add(
        self, rid: str, prompt, params: SamplingParams, sink: _Sink, admitted: asyncio.Future
    ) -> None:
        self._admitting[rid] = (sink, admitted, prompt if isinstance(prompt, str) else None)
        self._send(("add", rid, prompt, params))

    def abort(self, request_id: str) -> None:
        self._tracked.pop(request_id, None)
        self._send(("abort", request_id))

    async def metrics(self) -> bytes:
        """The engine's Prometheus text (its ServerMetrics lives next to the engine)."""
        if not self.running:
            return b""
        token = next(self._tokens)
        waiter = self._loop.create_future()
        self._metrics_waiters[token] = waiter
        self._send(("metrics", token))
        return await waiter

    # --- messages from the engine (event loop) --------------------------------------------------
    def _on_readable(self) -> None:
        while True:
            try:
                if not self._conn.poll():
                    return
                message = self._conn.recv()
            except (EOFError, OSError):
                self._on_exit("the engine process exited")
                return
            kind = message[0]
            if kind == "outputs":
                self._on_outputs(message[1])
            elif kind == "added":
                _, rid, prompt_ids = message
                sink, fut, prompt = self._admitting.pop(rid, (None, None, None))
                if fut is None or fut.done():  # its caller went away or was failed meanwhile
                    self._send(("abort", rid))
                    continue
                self._tracked[rid] = _Tracked(sink, prompt, prompt_ids)
                _settle(fut, None)
            elif kind == "rejected":
                _, rid, error = message
                entry = self._admitting.pop(rid, None)
                if entry is not None:
                    _settle(entry[1], ValueError(error))
            elif kind == "metrics":
                waiter = self._metrics_waiters.pop(message[1], None)
                if waiter is not None and not waiter.done():
                    waiter.set_result(message[2])
            elif kind == "failed":
                self._fail_all(EngineError(message[1]))
            elif kind == "exit":
                self._on_exit("the server is shutting down; the request was aborted")
                return

    def _on_outputs(self, deltas: list) -> None:
        items = []
        for rid, new_ids, new_logprobs, times, new_token_times, finished, reason, text, counts in deltas:
            tr = self._tracked.get(rid)
            if tr is None:  # aborted meanwhile
                continue
            tr.token_ids.extend(new_ids)
            if new_logprobs is not None:
                tr.logprobs = tr.logprobs if tr.logprobs is not None else []
                tr.logprobs.extend(new_logprobs)
            m = tr.metrics
            m.arrival_time, m.first_scheduled_time, m.first_token_time, m.finished_time = times
            m.token_times.extend(new_token_times)
            out = RequestOutput(
                request_id=rid, prompt=tr.prompt, prompt_token_ids=tr.prompt_token_ids, text=text,
                token_ids=list(tr.token_ids), finished=finished, finish_reason=reason, metrics=m,
                logprobs=None if tr.logprobs is None else list(tr.logprobs), num_preemptions=counts[0],
                num_cached_tokens=counts[1], num_draft_tokens=counts[2], num_accepted_tokens=counts[3],
            )  # fmt: skip
            if finished:
                del self._tracked[rid]
            items.append((tr.sink, out))
        _deliver(items)

    def _fail_all(self, error: Exception) -> None:
        for tr in self._tracked.values():
            tr.sink.put(error)
        self._tracked.clear()
        for _, fut, _ in self._admitting.values():
            _settle(fut, error)
        self._admitting.clear()

    def _on_exit(self, why: str) -> None:
        self._exited.set()
        self._loop.remove_reader(self._conn.fileno())
        self._fail_all(EngineError(why))
        for waiter in self._metrics_waiters.values():
            if not waiter.done():
                waiter.set_result(b"")
        self._metrics_waiters.clear()


# --- the engine process ---------------------------------------------------------------------------
def build_engine(path, device: str | None, threads: int, options: dict):
    """The LLMEngine either runner serves: torch on `threads` threads, freed memory kept in the heap
    (prefill temporaries, docs/serving.md), the model at `path`, an EngineConfig of `options`."""
    import torch

    from ..kernels import keep_freed_memory
    from .config import EngineConfig
    from .engine import LLMEngine
    from .llm import load_for_serving

    torch.set_num_threads(threads)
    keep_freed_memory()
    config = EngineConfig(**options)  # bad options fail before the model loads
    model, tokenizer = load_for_serving(path, device)
    return LLMEngine(model, tokenizer, config)


def engine_facts(engine) -> dict:
    """What the server says and checks about an engine it does not hold (ProcessEngine.facts)."""
    return {
        "max_model_len": engine.max_model_len,
        "vocab_size": engine.vocab_size,
        "max_seqs": engine.cache.max_seqs,
        "weight_bytes": engine.weight_bytes,
    }


def engine_main(conn, spec: EngineLaunch) -> None:
    """The engine process: build the engine, then step it and answer the server until told to stop
    or until the pipe closes."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group; the server drains us
    try:
        from ..kernels import use_kernels
        from .server_metrics import ServerMetrics

        if spec.kernels is not None:
            use_kernels(spec.kernels)
        engine = build_engine(spec.path, spec.device, spec.threads, spec.options)
        metrics = ServerMetrics(spec.model_name)
        metrics.observe(engine, [])
    except Exception as e:  # tell the server why, in words
        conn.send(("failed", f"the engine could not start: {type(e).__name__}: {e}"))
        conn.close()
        return
    facts, tokenizer = engine_facts(engine), engine.tokenizer
    conn.send(("ready", facts, tokenizer))
    try:
        _EngineLoop(conn, engine, metrics).run()
    except (EOFError, BrokenPipeError, ConnectionResetError):
        pass  # the server is gone
    finally:
        conn.close()


class _EngineLoop:
    def __init__(self, conn, engine, metrics):
        self.conn, self.engine, self.metrics = conn, engine, metrics
        self.live: dict[str, tuple[int, bool]] = {}  # request id -> (tokens sent, logprobs asked)
        self.stop: str | None = None

    def run(self) -> None:
        engine = self.engine
        while True:
            self._commands(wait=not engine.has_unfinished() and self.stop is None)
            if self.stop == "abort" or (self.stop == "drain" and not self.live):
                break
            if not engine.has_unfinished():
                continue
            try:
                outputs = engine.step()
            except Exception as e:  # a bug or OOM: fail what is in flight, keep serving
                self._fail_all(f"engine step failed: {type(e).__name__}: {e}")
                continue
            self.conn.send(("outputs", [self._delta(out) for out in outputs if out.request_id in self.live]))
            self.metrics.observe(engine, outputs)
        self._fail_all(None)
        self.conn.send(("exit",))

    def _commands(self, wait: bool) -> None:
        changed = False
        while self.conn.poll(0.5 if wait and not changed else 0):
            message = self.conn.recv()
            changed = True
            kind = message[0]
            if kind == "add":
                _, rid, prompt, params = message
                try:
                    self.engine.add_request(prompt, params, request_id=rid)
                except Exception as e:  # ValueError: the request's fault; anything else: ours
                    self.conn.send(("rejected", rid, str(e)))
                    continue
                self.live[rid] = (0, params.logprobs is not None)
                self.conn.send(("added", rid, self.engine.requests[rid].prompt_token_ids))
            elif kind == "abort":
                self.engine.abort(message[1])
                self.live.pop(message[1], None)
            elif kind == "metrics":
                self.conn.send(("metrics", message[1], self.metrics.render()))
            elif kind == "stop":
                if self.stop != "abort":
                    self.stop = message[1]
        if changed:
            self.metrics.observe(self.engine, [])

    def _delta(self, out: RequestOutput) -> tuple:
        sent, with_logprobs = self.live[out.request_id]
        if out.finished:
            del self.live[out.request_id]
        else:
            self.live[out.request_id] = (len(out.token_ids), with_logprobs)
        m = out.metrics
        return (
            out.request_id,
            out.token_ids[sent:],
            out.logprobs[sent:] if with_logprobs and out.logprobs is not None else None,
            (m.arrival_time, m.first_scheduled_time, m.first_token_time, m.finished_time),
            m.token_times[sent:],
            out.finished,
            out.finish_reason,
            out.text,
            (out.num_preemptions, out.num_cached_tokens, out.num_draft_tokens, out.num_accepted_tokens),
        )

    def _fail_all(self, message: str | None) -> None:
        """Abort every request in flight; tell the server why (None: it is stopping, and says so)."""
        for rid in list(self.live):
            self.engine.abort(rid)
        self.live.clear()
        self.metrics.observe(self.engine, [])
        if message is not None:
            self.conn.send(("failed", message))
