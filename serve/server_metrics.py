"""The server's Prometheus metrics (`/metrics`), fed by the engine thread after every step.

Names follow vLLM's where they mean the same thing (prefix `attnlab:`), so dashboards carry over.
Each server owns its registry: several servers in one process (tests) do not collide.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from .engine import LLMEngine
from .request import RequestOutput

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 40, 80, 160)
_TBT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)

CONTENT_TYPE = CONTENT_TYPE_LATEST


class ServerMetrics:
    def __init__(self, model_name: str):
        self.registry = r = CollectorRegistry()
        label = ["model_name"]
        self.running = Gauge("attnlab:num_requests_running", "Requests being computed.", label, registry=r)
        self.waiting = Gauge("attnlab:num_requests_waiting", "Requests queued.", label, registry=r)
        self.cache_used = Gauge(
            "attnlab:cache_blocks_used", "Cache units in use: blocks per group, or state slots.",
            ["model_name", "pool"], registry=r,
        )  # fmt: skip
        self.cache_free = Gauge(
            "attnlab:cache_blocks_free", "Cache units free: blocks per group, or state slots.",
            ["model_name", "pool"], registry=r,
        )  # fmt: skip
        self.preemptions = Counter("attnlab:num_preemptions", "Sequences preempted.", label, registry=r)
        self.prompt_tokens = Counter(
            "attnlab:prompt_tokens", "Prompt tokens of admitted requests.", label, registry=r
        )
        self.generation_tokens = Counter("attnlab:generation_tokens", "Tokens generated.", label, registry=r)
        # vLLM's names: prompt tokens looked up in the prefix cache, and those found there
        self.prefix_queries = Counter(
            "attnlab:prefix_cache_queries", "Prompt tokens looked up in the prefix cache.", label, registry=r
        )
        self.prefix_hits = Counter(
            "attnlab:prefix_cache_hits", "Prompt tokens found in the prefix cache.", label, registry=r
        )
        self.spec_drafts = Counter(
            "attnlab:spec_decode_num_draft_tokens", "Speculative tokens proposed.", label, registry=r
        )
        self.spec_accepted = Counter(
            "attnlab:spec_decode_num_accepted_tokens", "Speculative tokens accepted.", label, registry=r
        )
        self.prefix_held = Gauge(
            "attnlab:prefix_cache_held_bytes", "Cache bytes held by cached prefixes alone (evictable).",
            label, registry=r,
        )  # fmt: skip
        self.weights = Gauge(
            "attnlab:model_weight_bytes", "Bytes of the model's weights as stored (INT4 layers packed).", label,
            registry=r,
        )  # fmt: skip
        self.weights.labels(model_name).set(0)
        self.layered_requests = Gauge(
            "attnlab:layered_prefill_requests", "Requests in layered prefill (schedule layered).", label,
            registry=r,
        )  # fmt: skip
        self.layered_hidden = Gauge(
            "attnlab:layered_prefill_hidden_bytes", "Hidden states held between layer groups (outside the cache).",
            label, registry=r,
        )  # fmt: skip
        self.finished = Counter(
            "attnlab:request_success",
            "Finished requests by reason.",
            ["model_name", "finished_reason"],
            registry=r,
        )
        self.ttft = Histogram(
            "attnlab:time_to_first_token_seconds", "Arrival to first token.", label,
            buckets=_LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.tbt = Histogram(
            "attnlab:time_per_output_token_seconds", "Time between consecutive output tokens.", label,
            buckets=_TBT_BUCKETS, registry=r,
        )  # fmt: skip
        self.e2e = Histogram(
            "attnlab:e2e_request_latency_seconds", "Arrival to last token.", label,
            buckets=_LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.model_name = model_name
        for counter in (
            self.preemptions, self.prompt_tokens, self.generation_tokens, self.prefix_queries, self.prefix_hits,
            self.spec_drafts, self.spec_accepted,
        ):  # fmt: skip
            counter.labels(model_name)  # exported as 0 from the start, not only once it moves
        self._preemptions_seen = 0
        self._prefix_seen = self._spec_seen = (0, 0)
        self._admitted: set[str] = set()

    def observe(self, engine: LLMEngine, outputs: list[RequestOutput]) -> None:
        """Engine thread: refresh gauges, count tokens, record finished requests' latencies."""
        m = self.model_name
        sched = engine.scheduler
        self.running.labels(m).set(len(sched.running))
        self.waiting.labels(m).set(len(sched.waiting))
        for pool, (used, free) in engine.cache.usage().items():
            self.cache_used.labels(m, pool).set(used)
            self.cache_free.labels(m, pool).set(free)
        prefix = engine.cache.prefix
        if prefix is not None:
            queried, hit = prefix.queried_tokens, prefix.hit_tokens
            self.prefix_queries.labels(m).inc(queried - self._prefix_seen[0])
            self.prefix_hits.labels(m).inc(hit - self._prefix_seen[1])
            self._prefix_seen = (queried, hit)
            self.prefix_held.labels(m).set(prefix.held_bytes())
        self.weights.labels(m).set(engine.weight_bytes)
        cohort = sched.cohort
        self.layered_requests.labels(m).set(0 if cohort is None else len(cohort.entries))
        self.layered_hidden.labels(m).set(0 if cohort is None else cohort.hidden_bytes())
        spec = engine.speculation
        if spec is not None:
            self.spec_drafts.labels(m).inc(spec.num_proposed - self._spec_seen[0])
            self.spec_accepted.labels(m).inc(spec.num_accepted - self._spec_seen[1])
            self._spec_seen = (spec.num_proposed, spec.num_accepted)
        if sched.num_preemptions > self._preemptions_seen:
            self.preemptions.labels(m).inc(sched.num_preemptions - self._preemptions_seen)
            self._preemptions_seen = sched.num_preemptions
        for req in sched.running:  # count a prompt once, when it is first scheduled
            if req.request_id not in self._admitted:
                self._admitted.add(req.request_id)
                self.prompt_tokens.labels(m).inc(len(req.prompt_token_ids))
        if outputs:
            self.generation_tokens.labels(m).inc(len(outputs))
        for out in outputs:
            tbt = out.metrics.token_times
            if len(tbt) >= 2:
                self.tbt.labels(m).observe(tbt[-1] - tbt[-2])
            if len(out.token_ids) == 1 and out.metrics.ttft is not None:
                self.ttft.labels(m).observe(out.metrics.ttft)
            if out.finished:
                self._admitted.discard(out.request_id)
                self.finished.labels(m, out.finish_reason).inc()
                if out.metrics.e2e is not None:
                    self.e2e.labels(m).observe(out.metrics.e2e)
        live = {r.request_id for r in sched.running} | {r.request_id for r in sched.waiting}
        self._admitted &= live | {o.request_id for o in outputs if not o.finished}

    def render(self) -> bytes:
        return generate_latest(self.registry)
