"""`attnlab serve PATH`: start the engine (in a process of its own by default, or on a thread of
this one), run the OpenAI-compatible server under uvicorn until Ctrl-C / SIGTERM (open requests
drain for `drain_timeout` seconds, the rest abort)."""

from __future__ import annotations

import contextlib
import os
import signal
from dataclasses import dataclass
from pathlib import Path

import uvicorn

from ..common import human_bytes


@dataclass
class ServeOptions:
    path: Path
    host: str = "127.0.0.1"
    port: int = 8000
    api_key: str | None = None
    model_name: str | None = None  # default: PATH as given
    device: str | None = None
    max_body_bytes: int = 4 * 2**20
    drain_timeout: float = 30.0
    log_level: str = "info"
    threads: int | None = None  # torch threads; default: every core (engine process), all but one (thread)
    engine_process: bool = True  # the engine in a process of its own (engine_process.py)


def serve(options: ServeOptions, **engine_options) -> None:
    from .api_server import ServerOptions, build_app
    from .config import EngineConfig

    EngineConfig(**engine_options)  # bad options fail before the model loads
    name = options.model_name or str(options.path)
    cores = len(os.sched_getaffinity(0))
    if options.engine_process:
        from ..evals import resolve_model_dir
        from ..kernels import current_choice
        from .engine_process import EngineLaunch, ProcessEngine

        resolve_model_dir(options.path)  # a missing folder: said here, before a process starts

        # Measured on 2 cores (docs/serving.md): the engine process takes every core; the
        # HTTP loop, mostly waiting, fits between its steps.
        threads = options.threads or cores
        engine = ProcessEngine(
            EngineLaunch(options.path, options.device, threads, name, engine_options, current_choice())
        )
        engine.launch()
        facts = engine.facts
    else:
        from .engine_process import build_engine, engine_facts

        # On a thread, the engine shares the CPU with the HTTP loop: torch's OpenMP workers spin
        # while they wait, so every core would starve the loop (measured on 2 cores: 190 -> 392
        # output tok/s at 8 streaming clients with 1 thread instead of 2).
        threads = options.threads or max(1, cores - 1)
        engine = build_engine(options.path, options.device, threads, engine_options)
        facts = engine_facts(engine)
    app = build_app(engine, ServerOptions(name, options.api_key, options.max_body_bytes))
    where = "its own process" if options.engine_process else "a thread"
    print(
        f"attnlab serve: {name} ({facts['max_model_len']} tokens of context, {facts['max_seqs']} sequences "
        f"at most, weights {human_bytes(facts['weight_bytes'])}; engine on {where}, {threads} threads) on "
        f"http://{options.host}:{options.port}/v1",
        flush=True,
    )
    server = _Server(
        uvicorn.Config(
            app,
            host=options.host,
            port=options.port,
            log_level=options.log_level,
            timeout_graceful_shutdown=options.drain_timeout,
        )
    )
    server.run()
    if server.stopped_by:
        names = ", ".join(signal.Signals(s).name for s in server.stopped_by)
        print(f"attnlab serve: stopped by {names} after draining open requests", flush=True)
    if not server.started:
        raise SystemExit(1)  # e.g. the port was taken (uvicorn has said so)


class _Server(uvicorn.Server):
    """uvicorn's server, except that a stop by SIGTERM/SIGINT after a clean drain exits with 0 (a
    supervisor asked for it) instead of re-raising the signal. A second Ctrl-C still forces exit."""

    stopped_by: list[int] = []

    @contextlib.contextmanager
    def capture_signals(self):
        with super().capture_signals():
            yield
            self.stopped_by = list(self._captured_signals)
            self._captured_signals.clear()
