"""The model runner: one packed forward per step for every family, then logits for the last
token of each sequence that completes its tokens.

The step's tokens form one row [1, T] with per-token positions; the model's layers get the
engine's states (layer_states.py) in place of the dense ones, so the mixers run unchanged.
"""

from __future__ import annotations

import torch

from ..archs import shared_rope_tables
from .cache_manager import CacheManager
from .layer_states import SlotRecurrent, StepBatch, StepHolder, build_state, flat_states
from .layered_prefill import Cohort
from .request import Request


class ModelRunner:
    def __init__(self, model, cache: CacheManager):
        self.model, self.cache = model, cache
        self.device = cache.device
        self.holder = StepHolder()
        self.states = [
            build_state(s, st, self.holder) for s, st in zip(cache.layer_specs, cache.storage, strict=True)
        ]
        self.recurrent = [s for s in flat_states(self.states) if isinstance(s, SlotRecurrent)]
        self.row_of: dict[str, int] = {}
        if cache.checkpoints is not None:  # prefix caching: where each recurrent layer's bytes go
            layer_of = {id(slots): i for i, slots in enumerate(cache.recurrent_storage())}
            for state in flat_states(self.states):
                if isinstance(state, SlotRecurrent):
                    state.checkpoints, state.checkpoint_layer = cache.checkpoints, layer_of[id(state.slots)]

    def _batch(self, scheduled: list[tuple[Request, int]], captures=()):
        """-> input ids [1, T], positions [1, T], StepBatch. captures: (request, tokens, pages): store
        the request's recurrent state after its first `tokens` tokens into checkpoint pages."""
        bs, dev = self.cache.block_size, self.device
        ids, starts, lens = [], [], []
        for req, n in scheduled:
            start = req.num_computed
            tokens = req.all_token_ids + req.draft_tokens if req.draft_tokens else req.all_token_ids
            ids.extend(tokens[start : start + n])
            starts.append(start)
            lens.append(n)
        q_lens = torch.tensor(lens, dtype=torch.int64)
        starts_t = torch.tensor(starts, dtype=torch.int64)
        if len(ids) == len(lens):  # decodes only: one token per sequence
            seq_of_token, positions = torch.arange(len(lens)), starts_t
        else:
            seq_of_token = torch.repeat_interleave(torch.arange(len(lens)), q_lens)  # [T]
            first_token = torch.cumsum(q_lens, 0) - q_lens
            positions = starts_t[seq_of_token] + torch.arange(len(ids)) - first_token[seq_of_token]
        num_decode = next((i for i, n in enumerate(lens) if n != 1), len(lens))  # leading one-token rows
        tables, write_at = {}, {}
        for group in self.cache.pools:
            rows = [self.cache.holdings[req.request_id].tables[group] for req, _ in scheduled]
            width = max(len(r) for r in rows)
            table = torch.tensor([r + [-1] * (width - len(r)) for r in rows], dtype=torch.int64)
            page = table[seq_of_token, positions // bs].to(dev)  # [T]
            offset = (positions % bs).to(dev)
            write_at[group] = (page, offset)
            tables[group] = table.to(torch.int32).to(dev)
        slot_ids = None
        if self.cache.slot_bytes:
            slots = [self.cache.holdings[req.request_id].slot for req, _ in scheduled]
            slot_ids = torch.tensor(slots, dtype=torch.int64, device=dev)
        cu = torch.zeros(len(lens) - num_decode + 1, dtype=torch.int32)
        cu[1:] = torch.cumsum(q_lens[num_decode:], 0)
        batch = StepBatch(
            num_decode=num_decode,
            seq_lens=(starts_t + q_lens).to(torch.int32).to(dev),
            cu_prefill=cu.to(dev),
            tables=tables,
            write_at=write_at,
            slot_ids=slot_ids,
            num_tokens=len(ids),
            max_prefill_len=max(lens[num_decode:], default=0),
        )
        self.row_of = {}  # request id -> row of its first new token, minus its start position
        at = 0
        for (req, n), start in zip(scheduled, starts, strict=True):
            self.row_of[req.request_id] = at - start  # + a position gives the row of that token
            at += n
        batch.captures = [
            (self.row_of[req.request_id] + tokens - 1, pages) for req, tokens, pages in captures
        ]
        # Speculative verification: keep the state after the last token and each draft but the last.
        batch.keep = [
            self.row_of[req.request_id] + p
            for req, _ in scheduled
            for p in range(req.num_computed, req.num_computed + len(req.draft_tokens))
        ]
        input_ids = torch.tensor(ids, dtype=torch.int64, device=dev)[None]
        ends = torch.cumsum(q_lens, 0)  # logits at each sequence's last row, and at its drafts' rows
        last = [e - 1 - d for (req, _), e in zip(scheduled, ends.tolist(), strict=True)
                for d in range(len(req.draft_tokens), -1, -1)]  # fmt: skip
        return input_ids, positions.to(dev)[None], batch, torch.tensor(last)

    @torch.inference_mode()
    def run(
        self, scheduled: list[tuple[Request, int]], captures=(), cohort: Cohort | None = None, groups: int = 1
    ) -> torch.Tensor:
        """-> fp32 logits [R, V]: at the last new token of each scheduled sequence, and for a
        sequence with drafts (speculative verification) at its last 1 + k tokens. With a layered
        `cohort`, it advances `groups` layer groups too, and adds a row per cohort request if
        that finishes its layers."""
        if cohort is not None:
            return self._run_layered(scheduled, captures, cohort, groups)
        input_ids, positions, batch, last = self._batch(scheduled, captures)
        self.holder.batch = batch
        try:
            hidden, _ = self.model.model(input_ids, cache=self.states, position_ids=positions)
        finally:
            self.holder.batch = None
        return self.model.lm_head(hidden[0, last.to(self.device)]).float()

    def _run_layered(self, scheduled, captures, cohort: Cohort, groups: int) -> torch.Tensor:
        """Scheduled sequences (rows [0, A)) run every layer on a batch of their own; the layers of
        the cohort's next groups run them and the cohort's rows [A, A + P) together."""
        model = self.model.model
        base = self._batch(scheduled, captures) if scheduled else None
        ids, positions, both, last = self._batch(scheduled + cohort.entries, list(captures) + cohort.captures)
        a = 0 if base is None else base[0].shape[1]
        x = model.embed_tokens(ids[:, :a])  # [1, A, D]
        h = model.embed_tokens(ids[:, a:]) if cohort.hidden is None else cohort.hidden  # [1, P, D]
        active = cohort.layers(groups)
        try:
            with shared_rope_tables():
                for i, layer in enumerate(model.layers):
                    if i in active:
                        self.holder.batch = both
                        y, _ = layer(torch.cat([x, h], dim=1), state=self.states[i], positions=positions)
                        x, h = y[:, :a], y[:, a:]
                    elif a:
                        self.holder.batch = base[2]
                        x, _ = layer(x, state=self.states[i], positions=base[1])
        finally:
            self.holder.batch = None
        cohort.next_group = min(cohort.next_group + groups, len(cohort.groups))
        if cohort.done:  # every row has run every layer: logits as in one packed forward
            cohort.hidden = None
            return self.model.lm_head(model.norm(torch.cat([x, h], dim=1))[0, last.to(self.device)]).float()
        cohort.hidden = h
        rows = last[: len(last) - len(cohort.entries)].to(self.device)  # the scheduled sequences' rows
        return self.model.lm_head(model.norm(x)[0, rows]).float()

    def rollback(self, req: Request, position: int) -> None:
        """Speculative rollback of the recurrent layers: the request's slot takes the state it had
        after token `position` of the last step (the verification kept it)."""
        slot, row = self.cache.holdings[req.request_id].slot, self.row_of[req.request_id] + position
        for state in self.recurrent:
            state.restore_kept(slot, row)
