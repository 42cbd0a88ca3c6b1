"""AsyncEngine: the LLMEngine on a thread of its own, fed and read from asyncio (the HTTP server).

The engine is not thread-safe, so only its thread touches it. Callers put commands on a queue
(add, abort) and get tokens back on an asyncio queue per request:

    engine = AsyncEngine(LLMEngine(model, tokenizer, config)); engine.start()
    group = await engine.submit([(prompt, params, "req-1"), ...])   # ValueError if rejected
    async for index, out in group: ...     # a RequestOutput after each new token of any request
    group.abort()                          # frees the unfinished requests' blocks and slots

`submit` raises before any output when the engine rejects a request (empty prompt, too long, bad
token ids), so an HTTP handler can answer 400 before it starts a stream.
A failing step fails every request in flight with EngineError and the engine keeps serving.
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass

from .engine import LLMEngine
from .sampling import SamplingParams


class EngineError(RuntimeError):
    """The engine failed while running a request (not the request's fault)."""


@dataclass
class _Sink:
    """Where the engine thread delivers one request's outputs: (index, output or exception)."""

    loop: asyncio.AbstractEventLoop
    queue: asyncio.Queue
    index: int

    def put(self, item) -> None:
        self.loop.call_soon_threadsafe(self.queue.put_nowait, (self.index, item))


class RequestGroup:
    """The requests of one submit: iterate for (index, RequestOutput) after each new token of any of
    them, until all have finished; `abort()` (safe to repeat) stops the unfinished ones."""

    def __init__(self, engine: AsyncEngine, request_ids: list[str]):
        self.engine, self.request_ids = engine, request_ids
        self.queue: asyncio.Queue = asyncio.Queue()
        self.unfinished = set(range(len(request_ids)))

    async def __aiter__(self):
        while self.unfinished:
            index, item = await self.queue.get()
            if isinstance(item, BaseException):
                self.abort()
                raise item
            if item.finished:
                self.unfinished.discard(index)
            yield index, item

    def abort(self) -> None:
        for i in list(self.unfinished):
            self.engine.abort(self.request_ids[i])
        self.unfinished.clear()


class AsyncEngine:
    def __init__(
        self,
        engine: LLMEngine,
        on_step: Callable[[LLMEngine, list], None] | None = None,
        render: Callable[[], bytes] | None = None,
    ):
        """on_step(engine, outputs): called on the engine thread after every step and command
        batch (metrics), and once at start; outputs may be empty. render(): the metrics text
        `metrics()` returns."""
        self.engine = engine
        self.on_step, self.render = on_step, render
        self._commands: queue.SimpleQueue = queue.SimpleQueue()
        self._wake = threading.Event()
        self._sinks: dict[str, _Sink] = {}
        self._stop: str | None = None  # None, "drain" or "abort"
        self._thread = threading.Thread(target=self._run, name="attnlab-engine", daemon=True)

    # --- facts the routes read (serve/engine_process.py's ProcessEngine has the same) ------------
    @property
    def tokenizer(self):
        return self.engine.tokenizer

    @property
    def vocab_size(self) -> int:
        return self.engine.vocab_size

    @property
    def max_model_len(self) -> int:
        return self.engine.max_model_len

    async def metrics(self) -> bytes:
        return b"" if self.render is None else self.render()

    # --- any thread ----------------------------------------------------------------------------
    def start(self) -> None:
        self._observe([])
        self._thread.start()

    def abort(self, request_id: str) -> None:
        self._send(("abort", request_id))

    def shutdown(self, drain: bool = True, timeout: float | None = None) -> None:
        """Stop the engine thread: after the requests in flight finish (drain) or at once, aborting
        them. Waits up to `timeout` seconds, then aborts whatever is left."""
        self._send(("stop", "drain" if drain else "abort"))
        self._thread.join(timeout)
        if self._thread.is_alive():
            self._send(("stop", "abort"))
            self._thread.join()

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def _send(self, command: tuple) -> None:
        self._commands.put(command)
        self._wake.set()

    # --- asyncio side ---------------------------------------------------------------------------
    async def submit(self, requests: list[tuple[str | list[int], SamplingParams, str]]) -> RequestGroup:
        """Admit (prompt, params, request_id) requests as one group (an HTTP request's choices).
        Raises ValueError, with nothing left running, when the engine rejects any of them."""
        return await submit_group(
            self, requests, self.running and self._stop is None,
            lambda rid, prompt, params, sink, fut: self._send(("add", rid, prompt, params, sink, fut)),
        )  # fmt: skip

    # --- the engine thread ----------------------------------------------------------------------
    def _run(self) -> None:
        engine = self.engine
        while True:
            self._apply_commands()
            if self._stop == "abort" or (self._stop == "drain" and not self._sinks):
                break
            if not engine.has_unfinished():
                self._wake.wait(0.5)
                self._wake.clear()
                continue
            try:
                outputs = engine.step()
            except Exception as e:  # a bug or OOM: fail what is in flight, keep serving
                self._fail_all(EngineError(f"engine step failed: {type(e).__name__}: {e}"))
                continue
            # One wake-up of each event loop per step, however many of its requests got a token.
            batches: dict = {}
            for out in outputs:
                sink = self._sinks.get(out.request_id)
                if sink is not None:
                    batches.setdefault(sink.loop, []).append((sink, out))
                    if out.finished:
                        del self._sinks[out.request_id]
            for loop, items in batches.items():
                loop.call_soon_threadsafe(_deliver, items)
            self._observe(outputs)
        self._fail_all(EngineError("the server is shutting down; the request was aborted"))

    def _apply_commands(self) -> None:
        changed = False
        while True:
            try:
                command = self._commands.get_nowait()
            except queue.Empty:
                break
            changed = True
            kind = command[0]
            if kind == "add":
                _, request_id, prompt, params, sink, admitted = command
                try:
                    self.engine.add_request(prompt, params, request_id=request_id)
                except Exception as e:  # ValueError: the request's fault; anything else: ours
                    sink.loop.call_soon_threadsafe(_settle, admitted, e)
                    continue
                self._sinks[request_id] = sink
                sink.loop.call_soon_threadsafe(_settle, admitted, None)
            elif kind == "abort":
                self.engine.abort(command[1])
                self._sinks.pop(command[1], None)
            elif kind == "stop":
                if self._stop != "abort":
                    self._stop = command[1]
        if changed:
            self._observe([])

    def _fail_all(self, error: Exception) -> None:
        for request_id, sink in list(self._sinks.items()):
            self.engine.abort(request_id)
            sink.put(error)
        self._sinks.clear()
        self._observe([])

    def _observe(self, outputs: list) -> None:
        if self.on_step is not None:
            self.on_step(self.engine, outputs)


async def submit_group(
    runner, requests: list[tuple[str | list[int], SamplingParams, str]], accepting: bool,
    send: Callable[[str, str | list[int], SamplingParams, _Sink, asyncio.Future], None],
) -> RequestGroup:  # fmt: skip
    """Both runners' `submit`: hand each (prompt, params, request_id) to the engine with `send(id,
    prompt, params, sink, admitted)`, wait until the engine has answered every one, and return the
    group; or raise the first refusal with the whole group aborted (also when the caller is
    cancelled while it waits). `accepting`: whether the runner takes requests now."""
    if not accepting:
        raise EngineError("the engine is not running (the server is shutting down)")
    loop = asyncio.get_running_loop()
    group = RequestGroup(runner, [rid for _, _, rid in requests])
    admitted = [loop.create_future() for _ in requests]
    for i, ((prompt, params, rid), fut) in enumerate(zip(requests, admitted, strict=True)):
        send(rid, prompt, params, _Sink(loop, group.queue, i), fut)
    try:
        results = await asyncio.gather(*admitted, return_exceptions=True)
    except BaseException:  # cancelled while waiting
        group.abort()
        raise
    errors = [r for r in results if isinstance(r, BaseException)]
    if errors:
        group.abort()
        raise errors[0]
    return group


def _deliver(items: list) -> None:
    for sink, out in items:
        sink.queue.put_nowait((sink.index, out))


def _settle(future: asyncio.Future, error: Exception | None) -> None:
    if future.done():  # the caller went away meanwhile
        return
    if error is None:
        future.set_result(None)
    else:
        future.set_exception(error)
