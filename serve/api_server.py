"""The OpenAI-compatible HTTP server (FastAPI): completions, chat, models, health, metrics.

    app = build_app(LLMEngine(model, tokenizer, config), ServerOptions(model_name="tiny"))
    uvicorn.run(app, host="127.0.0.1", port=8000)

`build_app` takes the engine itself (run on a thread of this process: serve/async_engine.py) or a
launched ProcessEngine (the engine in a process of its own: serve/engine_process.py); the routes
see the same interface either way.

Every `/v1/*` route checks the API key (when one is set), reads the body under a size limit,
parses it strictly (serve/api_protocol.py), checks the prompt against the context, and only then
hands the request to the engine runner. Errors are OpenAI-style bodies
with a 4xx status; the server keeps serving. A client that goes away mid-request has its request
aborted, which frees its cache blocks and slot. See docs/serving.md ("HTTP server").
"""

from __future__ import annotations

import asyncio
import hmac
import json
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from .api_protocol import ApiError, ChatCompletionRequest, CompletionRequest, parse
from .async_engine import AsyncEngine, EngineError, RequestGroup
from .chat_template import render_chat
from .detokenize import TextDeltas
from .engine import LLMEngine
from .engine_process import ProcessEngine
from .request import RequestOutput
from .server_metrics import CONTENT_TYPE, ServerMetrics


@dataclass
class ServerOptions:
    model_name: str
    api_key: str | None = None
    max_body_bytes: int = 4 * 2**20  # a 128K-token prompt as JSON token ids fits


@dataclass
class _Choice:
    """One engine request behind an HTTP response: its choice index and its text deltas."""

    index: int
    deltas: TextDeltas


def build_app(engine: LLMEngine | ProcessEngine, options: ServerOptions) -> FastAPI:
    if isinstance(engine, ProcessEngine):
        runner = engine  # its metrics live next to the engine, in its process
    else:
        metrics = ServerMetrics(options.model_name)
        runner = AsyncEngine(engine, on_step=metrics.observe, render=metrics.render)

    @asynccontextmanager
    async def lifespan(app):
        runner.start()
        yield
        # uvicorn has already let open requests finish (its graceful-shutdown timeout); abort the rest.
        await asyncio.to_thread(runner.shutdown, False)

    app = FastAPI(title="attnlab", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.runner = runner
    api = _Api(runner, options)

    @app.exception_handler(ApiError)
    async def api_error(request, exc: ApiError):
        return JSONResponse(exc.body(), status_code=exc.status)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request, exc: StarletteHTTPException):
        return JSONResponse(ApiError(exc.status_code, str(exc.detail), code=None).body(), exc.status_code)

    @app.exception_handler(Exception)
    async def internal_error(request, exc: Exception):
        body = ApiError(500, f"internal error: {type(exc).__name__}", type="server_error").body()
        return JSONResponse(body, status_code=500)

    check_key = Depends(api.check_key)
    app.add_api_route("/v1/models", api.models, methods=["GET"], dependencies=[check_key])
    app.add_api_route("/v1/completions", api.completions, methods=["POST"], dependencies=[check_key])
    app.add_api_route("/v1/chat/completions", api.chat, methods=["POST"], dependencies=[check_key])

    @app.get("/health")
    async def health():
        if not runner.running:
            return JSONResponse({"status": "engine stopped"}, status_code=503)
        return {"status": "ok"}

    @app.get("/metrics")
    async def prometheus():
        return Response(await runner.metrics(), media_type=CONTENT_TYPE)

    return app


class _Api:
    def __init__(self, runner: AsyncEngine | ProcessEngine, options: ServerOptions):
        self.runner = runner
        self.options = options
        self.tokenizer = runner.tokenizer
        self.created = int(time.time())

    # --- checks ----------------------------------------------------------------------------------
    async def check_key(self, request: Request) -> None:
        key = self.options.api_key
        if key is None:
            return
        given = request.headers.get("authorization", "")
        scheme, _, token = given.partition(" ")
        ok = scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(), key.encode())
        if not ok:
            raise ApiError(401, "invalid or missing API key: send 'Authorization: Bearer KEY'",
                           code="invalid_api_key")  # fmt: skip

    async def read_json(self, request: Request):
        limit = self.options.max_body_bytes
        length = request.headers.get("content-length", "")
        if length.isdigit() and int(length) > limit:
            raise ApiError(413, f"request body of {length} bytes exceeds the limit of {limit} bytes")
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > limit:
                raise ApiError(413, f"request body exceeds the limit of {limit} bytes")
        try:
            return json.loads(body)
        except (ValueError, UnicodeDecodeError) as e:
            raise ApiError(400, f"the request body is not valid JSON: {e}") from None

    def check_model(self, name: str) -> None:
        if name != self.options.model_name:
            raise ApiError(404, f"the model {name!r} does not exist; this server has {self.options.model_name!r}",
                           "model", "model_not_found")  # fmt: skip

    def encode(self, prompt: str | list[int], param: str) -> list[int]:
        if isinstance(prompt, str):
            if self.tokenizer is None:
                raise ApiError(400, "this model has no tokenizer: send the prompt as token ids", param)
            ids = self.tokenizer(prompt, add_special_tokens=False)["input_ids"]
        else:
            ids = prompt
            vocab = self.runner.vocab_size
            bad = [t for t in ids if not 0 <= t < vocab]
            if bad:
                raise ApiError(400, f"token ids {bad[:5]} are outside the vocabulary [0, {vocab})", param)
        if not ids:
            raise ApiError(400, "the prompt is empty: give at least one token", param)
        return ids

    def max_tokens(self, ids: list[int], requested: int | None, param: str) -> int:
        limit = self.runner.max_model_len
        if requested is None:
            requested = limit - len(ids)
        if len(ids) + requested > limit:
            raise ApiError(
                400,
                f"this model's maximum context length is {limit} tokens, but {len(ids) + requested} were "
                f"requested ({len(ids)} in the prompt, {requested} for the completion); shorten the "
                "prompt or lower max_tokens",
                param if len(ids) >= limit else "max_tokens",
                "context_length_exceeded",
            )
        return requested

    # --- routes ----------------------------------------------------------------------------------
    async def models(self):
        card = {
            "id": self.options.model_name,
            "object": "model",
            "created": self.created,
            "owned_by": "attnlab",
            "max_model_len": self.runner.max_model_len,
        }
        return {"object": "list", "data": [card]}

    async def completions(self, request: Request):
        req = parse(CompletionRequest, await self.read_json(request))
        req.check()
        self.check_model(req.model)
        prompts = [self.encode(p, "prompt") for p in req.prompts()]
        jobs, choices = [], []
        for p, ids in enumerate(prompts):
            max_tokens = self.max_tokens(ids, req.max_tokens, "prompt")
            for k in range(req.n):
                params = req.sampling_params(max_tokens, req.logprobs, k)
                jobs.append((ids, params))
                choices.append(_Choice(p * req.n + k, TextDeltas(self.tokenizer, params.stop)))
        rid = f"cmpl-{uuid.uuid4().hex}"
        head = {"id": rid, "object": "text_completion", "created": int(time.time()), "model": req.model}
        group = await self._submit(rid, jobs)

        def choice(c: _Choice, out: RequestOutput, text: str, first: int) -> dict:
            return {
                "index": c.index,
                "text": text,
                "logprobs": None
                if req.logprobs is None
                else self._completion_logprobs(out, first, req.logprobs),
                "finish_reason": out.finish_reason,
            }

        usage_prompt = sum(len(ids) for ids in prompts)
        if req.stream:
            return self._stream(request, group, choices, head, req.include_usage, usage_prompt, choice)
        outs = await self._collect(request, group)
        if outs is None:
            return Response(status_code=499)
        body = dict(head, choices=[choice(c, o, o.text or "", 0) for c, o in zip(choices, outs, strict=True)])
        body["usage"] = _usage(usage_prompt, outs)
        return body

    async def chat(self, request: Request):
        req = parse(ChatCompletionRequest, await self.read_json(request))
        req.check()
        self.check_model(req.model)
        messages = [{"role": m.role, "content": m.text()} for m in req.messages]
        ids = self.encode(render_chat(self.tokenizer, messages), "messages")
        max_tokens = self.max_tokens(ids, req.requested_max_tokens, "messages")
        jobs, choices = [], []
        for k in range(req.n):
            params = req.sampling_params(max_tokens, req.num_logprobs, k)
            jobs.append((ids, params))
            choices.append(_Choice(k, TextDeltas(self.tokenizer, params.stop)))
        rid = f"chatcmpl-{uuid.uuid4().hex}"
        head = {"id": rid, "created": int(time.time()), "model": req.model}
        group = await self._submit(rid, jobs)

        def logprobs(out: RequestOutput, first: int) -> dict | None:
            return self._chat_logprobs(out, first, req.num_logprobs) if req.logprobs else None

        if req.stream:
            head = dict(head, object="chat.completion.chunk")
            started: set[int] = set()

            def chunk(c: _Choice, out: RequestOutput, text: str, first: int) -> dict:
                delta = {"content": text}
                if c.index not in started:  # the first chunk of a choice names the role
                    started.add(c.index)
                    delta = {"role": "assistant", "content": text}
                return {"index": c.index, "delta": delta, "logprobs": logprobs(out, first),
                        "finish_reason": out.finish_reason}  # fmt: skip

            return self._stream(request, group, choices, head, req.include_usage, len(ids), chunk)
        outs = await self._collect(request, group)
        if outs is None:
            return Response(status_code=499)
        body = dict(head, object="chat.completion", choices=[
            {"index": c.index, "message": {"role": "assistant", "content": o.text or ""},
             "logprobs": logprobs(o, 0), "finish_reason": o.finish_reason}
            for c, o in zip(choices, outs, strict=True)
        ])  # fmt: skip
        body["usage"] = _usage(len(ids), outs)
        return body

    # --- running a group of engine requests -------------------------------------------------------
    async def _submit(self, rid: str, jobs: list) -> RequestGroup:
        try:
            return await self.runner.submit(
                [(ids, params, f"{rid}-{i}") for i, (ids, params) in enumerate(jobs)]
            )
        except ValueError as e:
            raise ApiError(400, str(e)) from None
        except EngineError as e:
            raise ApiError(503, str(e), type="server_error") from None

    async def _collect(self, request: Request, group: RequestGroup) -> list[RequestOutput] | None:
        """Every request's final output, or None when the client went away (all aborted)."""
        final: dict[int, RequestOutput] = {}

        async def run():
            async for i, out in group:
                if out.finished:
                    final[i] = out

        task = asyncio.ensure_future(run())
        try:
            while not task.done():
                await asyncio.wait({task}, timeout=0.5)
                if not task.done() and await request.is_disconnected():
                    task.cancel()
                    return None
            try:
                task.result()
            except EngineError as e:
                raise ApiError(500, str(e), type="server_error") from None
            return [final[i] for i in range(len(final))]
        finally:
            group.abort()

    def _stream(
        self, request, group, choices, head, include_usage, prompt_tokens, build
    ) -> StreamingResponse:
        async def events() -> AsyncIterator[str]:
            outs: dict[int, RequestOutput] = {}
            try:
                async for i, out in group:
                    c = choices[i]
                    first = len(outs[i].token_ids) if i in outs else 0
                    outs[i] = out
                    text = c.deltas.delta(out)  # "" while held back; the chunk still marks the token
                    yield _sse(dict(head, choices=[build(c, out, text, first)]))
                if include_usage:
                    yield _sse(dict(head, choices=[], usage=_usage(prompt_tokens, list(outs.values()))))
            except EngineError as e:
                yield _sse(ApiError(500, str(e), type="server_error").body())
            finally:
                group.abort()  # no-op once all finished; frees the cache of a client that left
            yield "data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})  # fmt: skip

    # --- logprobs in the two OpenAI shapes ---------------------------------------------------------
    def _token_text(self, token: int) -> str:
        return self.tokenizer.decode([token]) if self.tokenizer is not None else str(token)

    def _completion_logprobs(self, out: RequestOutput, first: int, n: int) -> dict:
        tokens, chosen, tops, offsets = [], [], [], []
        offset = 0
        for token, entry in zip(out.token_ids[first:], (out.logprobs or [])[first:], strict=False):
            text = self._token_text(token)
            tokens.append(text)
            chosen.append(entry[token])
            tops.append({self._token_text(t): lp for t, lp in _top(entry, n)})
            offsets.append(offset)
            offset += len(text)
        return {"tokens": tokens, "token_logprobs": chosen, "top_logprobs": tops, "text_offset": offsets}

    def _chat_logprobs(self, out: RequestOutput, first: int, n: int) -> dict:
        content = []
        for token, entry in zip(out.token_ids[first:], (out.logprobs or [])[first:], strict=False):
            text = self._token_text(token)
            content.append({
                "token": text, "logprob": entry[token], "bytes": list(text.encode()),
                "top_logprobs": [
                    {"token": (s := self._token_text(t)), "logprob": lp, "bytes": list(s.encode())}
                    for t, lp in _top(entry, n)
                ],
            })  # fmt: skip
        return {"content": content}


def _top(entry: dict[int, float], n: int) -> list[tuple[int, float]]:
    """The n most likely tokens of one logprob entry (the engine's entry holds the top n plus the
    chosen token, which is the least likely of them when it is not in the top n)."""
    return sorted(entry.items(), key=lambda kv: -kv[1])[:n]


def _usage(prompt_tokens: int, outs: list[RequestOutput]) -> dict:
    """OpenAI's usage; `prompt_tokens_details.cached_tokens`: prompt tokens served from the prefix
    cache (with n choices, each choice's share of its prompt, so it never exceeds prompt_tokens)."""
    completion = sum(len(o.token_ids) for o in outs)
    asked = sum(len(o.prompt_token_ids) for o in outs)
    cached = sum(o.num_cached_tokens for o in outs) * prompt_tokens // asked if asked else 0
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion,
            "total_tokens": prompt_tokens + completion,
            "prompt_tokens_details": {"cached_tokens": cached}}  # fmt: skip


def _sse(payload: dict) -> str:
    return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n"
