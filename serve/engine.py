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

from ..quant import weight_bytes
from .cache_manager import CacheManager
from .config import EngineConfig
from .flops import PrefillCost
from .model_runner import ModelRunner
from .request import Metrics, Request, RequestOutput, Status, now
from .sampling import SamplingParams, sample
from .scheduler import Scheduler
from .speculative import Speculation


class LLMEngine:
    def __init__(self, model, tokenizer=None, config: EngineConfig | None = None, draft_model=None):
        """draft_model: the proposer of `speculative='draft'` (a loaded model; or config.draft_model)."""
        self.config = config = config or EngineConfig()
        self.model = model.eval()
        self.tokenizer = tokenizer
        device = next(model.parameters()).device
        self.max_model_len = config.max_model_len or model.config.max_position_embeddings
        self.weight_bytes = weight_bytes(model)  # as stored: an INT4 layer counts its packed bytes
        specs = [m.cache_spec() for m in model.mixers()]
        cost = PrefillCost(model).span if config.enable_prefix_caching else None
        self.cache = CacheManager(specs, config, model.dtype, device, self.max_model_len, cost)
        num_layers = model.config.num_hidden_layers
        if config.layer_groups is not None and config.layer_groups > num_layers:
            raise ValueError(
                f"layer_groups = {config.layer_groups}: must be at most the model's {num_layers} layers"
            )
        self.scheduler = Scheduler(
            self.cache, config.max_num_batched_tokens, config.schedule, num_layers, config.layer_groups
        )
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
        self.speculation = Speculation.build(self, draft_model) if config.speculative else None

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
            if self.speculation is not None:
                self.speculation.release(request_id)

    def has_unfinished(self) -> bool:
        return self.scheduler.has_unfinished()

    # --- one step ------------------------------------------------------------------------------
    def step(self) -> list[RequestOutput]:
        """Schedule, (propose drafts,) run one packed forward, sample or verify, and return the
        requests that got tokens."""
        scheduled = self.scheduler.schedule()
        cohort = self.scheduler.cohort  # layered prefill in flight (layered_prefill.py)
        if not scheduled and cohort is None:
            return []
        t0 = now()
        for req, _ in scheduled + (cohort.entries if cohort else []):
            if req.metrics.first_scheduled_time is None:
                req.metrics.first_scheduled_time = t0
        if self.speculation is not None:
            scheduled = self.speculation.propose(scheduled)
        captures = self._plan_checkpoints(scheduled)
        if cohort is not None and not cohort.planned:
            cohort.captures, cohort.planned = self._plan_checkpoints(cohort.entries), True
        # A cohort advances one group of layers per step; with no sequence to keep decoding, all
        # its remaining groups at once (splitting it would only delay its first tokens).
        groups = 1 if scheduled else len(cohort.groups) - cohort.next_group
        try:
            # [R, V]: a row per sequence (1 + k if drafted), and per cohort request if it finishes
            logits = self.runner.run(scheduled, captures, cohort, groups)
        except BaseException:
            for _, _, pages in captures:
                self.cache.prefix.free_pages(pages)
            for req, _ in scheduled:
                req.draft_tokens = []
            self.scheduler.abandon_cohort()
            raise
        if cohort is not None and cohort.done:  # its requests sample their first tokens now
            scheduled, captures = scheduled + cohort.entries, captures + cohort.captures
            self.scheduler.cohort = None
        emitted = self._sample_and_verify(scheduled, logits)  # [(request, tokens, their logits rows)]
        t1 = now()
        for req, tokens, rows in emitted:
            self._emit(req, tokens, rows, t1)
        prefix = self.cache.prefix
        for req, _ in scheduled:
            if prefix is not None:
                computed = min(req.num_computed, req.num_tokens)  # a stop may have cut accepted drafts
                prefix.insert(self.cache.holdings[req.request_id], req.all_token_ids, computed)
        for req, at, pages in captures:
            prefix.attach(self.cache.holdings[req.request_id], at, pages, len(req.prompt_token_ids))
        for req, _ in scheduled:
            self.cache.trim(req.request_id, req.num_computed)
        outputs = []
        for req, _, _ in emitted:
            if req.finish_reason is not None:
                req.metrics.finished_time = t1
                self.scheduler.finish(req)
                self.requests.pop(req.request_id, None)
            outputs.append(self.output(req))
        if self.speculation is not None:
            self.speculation.sync({r.request_id for r in self.scheduler.running})
        return outputs

    def _sample_and_verify(
        self, scheduled, logits: torch.Tensor
    ) -> list[tuple[Request, list[int], torch.Tensor]]:
        """Advance each sequence's progress; a sequence that completed its tokens samples one, a
        verified one keeps its accepted drafts plus one (speculative.py)."""
        done, rows_of, at = [], {}, 0
        for req, n in scheduled:
            r = 1 + len(req.draft_tokens)
            rows_of[req.request_id] = logits[at : at + r]
            at += r
            if req.draft_tokens:
                done.append(req)
                continue
            req.num_computed += n
            if req.num_computed == req.num_tokens:
                done.append(req)
        for req in done:  # end tokens are masked until min_tokens outputs
            masked = req.params.min_tokens - len(req.output_token_ids)  # rows to mask
            if req.end_token_ids and masked > 0:
                rows = rows_of[req.request_id].clone()  # (the forward's output is an inference tensor)
                rows[:masked, list(req.end_token_ids)] = float("-inf")
                rows_of[req.request_id] = rows
        plain = [r for r in done if not r.draft_tokens]
        tokens = {}
        if plain:
            last = torch.stack([rows_of[r.request_id][0] for r in plain])
            for req, token in zip(plain, sample(last, [r.params for r in plain], [r.generator for r in plain]),
                                  strict=True):  # fmt: skip
                tokens[req.request_id] = [token]
        for req in done:
            if req.draft_tokens:
                tokens[req.request_id] = self.speculation.verify(req, rows_of[req.request_id])
        return [(r, tokens[r.request_id], rows_of[r.request_id]) for r in done]

    def _emit(self, req: Request, tokens: list[int], rows: torch.Tensor, t: float) -> None:
        """Append tokens (with log-probabilities from their logits rows) until a stop condition."""
        for token, row in zip(tokens, rows, strict=False):
            if not req.output_token_ids:
                req.metrics.first_token_time = t
            req.output_token_ids.append(token)
            req.metrics.token_times.append(t)
            if req.params.logprobs is not None:
                logprobs = torch.log_softmax(row, -1)
                entry = {token: float(logprobs[token])}
                if req.params.logprobs:
                    top = logprobs.topk(req.params.logprobs)
                    entry.update(zip(top.indices.tolist(), top.values.tolist(), strict=False))
                req.output_logprobs.append(entry)
            self._check_stop(req)
            if req.finish_reason is not None:
                return

    def _plan_checkpoints(self, scheduled) -> list[tuple[Request, int, list[int]]]:
        """Prefix caching on a model with recurrent layers: the block boundaries this step reaches
        where a request's state is worth keeping (prefix_cache.py), each with its pages."""
        prefix, bs = self.cache.prefix, self.cache.block_size
        if prefix is None or self.cache.checkpoints is None:
            return []
        captures = []
        peers = shared_prefixes([req for req, n in scheduled if n > 1])
        for req, n in scheduled:
            holding, start = self.cache.holdings[req.request_id], req.num_computed
            peer = peers.get(req.request_id, 0) // bs * bs or None  # a branch point within this step
            for at in range((start // bs + 1) * bs, start + n + 1, bs):
                if prefix.wants_checkpoint(holding, req.all_token_ids, len(req.prompt_token_ids), at, peer):
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
            num_draft_tokens=req.num_draft_tokens,
            num_accepted_tokens=req.num_accepted_tokens,
        )


def shared_prefixes(reqs: list[Request]) -> dict[str, int]:
    """Request id -> the longest prefix its tokens share with another of `reqs` (requests prefilled
    in the same step branch there, and none has stored a state at the branch yet)."""
    if len(reqs) < 2:
        return {}
    ordered = sorted(reqs, key=lambda r: r.all_token_ids)  # a longest shared prefix is a neighbour's
    out = {r.request_id: 0 for r in reqs}
    for a, b in zip(ordered, ordered[1:], strict=False):
        x, y = a.all_token_ids, b.all_token_ids
        n = 0
        while n < min(len(x), len(y)) and x[n] == y[n]:
            n += 1
        out[a.request_id] = max(out[a.request_id], n)
        out[b.request_id] = max(out[b.request_id], n)
    return out
