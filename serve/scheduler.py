"""The scheduler: continuous batching with chunked prefill, first come first served.

Each step has a token budget. Running sequences go first, in arrival order: a decode takes one
token, a prompt still being prefilled takes the next chunk that fits. Then waiting requests are
admitted while the budget, `max_seqs` and the cache allow. A running sequence that needs a block
when none is free preempts the youngest running sequence (its cache is freed; it goes back to the
front of the queue and is recomputed from its tokens later), so the engine never runs out of
memory. A request computes all its tokens, then samples one; a decode is a request with exactly
one token left to compute.
"""

from __future__ import annotations

from collections import deque

from .cache_manager import CacheManager
from .request import Request, Status


class Scheduler:
    def __init__(self, cache: CacheManager, max_num_batched_tokens: int):
        self.cache = cache
        self.token_budget = max_num_batched_tokens
        self.waiting: deque[Request] = deque()
        self.running: list[Request] = []
        self.num_preemptions = 0

    def add(self, request: Request) -> None:
        self.waiting.append(request)

    def has_unfinished(self) -> bool:
        return bool(self.waiting or self.running)

    def schedule(self) -> list[tuple[Request, int]]:
        """-> (request, new tokens) for this step: one-token sequences first, then prefill chunks."""
        budget, batch, preempted = self.token_budget, [], False
        for req in list(self.running):
            if budget == 0:
                break
            if req.status is not Status.RUNNING:  # preempted earlier in this loop
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
        # No admissions in a step that had to preempt: memory is already short.
        while self.waiting and budget > 0 and not preempted and len(self.running) < self.cache.max_seqs:
            req = self.waiting[0]
            if not self.cache.has_free_slot():
                break
            cached = self.cache.admit(req.request_id, req.all_token_ids)  # prefix-cache hit, if any
            n = min(req.num_tokens - cached, budget)
            if not self.cache.can_extend(req.request_id, cached, n):
                self.cache.free(req.request_id)
                break
            self.waiting.popleft()
            self.cache.extend(req.request_id, cached, n)
            req.status, req.num_computed, req.num_cached_tokens = Status.RUNNING, cached, cached
            if self.cache.prefix is not None:
                self.cache.prefix.count(req.num_tokens, cached)
            self.running.append(req)
            batch.append((req, n))
            budget -= n
        batch.sort(key=lambda item: item[1] != 1)  # stable: decodes first, in order
        return batch

    def _preempt(self, req: Request) -> None:
        self.running.remove(req)
        self.cache.free(req.request_id)
        req.status, req.num_computed = Status.WAITING, 0
        req.num_preemptions += 1
        self.num_preemptions += 1
        self.waiting.appendleft(req)

    def finish(self, req: Request) -> None:
        """Drop a finished or aborted request wherever it is, and free what it holds."""
        if req in self.running:
            self.running.remove(req)
        elif req in self.waiting:
            self.waiting.remove(req)
        self.cache.free(req.request_id)
        req.status = Status.FINISHED
