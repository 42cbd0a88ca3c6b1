"""LLMEngine: requests in, tokens out, one `step()` at a time (scheduler -> runner -> sampler).

    engine = LLMEngine(model, tokenizer, EngineConfig(cache_memory="512MiB"))
    engine.add_request("Hello", SamplingParams(max_tokens=8), request_id="r1")
    while engine.has_unfinished():
        for out in engine.step(): ...

Requests can arrive between steps and be aborted at any time; both free their blocks and slots.
"""

from __future__ import annotations

import itertools

import torch

from .cache_manager import CacheManager
from .config import EngineConfig
from .flops import PrefillCost
from .model_runner import ModelRunner
from .request import Metrics, Request, RequestOutput, Status, now
from .sampling import SamplingParams, sample
from .scheduler import Scheduler


class LLMEngine:
    def __init__(self, model, tokenizer=None, config: EngineConfig | None = None):
        self.config = config = config or EngineConfig()
        self.model = model.eval()
        self.tokenizer = tokenizer
        device = next(model.parameters()).device
        self.max_model_len = config.max_model_len or model.config.max_position_embeddings
        specs = [m.cache_spec() for m in model.mixers()]
        cost = PrefillCost(model).span if config.enable_prefix_caching else None
        self.cache = CacheManager(specs, config, model.dtype, device, self.max_model_len, cost)
        self.scheduler = Scheduler(self.cache, config.max_num_batched_tokens)
        self.runner = ModelRunner(model, self.cache)
        self.requests: dict[str, Request] = {}
        self.vocab_size = model.config.vocab_size
        eos = (
            getattr(model.generation_config, "eos_token_id", None)
            if hasattr(model, "generation_config")
            else None
        )
        if eos is None and tokenizer is not None:
            eos = tokenizer.eos_token_id
        self.eos_token_id = eos[0] if isinstance(eos, list) else eos
        self._ids = itertools.count()

    # --- requests ------------------------------------------------------------------------------
    def add_request(
        self,
        prompt: str | list[int],
        params: SamplingParams | None = None,
        request_id: str | None = None,
        arrival_time: float | None = None,
    ) -> str:
        params = params or SamplingParams()
        request_id = request_id if request_id is not None else f"req-{next(self._ids)}"
        if request_id in self.requests:
            raise ValueError(f"request_id {request_id!r} is already in use")
        text, ids = self._encode(prompt)
        bad = [t for t in params.stop_token_ids if t >= self.vocab_size]
        if bad:
            raise ValueError(f"stop_token_ids {bad} are outside the vocabulary [0, {self.vocab_size})")
        if len(ids) + params.max_tokens > self.max_model_len:
            raise ValueError(
                f"prompt ({len(ids)} tokens) + max_tokens ({params.max_tokens}) = {len(ids) + params.max_tokens} "
                f"exceeds max_model_len = {self.max_model_len}"
            )
        gen = None
        if not params.greedy:
            gen = torch.Generator().manual_seed(
                params.seed if params.seed is not None else int(torch.randint(2**62, ()))
            )
        req = Request(
            request_id, text, ids, params, self.eos_token_id, Metrics(arrival_time or now()), generator=gen
        )
        self.requests[request_id] = req
        self.scheduler.add(req)
        return request_id

    def _encode(self, prompt) -> tuple[str | None, list[int]]:
        if isinstance(prompt, str):
            if self.tokenizer is None:
                raise ValueError("prompt is a string but this model has no tokenizer; pass token ids")
            ids = self.tokenizer(prompt, add_special_tokens=False)["input_ids"]
            text = prompt
        else:
            ids, text = list(prompt), None
            bad = [
                t
                for t in ids
                if not isinstance(t, int) or isinstance(t, bool) or not 0 <= t < self.vocab_size
            ]
            if bad:
                raise ValueError(
                    f"prompt token ids must be integers in [0, {self.vocab_size}); got {bad[:5]}"
                )
        if not ids:
            raise ValueError("prompt is empty: give at least one token")
        return text, ids

    def abort(self, request_id: str) -> None:
        req = self.requests.pop(request_id, None)
        if req is not None and req.status is not Status.FINISHED:
            req.finish_reason = "abort"
            self.scheduler.finish(req)

    def has_unfinished(self) -> bool:
        return self.scheduler.has_unfinished()

    # --- one step ------------------------------------------------------------------------------
    def step(self) -> list[RequestOutput]:
        """Schedule, run one packed forward, sample, and return the requests that got a token."""
        scheduled = self.scheduler.schedule()
        if not scheduled:
            return []
        t0 = now()
        for req, _ in scheduled:
            if req.metrics.first_scheduled_time is None:
                req.metrics.first_scheduled_time = t0
        captures = self._plan_checkpoints(scheduled)
        try:
            logits = self.runner.run(scheduled, captures)  # [N, V]
        except BaseException:
            for _, _, pages in captures:
                self.cache.prefix.free_pages(pages)
            raise
        prefix = self.cache.prefix
        for req, n in scheduled:
            req.num_computed += n
            if prefix is not None:
                prefix.insert(self.cache.holdings[req.request_id], req.all_token_ids, req.num_computed)
        for req, at, pages in captures:
            prefix.attach(self.cache.holdings[req.request_id], at, pages, len(req.prompt_token_ids))
        for req, _ in scheduled:
            self.cache.trim(req.request_id, req.num_computed)
        done = [i for i, (req, _) in enumerate(scheduled) if req.num_computed == req.num_tokens]
        if not done:
            return []
        reqs = [scheduled[i][0] for i in done]
        logits = logits[done]
        for row, req in enumerate(reqs):
            if len(req.output_token_ids) < req.params.min_tokens and req.end_token_ids:
                logits[row, list(req.end_token_ids)] = float("-inf")
        tokens = sample(logits, [r.params for r in reqs], [r.generator for r in reqs])
        logprobs = torch.log_softmax(logits, -1) if any(r.params.logprobs is not None for r in reqs) else None
        t1 = now()
        outputs = []
        for row, (req, token) in enumerate(zip(reqs, tokens, strict=True)):
            if not req.output_token_ids:
                req.metrics.first_token_time = t1
            req.output_token_ids.append(token)
            req.metrics.token_times.append(t1)
            if req.params.logprobs is not None:
                top = logprobs[row].topk(req.params.logprobs) if req.params.logprobs else None
                entry = {token: float(logprobs[row, token])}
                if top is not None:
                    entry.update(zip(top.indices.tolist(), top.values.tolist(), strict=False))
                req.output_logprobs.append(entry)
            self._check_stop(req)
            if req.finish_reason is not None:
                req.metrics.finished_time = t1
                self.scheduler.finish(req)
                self.requests.pop(req.request_id, None)
            outputs.append(self.output(req))
        return outputs

    def _plan_checkpoints(self, scheduled) -> list[tuple[Request, int, list[int]]]:
        """Prefix caching on a model with recurrent layers: the block boundaries this step reaches
        where a request's state is worth keeping (prefix_cache.py), each with its pages."""
        prefix, bs = self.cache.prefix, self.cache.block_size
        if prefix is None or self.cache.checkpoints is None:
            return []
        captures = []
        for req, n in scheduled:
            holding, start = self.cache.holdings[req.request_id], req.num_computed
            for at in range((start // bs + 1) * bs, start + n + 1, bs):
                if prefix.wants_checkpoint(holding, req.all_token_ids, len(req.prompt_token_ids), at):
                    pages = prefix.take_checkpoint_pages()
                    if pages is not None:
                        captures.append((req, at, pages))
        return captures

    def _check_stop(self, req: Request) -> None:
        p, token, n = req.params, req.output_token_ids[-1], len(req.output_token_ids)
        if n >= p.min_tokens and token in req.end_token_ids:
            req.finish_reason = "stop"
        elif p.stop and self.tokenizer is not None and n >= p.min_tokens:
            text = self.decode(req.output_token_ids)
            hits = [i for s in p.stop if (i := text.find(s)) >= 0]
            if hits:
                req.finish_reason, req.stop_text_end = "stop", min(hits)
        if req.finish_reason is None and n >= p.max_tokens:
            req.finish_reason = "length"

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True)

    def output(self, req: Request) -> RequestOutput:
        finished = req.finish_reason is not None
        text = None
        if finished and self.tokenizer is not None:  # streaming callers decode tokens themselves
            ids = req.output_token_ids
            if req.finish_reason == "stop" and ids and ids[-1] in req.end_token_ids:
                ids = ids[:-1]  # the end token is not text
            text = self.decode(ids)
            if req.stop_text_end is not None:
                text = text[: req.stop_text_end]
        return RequestOutput(
            request_id=req.request_id,
            prompt=req.prompt,
            prompt_token_ids=req.prompt_token_ids,
            text=text,
            token_ids=list(req.output_token_ids),
            finished=finished,
            finish_reason=req.finish_reason,
            metrics=req.metrics,
            logprobs=req.output_logprobs if req.params.logprobs is not None else None,
            num_preemptions=req.num_preemptions,
            num_cached_tokens=req.num_cached_tokens,
        )
