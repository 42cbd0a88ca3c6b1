"""Speculative decoding in the engine, for every family: propose, verify in one forward, roll back.

Each step, every request that is decoding gets up to k drafts from the proposer (proposers.py);
its scheduled chunk becomes its last token plus the drafts, verified in the same packed forward as
everything else (the varlen prefill path; logits at all 1 + k rows). The acceptance rule
(spec_verify.py) keeps a prefix of the drafts plus one token of the target's own. Then the caches
roll back to the accepted tokens:

- **K/V and latent pages:** nothing to undo. The request's progress (`num_computed`) is set back;
  entries written for rejected drafts lie past it and are overwritten by the next tokens; blocks
  join the prefix cache only up to the accepted tokens.
- **Sliding-window pages:** the engine's window layers keep one page slot per position (blocks
  freed only once wholly behind the window of the accepted position), so a rejected draft never
  overwrote an entry another token needs.
- **Lightning states:** the verification asks `lightning_prefill` for the state after every token
  of the chunk (`state_checkpoints`), and the slot takes the state after the last accepted token.
  `intra` layers and hybrids compose these per layer.
- **Checkpoints for prefix caching** planned inside the chunk are attached only where a node of
  accepted tokens exists; the others are freed.

Drafts do not push a request past `max_tokens` or `max_model_len`; they count towards the step's
token budget (a request gets fewer drafts when the budget is short) and never preempt anything (no
free block: no drafts this step).
"""

from __future__ import annotations

import torch

from .proposers import DraftProposer, NgramProposer
from .request import Request
from .spec_verify import accept_greedy, accept_sampled, target_probabilities


class Speculation:
    def __init__(self, engine, proposer, k: int):
        self.engine, self.proposer, self.k = engine, proposer, k
        self.proposal_probs: dict[str, torch.Tensor | None] = {}
        self.num_proposed = self.num_accepted = self.num_verified = 0

    @classmethod
    def build(cls, engine, draft_model=None) -> Speculation:
        config = engine.config
        if config.speculative == "ngram":
            return cls(
                engine, NgramProposer(config.ngram_max, config.ngram_min), config.num_speculative_tokens
            )
        if draft_model is None:
            if config.draft_model is None:
                raise ValueError("speculative = 'draft' needs a draft model: set draft_model (a path)")
            from ..evals import load_model

            draft_model, _, _ = load_model(config.draft_model, str(next(engine.model.parameters()).device))
        if draft_model.config.vocab_size != engine.vocab_size:
            raise ValueError(
                f"draft_model: vocabulary of {draft_model.config.vocab_size} tokens, the target's has "
                f"{engine.vocab_size}; a draft model must share the target's tokenizer"
            )
        proposer = DraftProposer(draft_model, config, engine.max_model_len)
        return cls(engine, proposer, config.num_speculative_tokens)

    # --- before the forward ----------------------------------------------------------------------
    def propose(self, scheduled: list[tuple[Request, int]]) -> list[tuple[Request, int]]:
        """Give decoding requests their drafts and the blocks for them -> the step's new schedule."""
        engine = self.engine
        room = engine.config.max_num_batched_tokens - sum(n for _, n in scheduled)
        decoding, ks = [], []
        for req, n in scheduled:
            if n != 1 or not req.output_token_ids or req.num_computed != req.num_tokens - 1:
                continue
            k = min(
                self.k,
                room,
                req.params.max_tokens - len(req.output_token_ids) - 1,  # the step emits up to k + 1
                engine.max_model_len - req.num_tokens - 1,
            )
            if k > 0:
                decoding.append(req)
                ks.append(k)
                room -= k
        if isinstance(self.proposer, NgramProposer):
            proposals = [
                (self.proposer.propose(r.all_token_ids, k), None) for r, k in zip(decoding, ks, strict=True)
            ]
        else:
            proposals = self.proposer.propose(decoding, ks) if decoding else []
        for req, (drafts, probs) in zip(decoding, proposals, strict=True):
            if not drafts or not engine.cache.can_extend(req.request_id, req.num_computed, 1 + len(drafts)):
                if drafts and isinstance(self.proposer, DraftProposer):
                    self.proposer.commit(req, 0)
                continue
            engine.cache.extend(req.request_id, req.num_computed, 1 + len(drafts))
            req.draft_tokens = list(drafts)
            self.proposal_probs[req.request_id] = probs
        out = [(req, n + len(req.draft_tokens)) for req, n in scheduled]  # a drafted request had n = 1
        out.sort(key=lambda item: item[1] != 1)  # stable: single tokens first, as the runner expects
        return out

    # --- after the forward -----------------------------------------------------------------------
    def verify(self, req: Request, rows: torch.Tensor) -> list[int]:
        """rows: the target's logits [1 + k, V] at the last token and each draft -> tokens to emit;
        progress and caches are rolled back to the accepted tokens."""
        drafts, start = req.draft_tokens, req.num_computed
        probs = self.proposal_probs.pop(req.request_id, None)
        if req.params.greedy:
            tokens = accept_greedy(rows, drafts)
        else:
            tokens = accept_sampled(target_probabilities(rows, req.params), drafts, probs, req.generator)
        accepted = len(tokens) - 1
        req.num_computed = start + 1 + accepted
        if accepted < len(drafts) and self.engine.cache.slot_bytes:
            self.engine.runner.rollback(req, start + accepted)  # the state after the last kept token
        if isinstance(self.proposer, DraftProposer):
            self.proposer.commit(req, accepted)
        req.num_draft_tokens += len(drafts)
        req.num_accepted_tokens += accepted
        self.num_proposed += len(drafts)
        self.num_accepted += accepted
        self.num_verified += 1
        req.draft_tokens = []
        return tokens

    def release(self, request_id: str) -> None:
        """A request left (aborted): drop its proposal and the draft model's cache for it."""
        self.proposal_probs.pop(request_id, None)
        if isinstance(self.proposer, DraftProposer):
            self.proposer.release(request_id)

    def sync(self, live: set[str]) -> None:
        if isinstance(self.proposer, DraftProposer):
            self.proposer.sync(live)

    def stats(self) -> dict:
        return {
            "proposed": self.num_proposed,
            "accepted": self.num_accepted,
            "acceptance_rate": self.num_accepted / self.num_proposed if self.num_proposed else 0.0,
            "verifications": self.num_verified,
        }
