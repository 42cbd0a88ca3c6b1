"""Speculative decoding's proposers: where the k draft tokens come from.

- `NgramProposer` (prompt lookup; no model): find the most recent earlier occurrence of the
  sequence's last n tokens (n from `ngram_max` down to `ngram_min`) and propose the k tokens that
  followed it. Deterministic: its proposal distribution is a point mass.
- `DraftProposer`: a smaller attnlab model with the same vocabulary, run by the engine's own
  machinery (a cache manager and a model runner of its own, any family): it catches up on the
  tokens the target accepted, then decodes k tokens, greedily or by sampling with the request's
  parameters (its distributions are kept for the rejection sampler). After verification it rolls
  back to the accepted tokens: K/V entries past them are simply overwritten later; recurrent slots
  take the state saved after the last accepted token.
"""

from __future__ import annotations

import torch

from .cache_manager import CacheManager
from .config import EngineConfig
from .model_runner import ModelRunner
from .request import Metrics, Request, now
from .sampling import probabilities


class NgramProposer:
    def __init__(self, ngram_max: int = 4, ngram_min: int = 1):
        self.ngram_max, self.ngram_min = ngram_max, ngram_min

    def propose(self, tokens: list[int], k: int) -> list[int]:
        """-> up to k tokens that followed the latest earlier match of the last n tokens."""
        size = len(tokens)
        for n in range(min(self.ngram_max, size - 1), self.ngram_min - 1, -1):
            tail, last = tokens[size - n :], tokens[-1]
            for j in range(size - n - 1, -1, -1):
                if tokens[j + n - 1] == last and tokens[j : j + n] == tail:
                    # copy what followed the match, reading on into the copy itself, so that a
                    # loop shorter than k still gives k tokens
                    seq = list(tokens)
                    for i in range(k):
                        seq.append(seq[j + n + i])
                    return seq[size:]
        return []


class DraftProposer:
    def __init__(self, model, config: EngineConfig, max_model_len: int):
        draft_config = EngineConfig(
            cache_memory=config.cache_memory,
            block_size=config.block_size,
            max_num_seqs=config.max_num_seqs,
            max_num_batched_tokens=config.max_num_batched_tokens,
            max_model_len=max_model_len,
        )
        self.model = model.eval()
        device = next(model.parameters()).device
        specs = [m.cache_spec() for m in model.mixers()]
        self.cache = CacheManager(specs, draft_config, model.dtype, device, max_model_len)
        self.runner = ModelRunner(model, self.cache)
        self.mirrors: dict[str, Request] = {}  # target request id -> the draft's view of it
        self.saved: dict[str, list] = {}  # request id -> slot states after each drafting step
        self.base: dict[str, int] = {}  # request id -> the target's token count this step

    def _mirror(self, req: Request) -> Request | None:
        mirror = self.mirrors.get(req.request_id)
        if mirror is None:
            if not self.cache.has_free_slot():
                return None
            mirror = Request(req.request_id, None, [], req.params, None, Metrics(now()))
            mirror.generator = None if req.params.greedy else torch.Generator().manual_seed(
                (req.params.seed or 0) * 7919 + 17
            )  # fmt: skip
            self.cache.admit(req.request_id)
            self.mirrors[req.request_id] = mirror
        mirror.prompt_token_ids = req.all_token_ids  # the target's tokens so far, then the drafts
        self.base[req.request_id] = len(mirror.prompt_token_ids)
        return mirror

    @torch.inference_mode()
    def propose(self, reqs: list[Request], ks: list[int]) -> list[tuple[list[int], torch.Tensor | None]]:
        """-> per request (up to k drafts, their proposal distributions [n, V] or None if greedy)."""
        mirrors = [self._mirror(r) for r in reqs]
        probs: dict[str, list[torch.Tensor]] = {r.request_id: [] for r in reqs}
        live = [(m, k) for m, k in zip(mirrors, ks, strict=True) if m is not None and k > 0]
        for m, _ in live:
            self.saved[m.request_id] = []
        for step in range(max((k for _, k in live), default=0)):
            scheduled = []
            for m, k in live:
                if step >= k or self._drafted(m) < step:  # done, or stopped for lack of memory
                    continue
                n = len(m.prompt_token_ids) - m.num_computed if step == 0 else 1
                if self.cache.can_extend(m.request_id, m.num_computed, n):
                    self.cache.extend(m.request_id, m.num_computed, n)
                    scheduled.append((m, n))
            if not scheduled:
                break
            scheduled.sort(key=lambda item: item[1] != 1)  # decodes first, as the runner expects
            logits = self.runner.run(scheduled)
            for (m, n), row in zip(scheduled, logits, strict=True):
                m.num_computed += n
                if m.params.greedy:
                    token = int(row.argmax())
                else:
                    q = probabilities(row, m.params)
                    probs[m.request_id].append(q)
                    token = int(torch.multinomial(q, 1, generator=m.generator))
                m.prompt_token_ids.append(token)
                if self.cache.slot_bytes:
                    self.saved[m.request_id].append(self.cache.snapshot(m.request_id))
        out = []
        for r, m in zip(reqs, mirrors, strict=True):
            drafts = [] if m is None else m.prompt_token_ids[self.base[r.request_id] :]
            q = torch.stack(probs[r.request_id]) if probs[r.request_id] else None
            out.append((drafts, q))
        return out

    def commit(self, req: Request, accepted: int) -> None:
        """The target kept `accepted` drafts: the draft keeps the tokens it computed that are still
        valid (the target's tokens before this step, plus the accepted drafts it fed back)."""
        m = self.mirrors.get(req.request_id)
        if m is None:
            return
        steps = self._drafted(m)  # drafting steps run; step j computed up to base + j - 1
        base = self.base[req.request_id]
        if steps:
            keep = min(accepted, steps - 1)  # drafts it fed back as inputs and the target accepted
            m.num_computed = base + keep
            saved = self.saved.get(req.request_id) or []
            if keep < steps - 1 and saved:
                self.cache.restore(req.request_id, saved[keep])
        del m.prompt_token_ids[base:]
        self.saved.pop(req.request_id, None)
        self.cache.trim(req.request_id, m.num_computed)  # only now: a rollback may need older keys

    def _drafted(self, m: Request) -> int:
        return len(m.prompt_token_ids) - self.base[m.request_id]

    def release(self, request_id: str) -> None:
        if self.mirrors.pop(request_id, None) is not None:
            self.cache.free(request_id)
        self.saved.pop(request_id, None)
        self.base.pop(request_id, None)

    def sync(self, live: set[str]) -> None:
        """Free the draft caches of requests that are no longer running (finished, preempted)."""
        for request_id in [r for r in self.mirrors if r not in live]:
            self.release(request_id)
