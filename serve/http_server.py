"""`attnlab serve PATH`: load a model, build the engine, run the OpenAI-compatible server under
uvicorn until Ctrl-C / SIGTERM (open requests drain for `drain_timeout` seconds, the rest abort)."""

from __future__ import annotations

import contextlib
import os
import signal
from dataclasses import dataclass
from pathlib import Path

import torch
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
    threads: int | None = None  # torch threads; default: every core but one (the HTTP loop's)


def serve(options: ServeOptions, **engine_options) -> None:
    from .api_server import ServerOptions, build_app
    from .config import EngineConfig
    from .engine import LLMEngine
    from .llm import load_for_serving

    config = EngineConfig(**engine_options)  # bad options fail before the model loads
    # The HTTP loop and the engine share the CPU: torch's OpenMP workers spin while they wait, so
    # giving them every core starves the loop (measured here on 2 cores: 190 -> 392 output tok/s
    # at 8 streaming clients with 1 thread instead of 2). vLLM's CPU server does the same.
    torch.set_num_threads(options.threads or max(1, len(os.sched_getaffinity(0)) - 1))
    model, tokenizer = load_for_serving(options.path, options.device)
    engine = LLMEngine(model, tokenizer, config)
    name = options.model_name or str(options.path)
    app = build_app(engine, ServerOptions(name, options.api_key, options.max_body_bytes))
    print(
        f"attnlab serve: {name} ({engine.max_model_len} tokens of context, "
        f"{engine.cache.max_seqs} sequences at most, weights {human_bytes(engine.weight_bytes)}) on "
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
