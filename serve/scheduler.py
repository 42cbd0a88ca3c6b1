"""The scheduler: continuous batching with chunked prefill, first come first served.

Each step has a token budget. Running sequences go first, in arrival order: a decode takes one
token, a prompt still being prefilled takes the next chunk that fits. Then waiting requests are
admitted while the budget, `max_seqs` and the cache allow. A running sequence that needs a block
when none is free preempts the youngest running sequence (its cache is freed; it goes back to the
front of the queue and is recomputed from its tokens later), so the engine never runs out of
memory. A request computes all its tokens, then samples one; a decode is a request with exactly
one token left to compute.

With `schedule="layered"` (layered_prefill.py) prompts are not chunked: waiting requests are
admitted together as a cohort, whole, when no cohort is in flight, and the engine advances the
cohort one group of layers per step while the running decodes take every step as above.
"""

from __future__ import annotations

from collections import deque

from .cache_manager import CacheManager
from .layered_prefill import Cohort, groups_for, split_layers
from .request import Request, Status


class Scheduler:
    def __init__(
        self,
        cache: CacheManager,
        max_num_batched_tokens: int,
        schedule: str = "chunked",
        num_layers: int = 1,
        layer_groups: int | None = None,
    ):
        self.cache = cache
        self.token_budget = max_num_batched_tokens
        self.waiting: deque[Request] = deque()
        self.running: list[Request] = []
        self.num_preemptions = 0
        self.layered, self.num_layers, self.layer_groups = schedule == "layered", num_layers, layer_groups
        self.cohort: Cohort | None = None  # the requests in layered prefill

    def add(self, request: Request) -> None:
        self.waiting.append(request)

    def has_unfinished(self) -> bool:
        return bool(self.waiting or self.running)

    def schedule(self) -> list[tuple[Request, int]]:
        """-> (request, new tokens) for this step: one-token sequences first, then prefill chunks.
        Layered: these run every layer; `self.cohort` (if any) is the step's layered prefill."""
        budget, batch, preempted = self.token_budget, [], False
        for req in list(self.running):
            if budget == 0:
                break
            if req.status is not Status.RUNNING:  # preempted earlier in this loop
                continue
            if self.cohort is not None and self.cohort.holds(req):
                continue
            n = min(req.num_tokens - req.num_computed, budget)
            while not self.cache.can_extend(req.request_id, req.num_computed, n):
                victim = self.running[-1]
                self._preempt(victim)
                preempted = True
                if victim is req:
                    break
            if req.status is Status.RUNNING:
                self.cache.extend(req.request_id, req.num_computed, n)
                batch.append((req, n))
                budget -= n
        if self.layered:
            if self.cohort is None and not preempted:
                self._admit_cohort()
        else:  # No admissions in a step that had to preempt: memory is already short.
            self._admit_chunks(batch, budget, preempted)
        batch.sort(key=lambda item: item[1] != 1)  # stable: decodes first, in order
        return batch

    def _admit(self, req: Request, limit: int | None) -> int | None:
        """Admit the first waiting request with up to `limit` new tokens (None: all of them) if the
        cache has room: -> how many it computes this step, or None (it stays waiting)."""
        if not self.cache.has_free_slot():
            return None
        cached = self.cache.admit(req.request_id, req.all_token_ids)  # prefix-cache hit, if any
        n = req.num_tokens - cached if limit is None else min(req.num_tokens - cached, limit)
        if not self.cache.can_extend(req.request_id, cached, n):
            self.cache.free(req.request_id)
            return None
        self.waiting.popleft()
        self.cache.extend(req.request_id, cached, n)
        req.status, req.num_computed, req.num_cached_tokens = Status.RUNNING, cached, cached
        if self.cache.prefix is not None:
            self.cache.prefix.count(req.num_tokens, cached)
        self.running.append(req)
        return n

    def _admit_chunks(self, batch: list, budget: int, preempted: bool) -> None:
        while self.waiting and budget > 0 and not preempted and len(self.running) < self.cache.max_seqs:
            n = self._admit(self.waiting[0], budget)
            if n is None:
                break
            batch.append((self.running[-1], n))
            budget -= n

    def _admit_cohort(self) -> None:
        """Waiting requests, whole, while the cohort stays within G x the token budget (G fixed) or
        L x it (G derived), and the cache and `max_seqs` allow; at least one request."""
        limit = self.token_budget * (self.layer_groups or self.num_layers)
        entries, tokens = [], 0
        while self.waiting and len(self.running) < self.cache.max_seqs:
            req = self.waiting[0]
            if entries and tokens + req.num_tokens > limit:  # (a prefix-cache hit not counted off)
                break
            n = self._admit(req, None)
            if n is None:
                break
            entries.append((req, n))
            tokens += n
        if entries:
            entries.sort(key=lambda item: item[1] != 1)  # one-token remainders run as decodes
            g = groups_for(tokens, self.token_budget, self.num_layers, self.layer_groups)
            self.cohort = Cohort(entries, split_layers(self.num_layers, g))

    def _leave_cohort(self, req: Request) -> None:
        """`req` stops its layered prefill: its hidden states and planned checkpoints go."""
        if self.cohort is None or not self.cohort.holds(req):
            return
        for pages in self.cohort.drop(req):
            self.cache.prefix.free_pages(pages)
        if not self.cohort.entries:
            self.cohort = None

    def abandon_cohort(self) -> None:
        """A failed step left the cohort's layers half written: recompute its requests later."""
        while self.cohort is not None:
            self._preempt(self.cohort.entries[0][0])

    def _preempt(self, req: Request) -> None:
        self._leave_cohort(req)
        self.running.remove(req)
        self.cache.free(req.request_id)
        req.status, req.num_computed = Status.WAITING, 0
        req.num_preemptions += 1
        self.num_preemptions += 1
        self.waiting.appendleft(req)

    def finish(self, req: Request) -> None:
        """Drop a finished or aborted request wherever it is, and free what it holds."""
        self._leave_cohort(req)
        if req in self.running:
            self.running.remove(req)
        elif req in self.waiting:
            self.waiting.remove(req)
        self.cache.free(req.request_id)
        req.status = Status.FINISHED
